"""``GET /health`` (Phoenix itself) and ``GET /api/health/services`` (what it watches)."""

from __future__ import annotations

import json
import time
from typing import Literal
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Response

from phoenix_server import __version__
from phoenix_server.api.cluster import ClusterHealth, cluster_health
from phoenix_server.api.common import RuntimeDep, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.detection.health_tracking import ServiceHealthView
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(tags=["health"])

LISTING_MAX_AGE = 0.1
"""Seconds a rendered service listing is served again: a burst of pollers (dashboards,
CLIs, scripts) is answered by one rendering."""
_LISTINGS: WeakKeyDictionary[Engine, tuple[float, bytes]] = WeakKeyDictionary()


class PhoenixHealth(WireModel):
    success: bool = True
    status: Literal["healthy", "degraded"]
    service: str = "phoenix-server"
    version: str
    active_recoveries: int
    monitored_services: int
    playbooks_active: int | None
    timestamp: str
    warnings: list[str]
    cluster: ClusterHealth | None = None
    """This replica's membership when several share the database (absent otherwise)."""


@router.get("/health", response_model=PhoenixHealth, response_model_by_alias=True)
async def phoenix_health(runtime: RuntimeDep) -> Response:
    """Liveness of Phoenix itself; answers without a token, and says what limits it. (The
    server answers it before the app, see ``api.front_door``: this route documents it and
    serves it where the front door is not in use, e.g. under a test client.)"""
    return Response(health_json(runtime), media_type="application/json")


def health_json(runtime: Engine) -> bytes:
    """``GET /health``'s body, for the front door's fast path."""
    report = health_report(runtime)
    # One Phoenix's /health stays as it always was: no cluster section at all.
    hidden = {"cluster"} if report.cluster is None else None
    return report.model_dump_json(by_alias=True, exclude=hidden).encode()


def health_report(runtime: Engine) -> PhoenixHealth:
    """Phoenix's own health from memory only: no database, no await, so that it answers
    at once whatever else is going on."""
    warnings = runtime.problems()
    cluster = runtime.cluster.state() if runtime.cluster is not None else None
    # A replica that cannot renew its leases watches nothing: not healthy, whatever else.
    adrift = cluster is not None and (cluster.problem is not None or cluster.acting_for <= 0)
    troubled = runtime.database_problem or runtime.store.write_problem or adrift
    return PhoenixHealth(
        status="degraded" if troubled else "healthy",
        version=__version__,
        active_recoveries=runtime.active_recoveries(),
        monitored_services=len(runtime.catalog),
        playbooks_active=runtime.playbooks_active,
        timestamp=iso_ms(runtime.clock.now()) or "",
        warnings=warnings,
        cluster=cluster_health(cluster) if cluster is not None else None,
    )


class ServiceMetrics(WireModel):
    error_rate: float | None
    """Fraction of requests not really answered (0-1) over the last minute, from the router;
    null for a service Phoenix does not route."""
    latency: float | None
    """Milliseconds, p50: of requests through the router, else of recent health probes."""
    latency_p99: float | None
    """Milliseconds, p99 of requests through the router."""
    throughput: float | None
    """Requests per second over the last 10 s, from the router."""


class MetricSurprise(WireModel):
    at: str
    value: float
    score: float
    usual: tuple[float, float] | None
    """The middle 98 % of the metric's last 2,048 values (null: too few yet)."""


class ServiceHealth(WireModel):
    name: str
    status: ServiceStatus
    uptime: float | None
    last_check: str | None
    metrics: ServiceMetrics
    platform: str
    status_since: str | None
    reason: str
    circuit: str | None
    """``closed``, ``open`` or ``half_open`` for a service behind Phoenix's router."""
    waiting_on: str | None
    """A failing dependency that explains this service's failure: it is shown degraded and
    left alone (not restarted) until the dependency is back."""
    fallback: bool
    """Clients are answered by the service's declared fallback (nothing of its own serves)."""
    anomaly_scores: dict[str, float]
    """Each metric's latest anomaly score, 0-1 (0.5: a one-in-a-thousand sample)."""
    anomaly_history: dict[str, list[float]]
    """Each metric's peak anomaly score per 30 s over the last 15 minutes, oldest first, for
    metrics with news in them (a score above 0); the others scored 0 throughout."""
    surprises: dict[str, MetricSurprise]
    """Each metric's latest sample that scored above 0: why its score rose."""
    samples_dropped: dict[str, dict[str, int]]
    """Samples refused per metric and reason (``not_finite``, ``late``, ``repeated``),
    only for metrics that refused some."""
    symptoms: list[str]
    """What its health checks do not show: error rate, load, latency, a leak."""
    active_recovery_id: str | None


class ServicesHealth(WireModel):
    success: bool = True
    services: list[ServiceHealth]
    total: int


def service_health(
    spec: ServiceSpec, view: ServiceHealthView, recovery_id: str | None, waiting_on: str | None
) -> ServiceHealth:
    """The service's health as a model (for callers that want its fields)."""
    return ServiceHealth.model_validate(service_health_wire(spec, view, recovery_id, waiting_on))


def service_health_wire(
    spec: ServiceSpec, view: ServiceHealthView, recovery_id: str | None, waiting_on: str | None
) -> dict[str, object]:
    """The service's health as its JSON object (camelCase keys, :class:`ServiceHealth`'s
    shape). Built as plain data, without pydantic: the listing of every service is the
    dashboard's and the CLI's poll, and validating models cost more than the rest of it."""
    status, reason = view.status, view.reason
    if view.traffic.circuit not in (None, "closed") and status is ServiceStatus.HEALTHY:
        status = ServiceStatus.DEGRADED  # isolated by its circuit: clients get the fallback
    on_fallback = (
        spec.fallback is not None
        and spec.routed
        and (view.traffic.circuit == "open" or status is ServiceStatus.UNHEALTHY)
    )
    if status is ServiceStatus.UNHEALTHY and waiting_on is not None:
        status = ServiceStatus.DEGRADED
        reason = f"its dependency {waiting_on} is failing ({reason})"
    elif status is ServiceStatus.UNHEALTHY and on_fallback:
        status = ServiceStatus.DEGRADED  # clients get the declared fallback, not an error
        reason = f"answered by its fallback: {reason}"
    traffic = view.traffic
    latency = traffic.latency_p50_ms
    if latency is None and view.latency_p50 is not None:
        latency = round(view.latency_p50 * 1000, 3)
    return {
        "name": spec.name,
        "status": status.value,
        "uptime": view.uptime,
        "lastCheck": iso_ms(view.last_check),
        "metrics": {
            "errorRate": traffic.error_rate,
            "latency": latency,
            "latencyP99": traffic.latency_p99_ms,
            "throughput": traffic.throughput,
        },
        "platform": spec.platform.value,
        "statusSince": iso_ms(view.status_since),
        "reason": reason,
        "circuit": traffic.circuit,
        "waitingOn": waiting_on,
        "fallback": on_fallback,
        "anomalyScores": dict(view.anomaly),
        "anomalyHistory": view.anomaly_history,
        "surprises": {
            name: {
                "at": iso_ms(shown.at),
                "value": shown.sample.value,
                "score": round(shown.sample.score, 4),
                "usual": list(shown.sample.usual) if shown.sample.usual is not None else None,
            }
            for name, shown in view.surprises.items()
        },
        "samplesDropped": view.samples_dropped,
        "symptoms": [symptom.summary for symptom in view.symptoms],
        "activeRecoveryId": recovery_id,
    }


@router.get("/api/health/services", response_model=ServicesHealth, response_model_by_alias=True)
async def services_health(runtime: RuntimeDep) -> Response:
    """Every monitored service's status, uptime over 24 h, last check and key metrics (a
    snapshot at most 100 ms old: many pollers at once share one rendering)."""
    now = time.monotonic()
    cached = _LISTINGS.get(runtime)
    if cached is not None and now - cached[0] < LISTING_MAX_AGE:
        return Response(cached[1], media_type="application/json")
    items = services_listing(runtime)
    body = {"success": True, "services": items, "total": len(items)}
    # Serialized here, once: FastAPI would validate the model and serialize it again.
    rendered = json.dumps(body, separators=(",", ":")).encode()
    _LISTINGS[runtime] = (now, rendered)
    return Response(rendered, media_type="application/json")


def services_listing(runtime: Engine) -> list[dict[str, object]]:
    """Every service's health as JSON objects, in catalog order."""
    items = []
    for spec in runtime.catalog:
        active = runtime.active_recovery(spec.name)
        view = runtime.health(spec.name)
        waiting_on = runtime.waiting_on(spec.name)
        items.append(service_health_wire(spec, view, active.id if active else None, waiting_on))
    return items
