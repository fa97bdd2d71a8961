"""Service status changes over time (uptime survives Phoenix restarts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
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


def latest_statuses(
    session: Session, *, services: list[str]
) -> dict[str, tuple[datetime, ServiceStatus, str]]:
    """Each of ``services``' latest recorded status: (since when, status, why). How a
    replica sees the services another replica watches."""
    if not services:
        return {}
    latest = (
        select(func.max(HealthEventRow.id))
        .where(HealthEventRow.service.in_(services))
        .group_by(HealthEventRow.service)
    )
    rows = session.execute(
        select(
            HealthEventRow.service, HealthEventRow.at, HealthEventRow.status, HealthEventRow.reason
        ).where(HealthEventRow.id.in_(latest))
    ).all()
    return {service: (at, ServiceStatus(status), reason) for service, at, status, reason in rows}


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
