"""Report keys: mapping and queries. Kept for a day after a copy last arrived (and while
one holds its incident open), at most a bounded number."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, not_, or_, select
from sqlalchemy.orm import Session

from phoenix_server.domain.reports import SeenReport
from phoenix_server.store.tables import ReportKeyRow
from phoenix_server.store.upserting import upsert


def save_seen(session: Session, seen: SeenReport) -> None:
    upsert(
        session,
        ReportKeyRow,
        [
            {
                "key": seen.key,
                "service": seen.service,
                "incident_id": seen.incident_id,
                "holds_open": seen.holds_open,
                "resolved": seen.resolved,
                "seen_at": seen.seen_at,
            }
        ],
        keys=["key"],
    )


def _kept(since: datetime) -> ColumnElement[bool]:
    """Seen since ``since``, or still holding its incident open."""
    return or_(
        ReportKeyRow.seen_at >= since,
        and_(ReportKeyRow.holds_open, not_(ReportKeyRow.resolved)),
    )


def recent_seen(session: Session, *, since: datetime, limit: int) -> list[SeenReport]:
    """The keys to remember at start, oldest first (at most the ``limit`` newest)."""
    rows = session.scalars(
        select(ReportKeyRow).where(_kept(since)).order_by(ReportKeyRow.seen_at.desc()).limit(limit)
    ).all()
    return [
        SeenReport(
            key=row.key,
            service=row.service,
            incident_id=row.incident_id,
            holds_open=row.holds_open,
            resolved=row.resolved,
            seen_at=row.seen_at,
        )
        for row in reversed(rows)
    ]


def prune_seen(session: Session, *, before: datetime, keep: int) -> None:
    """Forget keys last seen before ``before`` (unless still holding an incident open), and
    all but the ``keep`` newest."""
    session.execute(delete(ReportKeyRow).where(not_(_kept(before))))
    oldest_kept = session.scalar(
        select(ReportKeyRow.seen_at).order_by(ReportKeyRow.seen_at.desc()).offset(keep - 1).limit(1)
    )
    if oldest_kept is not None:
        session.execute(delete(ReportKeyRow).where(ReportKeyRow.seen_at < oldest_kept))
