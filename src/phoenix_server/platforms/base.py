"""The one interface every platform implements (local processes, external, later Docker and
Kubernetes). The recovery layer sees platforms only through :class:`Platform`.

A platform owns the instances it runs, reports their lifecycle as :class:`InstanceEvent`s
to its subscribers, and says which strategies it can carry out for a service so that the
selector never picks one it cannot do. SDK and OS errors become ``PlatformError``s here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar, cast, runtime_checkable

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import CircuitMode, Instance, PlatformKind, ServiceSpec


class InstanceEventKind(StrEnum):
    STARTED = "started"
    ADOPTED = "adopted"
    """Found running from before Phoenix restarted; already past its start-up."""
    PROMOTED = "promoted"
    """A standby became a serving instance (failover)."""
    EXITED = "exited"
    """Ended without Phoenix asking: a crash, an outside kill."""
    STOPPED = "stopped"
    """Ended because Phoenix stopped it (or forgot a dead one)."""
    UNHEALTHY = "unhealthy"
    """Still running, but the platform's own health check says it is unhealthy (Docker's
    HEALTHCHECK, after its retries)."""
    HEALTHY = "healthy"
    """The platform's own health check says healthy again."""
    CRASH_LOOP = "crash_loop"
    """The platform itself keeps restarting it (Docker's restart policy): unhealthy until
    it stays up, and not Phoenix's to restart — a person must look."""


@dataclass(frozen=True)
class InstanceEvent:
    kind: InstanceEventKind
    instance: Instance
    detail: str = ""
    """What the platform said (a health check's verdict)."""


EventListener = Callable[[InstanceEvent], None]


def describe_end(instance: Instance) -> str:
    """How ``instance`` ended: the platform's reason if it gave one, else its exit."""
    return instance.end_reason or describe_exit(instance.exit_code)


def describe_exit(code: int | None) -> str:
    """``exited with code 1`` / ``killed by SIGKILL`` / ``exited`` (status unknown)."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class InstanceJournal(Protocol):
    """Where a platform remembers what it runs, so a restarted Phoenix can adopt it."""

    async def save_instance(self, instance: Instance) -> None: ...

    async def remove_instance(self, instance_id: str) -> None: ...

    async def load_instances(self, platform: PlatformKind) -> list[Instance]: ...


class Platform(Protocol):
    """The core every platform implements: what it can do for a service (and why not), the
    service's instances as it sees them, their lifecycle events, and taking over at start
    and letting go at stop. Everything else is a capability a platform may have."""

    kind: PlatformKind

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        """Strategies this platform can carry out for ``service`` as declared, now."""
        ...

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        """The other strategies, each with what is missing, in words an operator can act on."""
        ...

    def subscribe(self, listener: EventListener) -> None: ...

    def instances(self, service: str) -> list[Instance]:
        """The platform's current view of ``service``'s instances (no I/O): live ones, and
        ones that died unasked (``exited``) until a stop forgets them."""
        ...

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        """At start: adopt what still runs from before, stop strays, start what is missing.
        Returns the services that could not be started, with the reason."""
        ...

    async def shutdown(self, *, keep_running: bool) -> None:
        """Phoenix is stopping: stop everything, or leave it running to be adopted later."""
        ...


# -- capabilities ------------------------------------------------------------------------
# A platform has a capability by implementing its methods; callers ask with
# :func:`capability` (None: it has not) or :func:`require` (a PlatformError naming what
# the service's platform cannot do). A platform that restarts its own instances and rolls
# out changes by itself (Kubernetes) has no ProcessLifecycle; one with no Phoenix router
# has no Routing.


@runtime_checkable
class ProcessLifecycle(Protocol):
    """Phoenix starts and stops the instances itself, puts them in rotation once verified,
    and sees them exit."""

    async def start(self, service: ServiceSpec, *, count: int = 1) -> list[Instance]:
        """Start ``count`` new instances; they are STARTING until :meth:`mark_serving`."""
        ...

    async def stop(
        self, service: ServiceSpec, instance_ids: Sequence[str] | None = None
    ) -> list[Instance]:
        """Gracefully stop the given (default: all) instances; return them as ended."""
        ...

    async def mark_serving(self, service: ServiceSpec, instance_ids: Sequence[str]) -> None:
        """Health verified: put these instances in rotation."""
        ...

    async def wait_for_exit(self, instance_ids: Sequence[str]) -> Instance:
        """Return the first of these instances to end (never returns if none does)."""
        ...


@runtime_checkable
class Routing(Protocol):
    """Phoenix's router carries the service's traffic: it counts it and can open, half-open
    and close a circuit in front of the instances."""

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        """Open, half-open (letting ``admit`` of requests through) or close the circuit."""
        ...

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        """Request counts through the service's router; None if nothing routes its traffic."""
        ...


@runtime_checkable
class Standbys(Protocol):
    """A backup instance, running out of rotation (hot) or started on failover (cold)."""

    def standby(self, service: str) -> Instance | None:
        """The service's hot standby, if it has one running."""
        ...

    async def start_standby(self, service: ServiceSpec) -> Instance:
        """Start a standby (the backup's command) out of rotation."""
        ...

    async def promote(self, service: ServiceSpec, instance_id: str) -> Instance:
        """Make a standby a serving instance and put it in rotation."""
        ...


@runtime_checkable
class Hooks(Protocol):
    """Declared hook commands run where the service runs (data sync, checks, smoke)."""

    async def run_hook(
        self, service: ServiceSpec, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        """Run a declared hook command: (exit 0, what it said)."""
        ...


@runtime_checkable
class ResourceControl(Protocol):
    """The service's declared resources, applied to running instances in place."""

    async def apply_resources(self, service: ServiceSpec) -> str:
        """Apply the service's declared resources to its running instances; say what was set."""
        ...


@dataclass(frozen=True)
class Rollout:
    """Where a workload's rollout stands, as its controller reports it."""

    done: bool
    """Observed, every replica updated, available and none of the old ones left."""
    failed: str | None
    """Why it cannot finish (the progress deadline passed, its new pods cannot run)."""
    detail: str
    """``3/3 updated, 3 available (revision 4)``: what the controller says now."""
    instances: tuple[Instance, ...] = ()
    """The pods of the current revision (not those terminating)."""
    replicas: int = 1
    """How many the workload asks for."""


@runtime_checkable
class Workloads(Protocol):
    """The platform runs the service as a workload whose controller starts, restarts and
    rolls out its instances by itself (a Kubernetes Deployment): Phoenix asks the API for a
    change, then watches the rollout it causes. Each call returns a sentence for the record."""

    async def replace_instances(self, service: ServiceSpec, instance_ids: Sequence[str]) -> str:
        """Delete these instances; the controller replaces them."""
        ...

    async def restart_workload(self, service: ServiceSpec) -> str:
        """Replace every instance through a rollout (``kubectl rollout restart``)."""
        ...

    async def roll_to(self, service: ServiceSpec, version: str) -> str:
        """Roll the workload to ``version``: the revision it was pinned to if the cluster
        still has it (``kubectl rollout undo --to-revision``), else its declared image."""
        ...

    async def scale_workload(self, service: ServiceSpec, replicas: int) -> str:
        """Run ``replicas`` instances (through the autoscaler's floor when one owns them)."""
        ...

    def desired_replicas(self, service: ServiceSpec) -> int:
        """The replicas the workload is asked to run now."""
        ...

    async def rollout(self, service: ServiceSpec) -> Rollout:
        """The rollout as it stands (the cluster's answer, not a cache's)."""
        ...

    async def wait_for_rollout(self, service: ServiceSpec) -> Rollout:
        """Return once the rollout has moved (any change of the workload or its instances)."""
        ...


@runtime_checkable
class TrafficSelection(Protocol):
    """The cluster routes the service's traffic by a selector Phoenix can change (a
    Kubernetes Service): to a backup or fallback workload and back, and past failing
    instances. It cannot hold requests or admit a share of them as Phoenix's router does."""

    async def switch_traffic(self, service: ServiceSpec, role: str) -> str:
        """Send the traffic to the ``backup`` or ``fallback`` workload (once it can serve)."""
        ...

    async def switch_back(self, service: ServiceSpec) -> str:
        """Send the traffic to the service's own workload again."""
        ...

    async def open_circuit(self, service: ServiceSpec, instance_ids: Sequence[str]) -> str:
        """Stop sending requests to these failing instances (or to all, to the fallback)."""
        ...

    async def close_circuit(self, service: ServiceSpec) -> str:
        """Traffic back to the service: instances that recovered readmitted, the others
        replaced by the controller."""
        ...


@runtime_checkable
class Advice(Protocol):
    """The platform sees more than probes do (why its instances fail) and can say which
    strategy that evidence calls for."""

    def advise(self, service: ServiceSpec) -> tuple[Strategy, str] | None:
        """The strategy the platform's evidence calls for now, and why (None: no advice)."""
        ...


C = TypeVar("C")


@dataclass(frozen=True)
class Usage:
    """What one running instance uses now."""

    memory: float
    """Resident bytes (of the instance and everything it started)."""
    cpu: float
    """Percent of one core."""


@runtime_checkable
class ResourceSampling(Protocol):
    """Memory and CPU of each running instance, sampled on demand (about once a second)."""

    def sample_usage(self, service: str) -> list[Usage]:
        """Usage of each of the service's running instances it could measure."""
        ...


class Capability(Generic[C]):
    """One capability: ``ROUTING.of(platform)`` is the platform as a :class:`Routing` if it
    has it (else None); ``ROUTING.require(platform, service)`` raises a PlatformError saying
    what the service's platform cannot do."""

    def __init__(self, protocol: type, cannot: str) -> None:
        self._protocol = protocol
        self._cannot = cannot
        self._has: dict[type, bool] = {}
        """Per platform class: whether it has the capability. A runtime-checkable protocol's
        isinstance looks at every method each time (some 20 µs), and the samplers ask once
        per service per second: 10,000 services made it a fifth of a core."""

    def of(self, platform: Platform) -> C | None:
        kind = type(platform)
        has = self._has.get(kind)
        if has is None:
            has = self._has[kind] = isinstance(platform, self._protocol)
        return cast(C, platform) if has else None

    def require(self, platform: Platform, service: ServiceSpec) -> C:
        found = self.of(platform)
        if found is None:
            raise PlatformError(
                f"service '{service.name}' runs on the {platform.kind.value} platform, which "
                f"cannot {self._cannot}"
            )
        return found


LIFECYCLE: Capability[ProcessLifecycle] = Capability(
    ProcessLifecycle, "start or stop its instances"
)
ROUTING: Capability[Routing] = Capability(Routing, "route its traffic (it has no Phoenix router)")
STANDBYS: Capability[Standbys] = Capability(Standbys, "run a standby for it")
HOOKS: Capability[Hooks] = Capability(Hooks, "run hook commands where it runs")
RESOURCE_CONTROL: Capability[ResourceControl] = Capability(
    ResourceControl, "change its resources in place"
)
WORKLOADS: Capability[Workloads] = Capability(
    Workloads, "change a workload through a cluster's API"
)
ADVICE: Capability[Advice] = Capability(Advice, "advise on a strategy")
TRAFFIC_SELECTION: Capability[TrafficSelection] = Capability(
    TrafficSelection, "move its traffic by a Service's selector"
)
RESOURCE_SAMPLING: Capability[ResourceSampling] = Capability(
    ResourceSampling, "sample its instances' memory and CPU"
)


class PlatformRegistry:
    """The platforms Phoenix acts through, by kind — and, for a kind with several endpoints
    (Docker engines on several hosts), one platform per named endpoint."""

    def __init__(
        self,
        platforms: Mapping[PlatformKind, Platform],
        endpoints: Mapping[tuple[PlatformKind, str], Platform] | None = None,
    ) -> None:
        self._platforms = dict(platforms)
        self._endpoints = dict(endpoints or {})

    def for_service(self, service: ServiceSpec) -> Platform:
        if service.engine is not None:
            found = self._endpoints.get((service.platform, service.engine.name))
            if found is not None:
                return found
            raise PlatformError(
                f"no {service.platform.value} engine '{service.engine.name}' is configured "
                f"for service '{service.name}'"
            )
        try:
            return self._platforms[service.platform]
        except KeyError:
            raise PlatformError(
                f"no {service.platform.value} platform is configured for service '{service.name}'"
            ) from None

    def all(self) -> list[Platform]:
        return [*self._platforms.values(), *self._endpoints.values()]
