"""Recovery management: trigger (202), status of one, history (newest first)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, StrictBool

from phoenix_server.api.common import Limit, Offset, RuntimeDep, StrictInput, WireModel
from phoenix_server.api.forwarding import to_owner
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.domain.recoveries import (
    Decision,
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Step,
    StepCondition,
    StepStatus,
    Strategy,
)
from phoenix_server.store import recoveries
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/recovery", tags=["recoveries"])


class TriggerRequest(StrictInput):
    service: str = Field(min_length=1, max_length=128)
    strategy: Strategy | None = None
    """Omit to let Phoenix decide (playbook > learned > default); the response says which."""
    reason: str = Field("", max_length=2000)
    force: StrictBool = False
    """Cancel a running recovery of the service (at its next safe point) and start this one."""


class CandidateOut(WireModel):
    strategy: Strategy
    score: float
    estimate: float | None = None
    """Learned decisions: the posterior mean success rate behind ``score``."""
    observations: int | None = None
    """Learned decisions: the outcomes behind ``estimate``."""


class DecisionOut(WireModel):
    strategy: Strategy
    source: str
    reason: str
    candidates: list[CandidateOut]


def decision_out(decision: Decision) -> DecisionOut:
    return DecisionOut(
        strategy=decision.strategy,
        source=decision.source.value,
        reason=decision.reason,
        candidates=[
            CandidateOut(
                strategy=c.strategy,
                score=c.score,
                estimate=c.estimate,
                observations=c.observations,
            )
            for c in decision.candidates
        ],
    )


class TriggerResponse(WireModel):
    success: bool = True
    recovery_id: str
    status: RecoveryStatus
    strategy: Strategy
    estimated_duration: float | None
    start_time: str
    incident_id: str | None
    decision: DecisionOut


@router.post(
    "/trigger",
    status_code=202,
    response_model=TriggerResponse,
    response_model_by_alias=True,
    responses={
        404: {"description": "Unknown service (named in the message)"},
        409: {
            "description": "A recovery of the service is running (its recoveryId is given), "
            "or its recovery budget is spent; force: true overrides either"
        },
    },
)
async def trigger_recovery(
    body: TriggerRequest, runtime: RuntimeDep, request: Request
) -> TriggerResponse | Response:
    """Start a recovery now. 409 with the running ``recoveryId`` unless ``force``."""
    if (owners := await to_owner(request, runtime, body.service)) is not None:
        return owners
    try:
        recovery = await runtime.trigger(
            service=body.service, strategy=body.strategy, reason=body.reason, force=body.force
        )
    except InvalidRequestError as exc:
        if not exc.problems:  # e.g. a service whose platform has no strategy at all
            exc.problems = [Problem("strategy" if body.strategy else "service", exc.message)]
        raise
    return TriggerResponse(**started_fields(recovery))


def started_fields(recovery: Recovery) -> dict[str, object]:
    """What a 202 for a recovery just started says (trigger, playbook execute)."""
    return {
        "recovery_id": recovery.id,
        "status": recovery.status,
        "strategy": recovery.strategy,
        "estimated_duration": recovery.estimated_duration,
        "start_time": iso_ms(recovery.start_time) or "",
        "incident_id": recovery.incident_id,
        "decision": decision_out(recovery.decision),
    }


class StepOut(WireModel):
    name: str
    status: StepStatus
    duration: float | None
    action: str
    condition: StepCondition
    timeout: float
    start_time: str | None
    end_time: str | None
    detail: str | None


class MetricsOut(WireModel):
    downtime: float | None
    requests_lost: int | None
    data_integrity: str


class RecoveryOut(WireModel):
    id: str
    service: str
    strategy: Strategy
    status: RecoveryStatus
    start_time: str
    end_time: str | None
    duration: float | None
    steps: list[StepOut]
    outcome: Outcome | None
    metrics: MetricsOut
    incident_id: str | None
    attempt: int
    decision: DecisionOut
    trigger: RecoveryTrigger
    reason: str
    estimated_duration: float | None
    force: bool
    playbook_id: str | None
    playbook_version: int | None
    """The playbook (and its version) this attempt ran, if one decided it."""


def _seconds(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def step_out(step: Step) -> StepOut:
    return StepOut(
        name=step.name,
        status=step.status,
        duration=_seconds(step.duration),
        action=step.action,
        condition=step.condition,
        timeout=step.timeout,
        start_time=iso_ms(step.started_at),
        end_time=iso_ms(step.ended_at),
        detail=step.detail,
    )


def recovery_out(recovery: Recovery) -> RecoveryOut:
    return RecoveryOut(
        id=recovery.id,
        service=recovery.service,
        strategy=recovery.strategy,
        status=recovery.status,
        start_time=iso_ms(recovery.start_time) or "",
        end_time=iso_ms(recovery.ended_at),
        duration=_seconds(recovery.duration),
        steps=[step_out(s) for s in recovery.steps],
        outcome=recovery.outcome,
        metrics=MetricsOut(
            downtime=recovery.metrics.downtime,
            requests_lost=recovery.metrics.requests_lost,
            data_integrity=recovery.metrics.data_integrity.value,
        ),
        incident_id=recovery.incident_id,
        attempt=recovery.attempt,
        decision=decision_out(recovery.decision),
        trigger=recovery.trigger,
        reason=recovery.reason,
        estimated_duration=recovery.estimated_duration,
        force=recovery.force,
        playbook_id=recovery.playbook_id,
        playbook_version=recovery.playbook_version,
    )


class RecoveryStatusResponse(WireModel):
    success: bool = True
    recovery: RecoveryOut


@router.get(
    "/status/{recovery_id}", response_model=RecoveryStatusResponse, response_model_by_alias=True
)
async def recovery_status(recovery_id: str, runtime: RuntimeDep) -> RecoveryStatusResponse:
    """One recovery with its steps, decision and measured metrics (404 if unknown)."""
    recovery = await runtime.store.read(recoveries.get_recovery, recovery_id)
    return RecoveryStatusResponse(recovery=recovery_out(recovery))


class HistoryItem(WireModel):
    id: str
    service: str
    strategy: Strategy
    status: RecoveryStatus
    duration: float | None
    outcome: Outcome | None
    timestamp: str
    attempt: int
    trigger: RecoveryTrigger
    incident_id: str | None


class HistoryResponse(WireModel):
    success: bool = True
    recoveries: list[HistoryItem]
    total: int
    limit: int
    offset: int


@router.get("/history", response_model=HistoryResponse, response_model_by_alias=True)
async def recovery_history(
    runtime: RuntimeDep,
    service: Annotated[str | None, Query(max_length=128)] = None,
    status: RecoveryStatus | None = None,
    strategy: Strategy | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> HistoryResponse:
    """Recoveries, newest first, filtered by service, status and strategy."""
    items, total = await runtime.store.read(
        recoveries.list_recoveries,
        where=recoveries.RecoveryFilter(service=service, status=status, strategy=strategy),
        limit=limit,
        offset=offset,
    )
    return HistoryResponse(
        recoveries=[
            HistoryItem(
                id=r.id,
                service=r.service,
                strategy=r.strategy,
                status=r.status,
                duration=_seconds(r.duration),
                outcome=r.outcome,
                timestamp=iso_ms(r.start_time) or "",
                attempt=r.attempt,
                trigger=r.trigger,
                incident_id=r.incident_id,
            )
            for r in items
        ],
        total=total,
        limit=limit,
        offset=offset,
    )
