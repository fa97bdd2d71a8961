"""``POST /api/metrics``: samples of a service's metrics pushed by the service or an agent.

Pushed samples join the service's series like Phoenix's own: they are scored for anomalies,
and the built-in names (``error_rate``, ``latency_p99`` in ms, ``cpu`` in % of a core,
``memory_rss`` in bytes, ``throughput`` in req/s) feed the detection rules — which is how an
external service gets them. Timestamps are optional (default: when received); a sample
older than the signals keep, or from the future, is refused.
"""

from __future__ import annotations

import statistics
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from pydantic import Field

from phoenix_server.api.common import RuntimeDep, StrictInput, UtcTime, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.api.forwarding import to_owner
from phoenix_server.detection.signals import HORIZON, MAX_SERIES
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.domain.recoveries import Outcome, RecoveryStatus
from phoenix_server.store import incidents, recoveries
from phoenix_server.support.timefmt import as_utc, iso_ms

router = APIRouter(prefix="/api/metrics", tags=["metrics"])

MAX_SAMPLES = 10_000
FUTURE_SLACK = timedelta(seconds=5)


class SampleIn(StrictInput):
    metric: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    """Lowercase letters, digits, ``_`` and ``.``; at most 64 characters."""
    value: float = Field(allow_inf_nan=False)
    timestamp: UtcTime | None = None


class MetricsBatch(StrictInput):
    service: str = Field(min_length=1, max_length=128)
    samples: list[SampleIn] = Field(min_length=1, max_length=MAX_SAMPLES)


class MetricsAccepted(WireModel):
    success: bool = True
    accepted: int


@router.post(
    "",
    status_code=202,
    response_model=MetricsAccepted,
    response_model_by_alias=True,
    responses={404: {"description": "Unknown service (named in the message)"}},
)
async def push_metrics(
    batch: MetricsBatch, runtime: RuntimeDep, request: Request
) -> MetricsAccepted | Response:
    """Add samples to a service's series (202: accepted, judged as they come)."""
    runtime.catalog.get(batch.service)  # 404 naming an unknown service
    if (owners := await to_owner(request, runtime, batch.service)) is not None:
        return owners  # its owner holds the series and judges them
    now = runtime.clock.now()
    now_mono = runtime.clock.monotonic()
    problems = []
    timed: list[tuple[float, int, SampleIn]] = []
    for index, sample in enumerate(batch.samples):
        at = now_mono
        if sample.timestamp is not None:
            when = as_utc(sample.timestamp)
            if when > now + FUTURE_SLACK:
                problems.append(Problem(f"samples[{index}].timestamp", "is in the future"))
                continue
            age = (now - when).total_seconds()
            if age > HORIZON:
                problems.append(
                    Problem(
                        f"samples[{index}].timestamp",
                        f"is {age:.0f}s old; Phoenix keeps {HORIZON:g}s of signals",
                    )
                )
                continue
            at = now_mono - max(0.0, age)
        timed.append((at, index, sample))
    if problems:
        raise InvalidRequestError("some samples cannot be accepted", problems)
    known = runtime.signals(batch.service).series
    new = sorted({s.metric for s in batch.samples} - set(known))
    if len(known) + len(new) > MAX_SERIES:
        names = ", ".join(new)
        message = (
            f"service '{batch.service}' would have more than {MAX_SERIES} metric series; "
            f"nothing recorded (new: {names})"
        )
        raise InvalidRequestError(message, [Problem("samples", message)])
    refused: list[str] = []
    for at, _, sample in sorted(timed, key=lambda item: (item[0], item[1])):
        refused += runtime.record_metrics(batch.service, {sample.metric: sample.value}, at=at)
    if refused:
        names = ", ".join(sorted(set(refused)))
        raise InvalidRequestError(
            f"service '{batch.service}' has too many metric series; not kept: {names}",
            [Problem("samples", f"too many series; not kept: {names}")],
        )
    return MetricsAccepted(accepted=len(timed))


class StrategyEffect(WireModel):
    strategy: str
    attempts: int
    successes: int
    success_rate: float | None
    mean_time_to_recover: float | None
    """Seconds, over its latest successful recoveries (up to 1,000 per service)."""


class ServiceUptime(WireModel):
    service: str
    uptime: float | None
    """Percent of the last 24 h (or since monitoring began) the service was serving."""
    managed_since: str | None
    """When Phoenix began managing it."""
    first_day_uptime: float | None
    """Its uptime over Phoenix's first 24 h managing it (so far, until those are over)."""
    uptime_change: float | None
    """``uptime`` minus ``firstDayUptime``, in percentage points; null during the first day."""


class MetricsSummary(WireModel):
    success: bool = True
    recoveries: int
    """Attempts that ended (cancelled ones excluded)."""
    recovery_success_rate: float | None
    mean_time_to_recovery: float | None
    """Seconds, over the latest successful recoveries."""
    false_positive_rate: float | None
    strategies: list[StrategyEffect]
    services: list[ServiceUptime]


def _uptime(runtime: Engine, service: str) -> ServiceUptime:
    uptime = runtime.health(service).uptime
    baseline = runtime.uptime_baseline(service)
    return ServiceUptime(
        service=service,
        uptime=uptime,
        managed_since=iso_ms(baseline.managed_since) if baseline else None,
        first_day_uptime=baseline.first_day_uptime if baseline else None,
        uptime_change=baseline.change(uptime) if baseline else None,
    )


@router.get("/summary", response_model=MetricsSummary, response_model_by_alias=True)
async def summary(runtime: RuntimeDep) -> MetricsSummary:
    """The seed's "metrics to track": success rate, MTTR, false positives, uptime, and how
    well each strategy works."""
    totals = await runtime.store.read(recoveries.recovery_totals)
    durations = await runtime.store.read(recoveries.recent_successful_durations, per_key=1000)
    detected, marked = await runtime.store.read(incidents.false_positive_counts, service=None)
    attempts: dict[str, int] = {}
    successes: dict[str, int] = {}
    for _service, strategy, status, outcome, count in totals:
        if status in (RecoveryStatus.CANCELLED.value, RecoveryStatus.PENDING.value) or (
            status == RecoveryStatus.IN_PROGRESS.value
        ):
            continue
        attempts[strategy] = attempts.get(strategy, 0) + count
        if outcome == Outcome.SUCCESS.value:
            successes[strategy] = successes.get(strategy, 0) + count
    took: dict[str, list[float]] = {}
    for (_service, strategy), values in durations.items():
        took.setdefault(strategy.value, []).extend(values)
    everything = [v for values in took.values() for v in values]
    ended, won = sum(attempts.values()), sum(successes.values())
    return MetricsSummary(
        recoveries=ended,
        recovery_success_rate=round(won / ended, 4) if ended else None,
        mean_time_to_recovery=round(statistics.fmean(everything), 3) if everything else None,
        false_positive_rate=round(marked / detected, 4) if detected else None,
        strategies=[
            StrategyEffect(
                strategy=strategy,
                attempts=attempts[strategy],
                successes=successes.get(strategy, 0),
                success_rate=round(successes.get(strategy, 0) / attempts[strategy], 4),
                mean_time_to_recover=round(statistics.fmean(took[strategy]), 3)
                if took.get(strategy)
                else None,
            )
            for strategy in sorted(attempts)
        ],
        services=[_uptime(runtime, spec.name) for spec in runtime.catalog],
    )
