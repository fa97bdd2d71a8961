"""Incidents: what failed, its classified type and evidence, and the recoveries it caused."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from phoenix_server.api.common import Limit, Offset, RuntimeDep
from phoenix_server.domain.incidents import Incident, IncidentStatus
from phoenix_server.store import incidents, recoveries
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/incidents", tags=["incidents"])

IncidentId = str


def incident_wire(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "service": incident.service,
        "failureType": incident.failure_type.value,
        "status": incident.status.value,
        "source": incident.source.value,
        "summary": incident.summary,
        "evidence": list(incident.evidence),
        "detectedAt": iso_ms(incident.detected_at),
        "resolvedAt": iso_ms(incident.resolved_at),
        "falsePositive": incident.false_positive,
    }


@router.get("")
async def list_incidents(
    runtime: RuntimeDep,
    service: Annotated[str | None, Query(max_length=128)] = None,
    status: IncidentStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Incidents, newest first."""
    items, total = await runtime.store.read(
        incidents.list_incidents, service=service, status=status, limit=limit, offset=offset
    )
    return {
        "success": True,
        "incidents": [incident_wire(i) for i in items],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{incident_id}")
async def get_incident(incident_id: IncidentId, runtime: RuntimeDep) -> dict[str, Any]:
    """One incident with the recoveries (attempts) it caused, newest first."""
    incident = await runtime.store.read(incidents.get_incident, incident_id)
    attempts, _ = await runtime.store.read(
        recoveries.list_recoveries,
        where=recoveries.RecoveryFilter(incident_id=incident_id),
        limit=1000,
        offset=0,
    )
    return {
        "success": True,
        "incident": {
            **incident_wire(incident),
            "recoveries": [
                {
                    "id": r.id,
                    "strategy": r.strategy.value,
                    "status": r.status.value,
                    "outcome": r.outcome.value if r.outcome else None,
                    "attempt": r.attempt,
                    "timestamp": iso_ms(r.start_time),
                }
                for r in attempts
            ],
        },
    }


@router.post("/{incident_id}/false-positive")
async def mark_false_positive(incident_id: IncidentId, runtime: RuntimeDep) -> dict[str, Any]:
    """An operator says this was no real failure (it counts in the false-positive rate)."""

    incident = await runtime.store.write(incidents.mark_false_positive, incident_id)
    return {"success": True, "incident": incident_wire(incident)}
