"""``GET /api/learning/stats``: what the learned policy believes about each strategy.

One estimate per (service, failure type, strategy) with evidence of its own, and the same
across every service (``byFailureType``, what a new service borrows from). ``successRate``
is the posterior mean (the default table's prior plus the outcomes); ``expectedSeconds`` is
the expected time to recovery decisions compare (a failed attempt costing ``failureCost``
seconds more), and ``score`` the same as decisions score it, without the exploration draw.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from phoenix_server.api.common import RuntimeDep, WireModel
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.recovery import learning

router = APIRouter(prefix="/api/learning", tags=["learning"])


class EstimateOut(WireModel):
    service: str | None
    failure_type: FailureType
    strategy: Strategy
    observations: int
    successes: float
    pooled_observations: int
    success_rate: float
    alpha: float
    beta: float
    score: float
    expected_seconds: float
    time_to_recover: float | None
    """Median seconds of the successful attempts behind it; null before any."""
    downtime: float | None
    requests_lost: float | None


class PolicyOut(WireModel):
    method: str = "thompson_sampling"
    window: int = learning.WINDOW
    pooled_cap: float = learning.POOLED_CAP
    failure_cost: float = learning.FAILURE_COST
    candidates: dict[str, list[Strategy]]
    """Per failure type, the strategies the policy may choose between (table first)."""


class LearningStats(WireModel):
    success: bool = True
    policy: PolicyOut
    estimates: list[EstimateOut]
    by_failure_type: list[EstimateOut]


def _out(estimate: learning.Estimate) -> EstimateOut:
    return EstimateOut(
        service=estimate.service,
        failure_type=estimate.failure_type,
        strategy=estimate.strategy,
        observations=estimate.observations,
        successes=round(estimate.successes, 3),
        pooled_observations=estimate.pooled_observations,
        success_rate=round(estimate.success_rate, 4),
        alpha=round(estimate.alpha, 3),
        beta=round(estimate.beta, 3),
        score=round(learning.score(estimate.success_rate, estimate.expected_time), 4),
        expected_seconds=round(
            learning.expected_seconds(estimate.success_rate, estimate.expected_time), 3
        ),
        time_to_recover=_rounded(estimate.time_to_recover),
        downtime=_rounded(estimate.downtime),
        requests_lost=estimate.requests_lost,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@router.get(
    "/stats",
    response_model=LearningStats,
    response_model_by_alias=True,
    responses={404: {"description": "Unknown service (named in the message)"}},
)
async def learning_stats(
    runtime: RuntimeDep,
    service: Annotated[str | None, Query(max_length=128)] = None,
    failure_type: Annotated[FailureType | None, Query(alias="failureType")] = None,
) -> LearningStats:
    """The learned policy's estimates (``service`` / ``failureType`` narrow them)."""
    if service is not None:
        runtime.catalog.get(service)  # 404 naming an unknown service
    policy = runtime.learned
    wanted = [
        e
        for e in policy.estimates(service)
        if failure_type is None or e.failure_type is failure_type
    ]
    pooled = [e for e in policy.by_failure_type() if failure_type in (None, e.failure_type)]
    return LearningStats(
        policy=PolicyOut(
            candidates={t.value: list(s) for t, s in learning.CANDIDATES.items()},
        ),
        estimates=[_out(e) for e in wanted],
        by_failure_type=[_out(e) for e in pooled],
    )
