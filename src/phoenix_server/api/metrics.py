"""``POST /api/metrics``: samples of a service's metrics pushed by the service or an agent.

Pushed samples join the service's series like Phoenix's own: they are scored for anomalies,
and the built-in names (``error_rate``, ``latency_p99`` in ms, ``cpu`` in % of a core,
``memory_rss`` in bytes, ``throughput`` in req/s) feed the detection rules — which is how an
external service gets them. Timestamps are optional (default: when received); a sample
older than the signals keep, or from the future, is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import Field

from phoenix_server.api.common import RuntimeDep, StrictInput, WireModel
from phoenix_server.detection.signals import HORIZON
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.support.timefmt import as_utc

router = APIRouter(prefix="/api/metrics", tags=["metrics"])

MAX_SAMPLES = 10_000
FUTURE_SLACK = timedelta(seconds=5)


class SampleIn(StrictInput):
    metric: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    """Lowercase letters, digits, ``_`` and ``.``; at most 64 characters."""
    value: float = Field(allow_inf_nan=False)
    timestamp: datetime | None = None


class MetricsBatch(StrictInput):
    service: str = Field(min_length=1, max_length=128)
    samples: list[SampleIn] = Field(min_length=1, max_length=MAX_SAMPLES)


class MetricsAccepted(WireModel):
    success: bool = True
    accepted: int


@router.post("", status_code=202, response_model=MetricsAccepted, response_model_by_alias=True)
async def push_metrics(batch: MetricsBatch, runtime: RuntimeDep) -> MetricsAccepted:
    """Add samples to a service's series (202: accepted, judged as they come)."""
    runtime.catalog.get(batch.service)  # 404 naming an unknown service
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
    refused: list[str] = []
    for at, _, sample in sorted(timed, key=lambda item: (item[0], item[1])):
        refused += runtime.tracker.record_metrics(
            batch.service, {sample.metric: sample.value}, at=at
        )
    if refused:
        names = ", ".join(sorted(set(refused)))
        raise InvalidRequestError(
            f"service '{batch.service}' has too many metric series; not kept: {names}",
            [Problem("samples", f"too many series; not kept: {names}")],
        )
    return MetricsAccepted(accepted=len(timed))
