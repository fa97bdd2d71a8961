"""Each service's uptime baseline: when Phoenix began managing it, and its uptime over that
first day (``GET /api/metrics/summary`` compares today's uptime with it)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from phoenix_server.domain.health import UptimeBaseline
from phoenix_server.store.tables import UptimeBaselineRow
from phoenix_server.store.upserting import upsert


def load_baselines(session: Session) -> dict[str, UptimeBaseline]:
    rows = session.scalars(select(UptimeBaselineRow)).all()
    return {
        row.service: UptimeBaseline(
            service=row.service,
            managed_since=row.managed_since,
            first_day_uptime=row.first_day_uptime,
            complete=row.complete,
        )
        for row in rows
    }


def save_baselines(session: Session, baselines: list[UptimeBaseline]) -> None:
    upsert(
        session,
        UptimeBaselineRow,
        [
            {
                "service": b.service,
                "managed_since": b.managed_since,
                "first_day_uptime": b.first_day_uptime,
                "complete": b.complete,
            }
            for b in baselines
        ],
        keys=["service"],
    )
