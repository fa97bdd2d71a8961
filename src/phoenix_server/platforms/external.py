"""Services that run elsewhere: Phoenix probes them but cannot start or stop them.

It implements only the platform core: no strategy is supported, and it has none of the
capabilities (process lifecycle, routing, standbys, hooks, resources), so a step that needs
one fails with a sentence naming what the external platform cannot do. Phoenix acts on
these services only through their declared HTTP actions (playbooks).
"""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import Instance, PlatformKind, ServiceSpec
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

    async def shutdown(self, *, keep_running: bool) -> None:
        return None
