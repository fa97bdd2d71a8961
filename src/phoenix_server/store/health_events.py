"""Service status changes over time (uptime survives Phoenix restarts)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.store.tables import HealthEventRow


def record_statuses(
    session: Session, changes: list[tuple[str, datetime, ServiceStatus, str]]
) -> None:
    """Append status changes: (service, at, status, reason) each."""
    session.add_all(
        HealthEventRow(service=service, at=at, status=status.value, reason=reason[:2000])
        for service, at, status, reason in changes
    )


StatusChange = tuple[int, str, datetime, ServiceStatus, str]
"""A recorded status change: (id, service, since when, status, why)."""


def status_changes(
    session: Session, *, after: int | None, missing: Collection[int] = ()
) -> list[StatusChange]:
    """The status changes recorded after the one numbered ``after`` and those numbered in
    ``missing`` (ids handed out, not yet committed when last read), in order; with ``after``
    None, each service's latest. How a replica follows the services others watch without
    reading them all again."""
    columns = (
        HealthEventRow.id,
        HealthEventRow.service,
        HealthEventRow.at,
        HealthEventRow.status,
        HealthEventRow.reason,
    )
    if after is None:
        latest = select(func.max(HealthEventRow.id)).group_by(HealthEventRow.service)
        query = select(*columns).where(HealthEventRow.id.in_(latest))
    else:
        newer = HealthEventRow.id > after
        if missing:
            newer = or_(newer, HealthEventRow.id.in_(list(missing)))
        query = select(*columns).where(newer)
    rows = session.execute(query.order_by(HealthEventRow.id)).all()
    return [
        (id_, service, at, ServiceStatus(status), reason)
        for id_, service, at, status, reason in rows
    ]


def status_history(
    session: Session, *, since: datetime
) -> dict[str, list[tuple[datetime, ServiceStatus]]]:
    """Per service, its changes since ``since`` preceded by the last change before it."""
    history: dict[str, list[tuple[datetime, ServiceStatus]]] = {}
    earlier = session.execute(
        select(HealthEventRow.service, HealthEventRow.at, HealthEventRow.status)
        .where(HealthEventRow.at < since)
        .order_by(HealthEventRow.at, HealthEventRow.id)
    ).all()
    for service, at, status in earlier:
        history[service] = [(at, ServiceStatus(status))]
    recent = session.execute(
        select(HealthEventRow.service, HealthEventRow.at, HealthEventRow.status)
        .where(HealthEventRow.at >= since)
        .order_by(HealthEventRow.at, HealthEventRow.id)
    ).all()
    for service, at, status in recent:
        history.setdefault(service, []).append((at, ServiceStatus(status)))
    return history


def prune(session: Session, *, before: datetime) -> None:
    """Forget changes older than the uptime horizon, keeping each service's last one."""
    newest_old = (
        select(HealthEventRow.service, HealthEventRow.id)
        .where(HealthEventRow.at < before)
        .order_by(HealthEventRow.service, HealthEventRow.at.desc(), HealthEventRow.id.desc())
    )
    keep: dict[str, int] = {}
    for service, row_id in session.execute(newest_old):
        keep.setdefault(service, row_id)
    session.execute(
        delete(HealthEventRow).where(
            HealthEventRow.at < before, HealthEventRow.id.not_in(list(keep.values()) or [-1])
        )
    )
