"""The platform core and its capabilities: the local platform has them all, the external
one none, and a step that needs one the service's platform lacks fails with a sentence
naming what that platform cannot do. A fake platform stands for the next ones (Docker,
Kubernetes): having a capability is implementing its methods, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import PlatformError, UnsupportedStrategyError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import (
    CircuitMode,
    Instance,
    PlatformKind,
    ServiceSpec,
)
from phoenix_server.platforms.base import (
    HOOKS,
    LIFECYCLE,
    RESOURCE_CONTROL,
    RESOURCE_SAMPLING,
    ROUTING,
    STANDBYS,
    EventListener,
    Platform,
)
from phoenix_server.platforms.external import ExternalPlatform
from phoenix_server.platforms.local.supervisor import LocalPlatform
from phoenix_server.recovery.strategies import PlanInput, plan_for
from tests.platforms.local import OWNER, spec_of

EXTERNAL = "- name: api\n  platform: external\n  health: {tcp: 127.0.0.1:1}\n"
ALL = (LIFECYCLE, ROUTING, STANDBYS, HOOKS, RESOURCE_CONTROL, RESOURCE_SAMPLING)


class NoJournal:
    async def save_instance(self, instance: Instance) -> None:
        return None

    async def remove_instance(self, instance_id: str) -> None:
        return None

    async def load_instances(self, platform: PlatformKind) -> list[Instance]:
        return []


class RoutedOnly:
    """A platform with the core and a router, nothing else (as a cluster with a proxy)."""

    kind = PlatformKind.EXTERNAL

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        return frozenset({Strategy.CIRCUIT_BREAK})

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        return {}

    def subscribe(self, listener: EventListener) -> None:
        return None

    def instances(self, service: str) -> list[Instance]:
        return []

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        return {}

    async def shutdown(self, *, keep_running: bool) -> None:
        return None

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        return None

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        return None


def test_the_local_platform_has_every_capability(tmp_path: Path) -> None:
    local: Platform = LocalPlatform(
        log_dir=tmp_path / "log",
        run_dir=tmp_path / "run",
        journal=NoJournal(),
        clock=SystemClock(),
        owner=OWNER,
    )
    assert all(c.of(local) is local for c in ALL)


def test_the_external_platform_is_the_core_alone(tmp_path: Path) -> None:
    external: Platform = ExternalPlatform()
    spec = spec_of(tmp_path, EXTERNAL)
    assert all(c.of(external) is None for c in ALL)
    with pytest.raises(PlatformError) as refused:
        LIFECYCLE.require(external, spec)
    assert refused.value.message == (
        "service 'api' runs on the external platform, which cannot start or stop its instances"
    )


def test_a_platform_has_exactly_the_capabilities_it_implements(tmp_path: Path) -> None:
    routed: Platform = RoutedOnly()
    spec = spec_of(tmp_path, EXTERNAL)
    assert [c for c in ALL if c.of(routed) is not None] == [ROUTING]
    assert asyncio.run(ROUTING.require(routed, spec).traffic(spec)) is None
    with pytest.raises(PlatformError, match="cannot run a standby for it"):
        STANDBYS.require(routed, spec)


def test_planners_are_chosen_by_platform_and_strategy(tmp_path: Path) -> None:
    local = spec_of(
        tmp_path, "- name: web\n  command: [python3, -c, pass]\n  health: {process: true}\n"
    )
    assert plan_for(Strategy.RESTART, PlanInput(local)).steps
    external = spec_of(tmp_path, EXTERNAL)
    with pytest.raises(UnsupportedStrategyError, match="no restart plan for services on the"):
        plan_for(Strategy.RESTART, PlanInput(external))
