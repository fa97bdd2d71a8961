"""Services that run elsewhere: Phoenix probes them but cannot start or stop them.

It acts on them only through the service's declared actions and playbooks (a later
issue), so no strategy is supported here and lifecycle calls are refused plainly.
"""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import CircuitMode, Instance, PlatformKind, ServiceSpec
from phoenix_server.platforms.base import EventListener


class ExternalPlatform:
    kind = PlatformKind.EXTERNAL

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        return frozenset()

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        why = f"service '{service.name}' is external: Phoenix only monitors it"
        return {strategy: why for strategy in Strategy}

    def subscribe(self, listener: EventListener) -> None:
        """External services raise no lifecycle events."""

    def instances(self, service: str) -> list[Instance]:
        return []

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        return {}

    def _refuse(self, service: ServiceSpec) -> PlatformError:
        return PlatformError(
            f"service '{service.name}' is external: Phoenix monitors it but does not run it"
        )

    async def start(self, service: ServiceSpec, *, count: int = 1) -> list[Instance]:
        raise self._refuse(service)

    async def stop(
        self, service: ServiceSpec, instance_ids: Sequence[str] | None = None
    ) -> list[Instance]:
        raise self._refuse(service)

    async def mark_serving(self, service: ServiceSpec, instance_ids: Sequence[str]) -> None:
        raise self._refuse(service)

    def standby(self, service: str) -> Instance | None:
        return None

    async def start_standby(self, service: ServiceSpec) -> Instance:
        raise self._refuse(service)

    async def promote(self, service: ServiceSpec, instance_id: str) -> Instance:
        raise self._refuse(service)

    async def run_hook(
        self, service: ServiceSpec, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        raise self._refuse(service)

    async def apply_resources(self, service: ServiceSpec) -> str:
        raise self._refuse(service)

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        raise self._refuse(service)

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        return None

    async def wait_for_exit(self, instance_ids: Sequence[str]) -> Instance:
        raise PlatformError("external services have no instances to watch")

    async def shutdown(self, *, keep_running: bool) -> None:
        return None
