"""Incidents: what failed, its classified type and evidence, and the recoveries it caused."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from phoenix_server.api.common import Limit, Offset, RuntimeDep, WireModel
from phoenix_server.domain.incidents import FailureType, Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.recoveries import Outcome, Recovery, RecoveryStatus, Strategy
from phoenix_server.store import incidents, recoveries
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/incidents", tags=["incidents"])


class IncidentOut(WireModel):
    id: str
    service: str
    failure_type: FailureType
    status: IncidentStatus
    source: IncidentSource
    summary: str
    evidence: list[str]
    detected_at: str
    resolved_at: str | None
    false_positive: bool


class AttemptOut(WireModel):
    id: str
    strategy: Strategy
    status: RecoveryStatus
    outcome: Outcome | None
    attempt: int
    timestamp: str


class IncidentDetailOut(IncidentOut):
    recoveries: list[AttemptOut]


class IncidentsResponse(WireModel):
    success: bool = True
    incidents: list[IncidentOut]
    total: int
    limit: int
    offset: int
    false_positives: int
    """Incidents Phoenix detected (for ``service``, if given) that operators marked false."""
    false_positive_rate: float | None
    """That share of the incidents Phoenix detected; null before any."""


class IncidentResponse(WireModel):
    success: bool = True
    incident: IncidentDetailOut


class MarkedResponse(WireModel):
    success: bool = True
    incident: IncidentOut


def incident_fields(incident: Incident) -> dict[str, object]:
    return {
        "id": incident.id,
        "service": incident.service,
        "failure_type": incident.failure_type,
        "status": incident.status,
        "source": incident.source,
        "summary": incident.summary,
        "evidence": list(incident.evidence),
        "detected_at": iso_ms(incident.detected_at) or "",
        "resolved_at": iso_ms(incident.resolved_at),
        "false_positive": incident.false_positive,
    }


def attempt_out(recovery: Recovery) -> AttemptOut:
    return AttemptOut(
        id=recovery.id,
        strategy=recovery.strategy,
        status=recovery.status,
        outcome=recovery.outcome,
        attempt=recovery.attempt,
        timestamp=iso_ms(recovery.start_time) or "",
    )


@router.get("", response_model=IncidentsResponse, response_model_by_alias=True)
async def list_incidents(
    runtime: RuntimeDep,
    service: Annotated[str | None, Query(max_length=128)] = None,
    status: IncidentStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> IncidentsResponse:
    """Incidents, newest first."""
    items, total = await runtime.store.read(
        incidents.list_incidents, service=service, status=status, limit=limit, offset=offset
    )
    detected, marked = await runtime.store.read(incidents.false_positive_counts, service=service)
    return IncidentsResponse(
        incidents=[IncidentOut.model_validate(incident_fields(i)) for i in items],
        total=total,
        limit=limit,
        offset=offset,
        false_positives=marked,
        false_positive_rate=round(marked / detected, 4) if detected else None,
    )


@router.get("/{incident_id}", response_model=IncidentResponse, response_model_by_alias=True)
async def get_incident(incident_id: str, runtime: RuntimeDep) -> IncidentResponse:
    """One incident with the recoveries (attempts) it caused, newest first."""
    incident = await runtime.store.read(incidents.get_incident, incident_id)
    attempts, _ = await runtime.store.read(
        recoveries.list_recoveries,
        where=recoveries.RecoveryFilter(incident_id=incident_id),
        limit=1000,
        offset=0,
    )
    detail = IncidentDetailOut.model_validate(
        {**incident_fields(incident), "recoveries": [attempt_out(r) for r in attempts]}
    )
    return IncidentResponse(incident=detail)


@router.post(
    "/{incident_id}/false-positive", response_model=MarkedResponse, response_model_by_alias=True
)
async def mark_false_positive(incident_id: str, runtime: RuntimeDep) -> MarkedResponse:
    """An operator says this was no real failure: it counts in the false-positive rate, and
    its recoveries stop counting as evidence for the learned policy."""
    incident = await runtime.mark_false_positive(incident_id)
    return MarkedResponse(incident=IncidentOut.model_validate(incident_fields(incident)))
