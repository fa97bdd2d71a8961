"""The version keeper: which version each service runs after a restart of Phoenix, and when
a version becomes known good — on a manual clock, with the real tracker and catalog."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import ManualClock
from phoenix_server.domain.deployments import Deployment, DeploymentReason, DeploymentStatus
from phoenix_server.domain.health import Observation, ObservationKind
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.recovery.versions import VersionKeeper

SERVICES = """
services:
  - name: shop
    command: [run]
    version: v2
    known_good_after: 60s
    health: {process: true, interval: 1s}
    versions: [{name: v1, known_good: true}, {name: v2}, {name: v3}]
  - name: plain
    command: [run]
"""


class Recorder:
    def __init__(self) -> None:
        self.saved: list[Deployment] = []

    async def save_deployment(self, deployment: Deployment) -> None:
        self.saved.append(deployment)


class World:
    def __init__(self) -> None:
        self.catalog: ServiceCatalog = parse_service_file(
            SERVICES, source="s.yaml", base_dir=Path("/srv"), default_interval=1.0
        )
        self.clock = ManualClock()
        self.tracker = HealthTracker(self.catalog, self.clock)
        self.recorder = Recorder()
        self.keeper = VersionKeeper(
            catalog=self.catalog,
            recorder=self.recorder,
            clock=self.clock,
            health_of=self.tracker.view,
        )

    def deployment(self, version: str, status: DeploymentStatus, **fields: object) -> Deployment:
        plain = Deployment(
            id=f"dep-{version}",
            service="shop",
            version=version,
            previous_version="v2",
            reason=DeploymentReason.DEPLOY,
            status=status,
            started_at=self.clock.now() - timedelta(minutes=5),
        )
        return replace(plain, **fields)  # type: ignore[arg-type]


@pytest.fixture
def world() -> World:
    return World()


async def test_a_fresh_installation_runs_the_declared_version_and_records_it(world: World) -> None:
    await world.keeper.load({}, {})
    assert world.catalog.get("shop").current_version == "v2"
    [initial] = world.recorder.saved
    assert (initial.version, initial.reason, initial.status) == (
        "v2",
        DeploymentReason.INITIAL,
        DeploymentStatus.COMPLETED,
    )
    assert world.catalog.get("plain").current_version is None, "no versions, no record"
    assert world.keeper.rollback_target(world.catalog.get("shop")) == "v1"


async def test_the_last_deployed_version_is_kept_across_restarts(world: World) -> None:
    done = world.deployment("v3", DeploymentStatus.COMPLETED)
    await world.keeper.load({"shop": done}, {"shop": {"v2"}})
    assert world.catalog.get("shop").current_version == "v3"
    assert world.recorder.saved == []
    assert world.keeper.known_good(world.catalog.get("shop")) == ["v1", "v2"]
    assert world.keeper.rollback_target(world.catalog.get("shop")) == "v2"


@pytest.mark.parametrize("status", [DeploymentStatus.FAILED, DeploymentStatus.INTERRUPTED])
async def test_an_unfinished_or_failed_deploy_goes_back_to_what_ran_before(
    world: World, status: DeploymentStatus
) -> None:
    broken = world.deployment("v3", status)
    await world.keeper.load({"shop": broken}, {})
    assert world.catalog.get("shop").current_version == "v2"
    [back] = world.recorder.saved
    assert back.version == "v2" and back.previous_version == "v3"
    assert f"deployment dep-v3 of v3 {status.value}" in back.detail
    assert back.started_at > broken.started_at


async def test_an_interrupted_rollback_keeps_its_known_good_target(world: World) -> None:
    rollback = world.deployment(
        "v1", DeploymentStatus.INTERRUPTED, reason=DeploymentReason.ROLLBACK
    )
    await world.keeper.load({"shop": rollback}, {})
    assert world.catalog.get("shop").current_version == "v1"


async def test_a_version_becomes_known_good_after_running_healthy_long_enough(
    world: World,
) -> None:
    await world.keeper.load({}, {})
    watch = asyncio.create_task(world.keeper.watch())
    try:
        at = world.clock.now()
        world.tracker.observe(Observation("shop", "shop-1", ObservationKind.STARTED, at, True))
        world.tracker.observe(Observation("shop", "shop-1", ObservationKind.PROBE, at, True))
        for _ in range(59):
            world.clock.advance(1)
            await asyncio.sleep(0)
        assert world.keeper.known_good(world.catalog.get("shop")) == ["v1"], "not yet"
        for _ in range(3):
            world.clock.advance(1)
            for _ in range(5):
                await asyncio.sleep(0)
        assert world.keeper.known_good(world.catalog.get("shop")) == ["v1", "v2"]
        assert world.recorder.saved[-1].known_good_at is not None
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch


async def test_a_version_declared_known_good_is_recorded_so_at_once(world: World) -> None:
    """Running v1 (declared ``known_good: true``): its deployment carries ``knownGoodAt``
    at the first look, without waiting ``known_good_after`` and even while unhealthy."""
    rolled_back = world.deployment(
        "v1", DeploymentStatus.COMPLETED, ended_at=world.clock.now() - timedelta(minutes=4)
    )
    await world.keeper.load({"shop": rolled_back}, {})
    watch = asyncio.create_task(world.keeper.watch())
    try:
        await asyncio.sleep(0)  # the watch waits on the clock
        world.clock.advance(1)
        for _ in range(5):
            await asyncio.sleep(0)
        [saved] = world.recorder.saved
        assert saved.id == rolled_back.id and saved.known_good_at == rolled_back.ended_at
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch


async def test_a_version_proven_good_is_pinned_to_what_it_ran(world: World) -> None:
    """A platform that names what a version runs in immutable terms (a container's image
    ID): a completed deployment records it and pins the version to it, so that every later
    start of it runs that artifact (the spec's pins), whatever its tag names by then; the
    version proving good pins what it proved good with."""
    ran = {("shop", "v1"): "sha256:1111", ("shop", "v3"): "sha256:3333"}
    keeper = VersionKeeper(
        catalog=world.catalog,
        recorder=world.recorder,
        clock=world.clock,
        health_of=world.tracker.view,
        artifact_of=lambda service, version: ran.get((service, version)),
    )
    deployed = world.deployment("v3", DeploymentStatus.IN_PROGRESS)
    await keeper.load({"shop": deployed}, {})
    await keeper.save(replace(deployed, status=DeploymentStatus.COMPLETED))
    assert world.recorder.saved[-1].artifact == "sha256:3333", "recorded when it completed"
    assert world.catalog.get("shop").pins == {"v3": "sha256:3333"}, "pinned at once"
    back = world.deployment("v1", DeploymentStatus.COMPLETED, reason=DeploymentReason.ROLLBACK)
    await keeper.load({"shop": back}, {})
    watch = asyncio.create_task(keeper.watch())
    try:
        await asyncio.sleep(0)
        world.clock.advance(1)
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
    assert world.recorder.saved[-1].known_good_at is not None
    assert world.recorder.saved[-1].artifact == "sha256:1111"
    assert world.catalog.get("shop").pins == {"v1": "sha256:1111", "v3": "sha256:3333"}


async def test_pins_recorded_earlier_are_loaded(world: World) -> None:
    await world.keeper.load({}, {"shop": {"v1"}}, {"shop": {"v1": "sha256:1111"}, "gone": {}})
    assert world.catalog.get("shop").pins == {"v1": "sha256:1111"}
    assert world.catalog.get("plain").pins == {}
