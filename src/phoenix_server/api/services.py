"""``GET /api/services``: each service's configuration summary, status and instances."""

from __future__ import annotations

from fastapi import APIRouter

from phoenix_server.api.common import RuntimeDep, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.api.health import service_health
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import (
    CommandCheck,
    ContainerRun,
    HttpCheck,
    Instance,
    ProcessCheck,
    ProcessRun,
    ServiceSpec,
    TcpCheck,
)
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/services", tags=["services"])


class HealthCheckOut(WireModel):
    type: str
    target: str | None
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    startup_timeout: float


class InstanceOut(WireModel):
    id: str
    pid: int | None
    port: int | None
    version: str | None
    state: str
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    log_path: str | None


class ReplicasOut(WireModel):
    min: int
    max: int


class ServiceOut(WireModel):
    name: str
    platform: str
    source: str
    """``file`` (the service file) or ``registry`` (the service registry sync)."""
    status: ServiceStatus
    port: int | None
    routed: bool
    """Phoenix's router holds ``port``; instances listen on ports of their own."""
    command: list[str]
    cwd: str | None
    image: str | None = None
    """The image of a docker service's containers."""
    health: HealthCheckOut
    depends_on: list[str]
    replicas: ReplicasOut
    versions: list[str]
    current_version: str | None
    known_good_versions: list[str]
    """Declared known good, or proven by running healthy for ``known_good_after``."""
    actions: list[str]
    strategies: list[str]
    """Recovery strategies Phoenix can carry out for this service as declared."""
    instances: list[InstanceOut]
    standby: InstanceOut | None
    """The hot backup, running out of rotation until a failover promotes it."""
    signals: dict[str, float]
    """The latest value of each of its metric series (router, processes, pushed, scraped)."""


class ServicesResponse(WireModel):
    success: bool = True
    services: list[ServiceOut]
    total: int


class ServiceResponse(WireModel):
    success: bool = True
    service: ServiceOut


def _check(spec: ServiceSpec) -> HealthCheckOut:
    check = spec.health.check
    kind, target = "process", None
    if isinstance(check, HttpCheck):
        kind, target = "http", check.url
    elif isinstance(check, TcpCheck):
        kind, target = "tcp", check.address
    elif isinstance(check, CommandCheck):
        kind, target = "command", " ".join(check.argv)
    elif isinstance(check, ProcessCheck):
        kind = "process"
    return HealthCheckOut(
        type=kind,
        target=target,
        interval=spec.health.interval,
        timeout=spec.health.timeout,
        failure_threshold=spec.health.failure_threshold,
        success_threshold=spec.health.success_threshold,
        startup_timeout=spec.health.startup_timeout,
    )


def _instance(instance: Instance) -> InstanceOut:
    return InstanceOut(
        id=instance.id,
        pid=instance.pid,
        port=instance.port,
        version=instance.version,
        state=instance.state.value,
        started_at=iso_ms(instance.started_at),
        ended_at=iso_ms(instance.ended_at),
        exit_code=instance.exit_code,
        log_path=instance.log_path,
    )


def displayed_status(runtime: Engine, spec: ServiceSpec) -> ServiceStatus:
    """The status /api/health/services shows (degraded while a fallback or a failing
    dependency explains the failure)."""
    view = runtime.health(spec.name)
    return service_health(spec, view, None, runtime.waiting_on(spec.name)).status


def service_out(runtime: Engine, spec: ServiceSpec) -> ServiceOut:
    return ServiceOut(
        name=spec.name,
        platform=spec.platform.value,
        source=spec.origin.value,
        status=displayed_status(runtime, spec),
        port=spec.port,
        routed=spec.routed,
        command=list(spec.run.command) if isinstance(spec.run, ProcessRun | ContainerRun) else [],
        cwd=spec.run.cwd if isinstance(spec.run, ProcessRun) else None,
        image=spec.run.image if isinstance(spec.run, ContainerRun) else None,
        health=_check(spec),
        depends_on=list(spec.depends_on),
        replicas=ReplicasOut(min=spec.replicas.min, max=spec.replicas.max),
        versions=[v.name for v in spec.versions],
        current_version=spec.current_version,
        known_good_versions=runtime.known_good(spec),
        actions=sorted(spec.actions),
        strategies=sorted(s.value for s in runtime.strategies(spec)),
        instances=[_instance(i) for i in runtime.instances(spec)],
        standby=_instance(standby) if (standby := runtime.standby(spec)) else None,
        signals={
            name: round(sample.value, 6)
            for name, series in runtime.signals(spec.name).series.items()
            if (sample := series.latest()) is not None
        },
    )


@router.get("", response_model=ServicesResponse, response_model_by_alias=True)
async def list_services(runtime: RuntimeDep) -> ServicesResponse:
    """Every declared service, in the order of the service file, then the registry's."""
    items = [service_out(runtime, spec) for spec in runtime.catalog]
    return ServicesResponse(services=items, total=len(items))


@router.get("/{name}", response_model=ServiceResponse, response_model_by_alias=True)
async def get_service(name: str, runtime: RuntimeDep) -> ServiceResponse:
    """One service (404 naming it if unknown)."""
    return ServiceResponse(service=service_out(runtime, runtime.catalog.get(name)))
