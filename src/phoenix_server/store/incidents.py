"""Incidents: mapping and queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from phoenix_server.domain.errors import NotFoundError
from phoenix_server.domain.incidents import FailureType, Incident, IncidentSource, IncidentStatus
from phoenix_server.store.lookup import check_lookup_id
from phoenix_server.store.tables import IncidentRow
from phoenix_server.store.upserting import upsert


def _values(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "service": incident.service,
        "failure_type": incident.failure_type.value,
        "status": incident.status.value,
        "source": incident.source.value,
        "summary": incident.summary,
        "evidence": list(incident.evidence),
        "detected_at": incident.detected_at,
        "resolved_at": incident.resolved_at,
        "false_positive": incident.false_positive,
    }


def _from_row(row: IncidentRow) -> Incident:
    return Incident(
        id=row.id,
        service=row.service,
        failure_type=FailureType(row.failure_type),
        status=IncidentStatus(row.status),
        detected_at=row.detected_at,
        source=IncidentSource(row.source),
        summary=row.summary,
        evidence=tuple(row.evidence or ()),
        resolved_at=row.resolved_at,
        false_positive=row.false_positive,
    )


def save_incident(session: Session, incident: Incident, *, epoch: int | None = None) -> None:
    upsert(session, IncidentRow, [{**_values(incident), "epoch": epoch}], ["id"])


def get_incident(session: Session, incident_id: str) -> Incident:
    check_lookup_id("incident", incident_id)
    row = session.get(IncidentRow, incident_id)
    if row is None:
        raise NotFoundError(f"no incident with id '{incident_id}'")
    return _from_row(row)


def list_incidents(
    session: Session,
    *,
    service: str | None,
    status: IncidentStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Incident], int]:
    conditions = []
    if service is not None:
        conditions.append(IncidentRow.service == service)
    if status is not None:
        conditions.append(IncidentRow.status == status.value)
    total = session.scalar(select(func.count()).select_from(IncidentRow).where(*conditions)) or 0
    rows = session.scalars(
        select(IncidentRow)
        .where(*conditions)
        .order_by(IncidentRow.detected_at.desc(), IncidentRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [_from_row(row) for row in rows], total


def false_positive_counts(session: Session, *, service: str | None) -> tuple[int, int]:
    """(incidents Phoenix detected, of which operators marked false positives)."""
    conditions = [IncidentRow.source == IncidentSource.DETECTED.value]
    if service is not None:
        conditions.append(IncidentRow.service == service)
    detected = session.scalar(select(func.count()).select_from(IncidentRow).where(*conditions))
    marked = session.scalar(
        select(func.count())
        .select_from(IncidentRow)
        .where(*conditions, IncidentRow.false_positive.is_(True))
    )
    return detected or 0, marked or 0


def unresolved_incidents(session: Session) -> list[Incident]:
    """The newest open or unresolved incident of each service, oldest first."""
    rows = session.scalars(
        select(IncidentRow)
        .where(IncidentRow.status != IncidentStatus.RESOLVED.value)
        .order_by(IncidentRow.detected_at)
    ).all()
    latest = {row.service: _from_row(row) for row in rows}
    return sorted(latest.values(), key=lambda incident: incident.detected_at)


def mark_false_positive(session: Session, incident_id: str) -> Incident:
    """Record an operator's verdict that this incident was no real failure."""
    check_lookup_id("incident", incident_id)
    row = session.get(IncidentRow, incident_id)
    if row is None:
        raise NotFoundError(f"no incident with id '{incident_id}'")
    row.false_positive = True
    return _from_row(row)


def incident_totals(session: Session) -> list[tuple[str, str, bool, int]]:
    """(service, failure type, marked false positive, count) over every incident."""
    rows = session.execute(
        select(
            IncidentRow.service,
            IncidentRow.failure_type,
            IncidentRow.false_positive,
            func.count(),
        ).group_by(IncidentRow.service, IncidentRow.failure_type, IncidentRow.false_positive)
    ).all()
    return [(s, kind, bool(fp), int(n)) for s, kind, fp, n in rows]
