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
from typing import Protocol

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


@dataclass(frozen=True)
class InstanceEvent:
    kind: InstanceEventKind
    instance: Instance


EventListener = Callable[[InstanceEvent], None]


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

    def standby(self, service: str) -> Instance | None:
        """The service's hot standby, if it has one running."""
        ...

    async def start_standby(self, service: ServiceSpec) -> Instance:
        """Start a standby (the backup's command) out of rotation."""
        ...

    async def promote(self, service: ServiceSpec, instance_id: str) -> Instance:
        """Make a standby a serving instance and put it in rotation."""
        ...

    async def run_hook(
        self, service: ServiceSpec, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        """Run a declared hook command where the service runs: (exit 0, what it said)."""
        ...

    async def apply_resources(self, service: ServiceSpec) -> str:
        """Apply the service's declared resources to its running instances; say what was set."""
        ...

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        """Open, half-open (letting ``admit`` of requests through) or close the circuit."""
        ...

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        """Request counts through the service's router; None if nothing routes its traffic."""
        ...

    async def wait_for_exit(self, instance_ids: Sequence[str]) -> Instance:
        """Return the first of these instances to end (never returns if none does)."""
        ...

    async def shutdown(self, *, keep_running: bool) -> None:
        """Phoenix is stopping: stop everything, or leave it running to be adopted later."""
        ...


class PlatformRegistry:
    """The platforms Phoenix acts through, by kind."""

    def __init__(self, platforms: Mapping[PlatformKind, Platform]) -> None:
        self._platforms = dict(platforms)

    def for_service(self, service: ServiceSpec) -> Platform:
        try:
            return self._platforms[service.platform]
        except KeyError:
            raise PlatformError(
                f"no {service.platform.value} platform is configured for service '{service.name}'"
            ) from None

    def all(self) -> list[Platform]:
        return list(self._platforms.values())
