"""The probe schedule and post-recovery verification, against a real TCP listener."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import pytest

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.health import HealthTransition, ProbeResult, ServiceStatus
from phoenix_server.domain.services import Instance, InstanceState, PlatformKind, ServiceCatalog
from phoenix_server.monitoring.probing import Prober, ProbeTarget, target_for
from phoenix_server.monitoring.scheduling import ProbeScheduler
from phoenix_server.monitoring.verifying import ProbeVerifier
from phoenix_server.support.timefmt import utcnow
from tests.monitoring.helpers import catalog_of, free_port
from tests.support import eventually


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    prober = Prober()
    yield prober
    await prober.close()


async def listen(port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)


def external(port: int, interval: str = "100ms", threshold: int = 2) -> str:
    return f"""
    - name: ext
      platform: external
      health: {{tcp: "127.0.0.1:{port}", interval: {interval}, timeout: 100ms, failure_threshold: {threshold}}}
    """


async def test_probes_run_at_the_interval_and_feed_the_tracker(prober: Prober) -> None:
    port = free_port()
    catalog = catalog_of(external(port))
    clock = SystemClock()
    tracker = HealthTracker(catalog, clock)
    transitions: list[HealthTransition] = []
    tracker.subscribe(transitions.append)
    scheduler = ProbeScheduler(prober, tracker, clock)
    server = await listen(port)
    try:
        scheduler.add(target_for(catalog.get("ext"), None, python=sys.executable))
        await eventually(lambda: tracker.status("ext") is ServiceStatus.HEALTHY, timeout=3)
        before, started = scheduler.probes_run, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (scheduler.probes_run - before) / (time.monotonic() - started)
        assert 7 <= rate <= 13, f"{rate:.1f} probes/s for a 100 ms interval"
        server.close()
        await server.wait_closed()
        await eventually(lambda: tracker.status("ext") is ServiceStatus.UNHEALTHY, timeout=3)
        assert [t.current for t in transitions] == [ServiceStatus.HEALTHY, ServiceStatus.UNHEALTHY]
        assert "connection refused" in transitions[-1].reason
    finally:
        server.close()
        await scheduler.close()


async def test_the_first_probe_comes_within_a_second_even_for_long_intervals(
    prober: Prober,
) -> None:
    port = free_port()
    catalog = catalog_of(external(port, interval="30s"))
    clock = SystemClock()
    tracker = HealthTracker(catalog, clock)
    scheduler = ProbeScheduler(prober, tracker, clock)
    server = await listen(port)
    try:
        scheduler.add(target_for(catalog.get("ext"), None, python=sys.executable))
        await eventually(lambda: tracker.status("ext") is ServiceStatus.HEALTHY, timeout=1.5)
    finally:
        server.close()
        await scheduler.close()


async def test_removing_a_target_stops_its_probes(prober: Prober) -> None:
    port = free_port()
    catalog = catalog_of(external(port, interval="50ms"))
    clock = SystemClock()
    scheduler = ProbeScheduler(prober, HealthTracker(catalog, clock), clock)
    server = await listen(port)
    try:
        scheduler.add(target_for(catalog.get("ext"), None, python=sys.executable))
        await eventually(lambda: scheduler.probes_run >= 3, timeout=3)
        scheduler.remove("ext")
        assert scheduler.targets() == []
        after = scheduler.probes_run
        await asyncio.sleep(0.3)
        assert scheduler.probes_run <= after + 1  # at most one probe already in flight
    finally:
        server.close()
        await scheduler.close()


def local_instance(port: int) -> Instance:
    return Instance(
        id="svc-1",
        service="svc",
        platform=PlatformKind.LOCAL,
        state=InstanceState.STARTING,
        started_at=utcnow(),
        pid=None,
        port=port,
    )


def local_catalog(port: int, success_threshold: int = 1) -> ServiceCatalog:
    return catalog_of(
        f"""
        - name: svc
          command: ["x"]
          port: {port}
          health: {{tcp: "127.0.0.1:{{port}}", interval: 2s, success_threshold: {success_threshold}}}
        """
    )


async def test_verification_polls_fast_until_the_instance_answers(prober: Prober) -> None:
    port = free_port()
    catalog = local_catalog(port)
    clock = SystemClock()
    tracker = HealthTracker(catalog, clock)
    verifier = ProbeVerifier(prober, tracker, clock, python=sys.executable)
    servers: list[asyncio.Server] = []

    async def open_later() -> None:
        await asyncio.sleep(0.15)
        servers.append(await listen(port))

    opener = asyncio.create_task(open_later())
    started = time.monotonic()
    result = await verifier.verify(catalog.get("svc"), [local_instance(port)], timeout=5)
    elapsed = time.monotonic() - started
    await opener
    servers[0].close()
    assert result.ok, result.detail
    assert 0.15 <= elapsed < 0.25, f"answered at 0.15 s, verified at {elapsed:.3f} s"
    assert "svc-1: connected" in result.detail


async def test_verification_gives_up_at_its_timeout_with_what_it_saw(prober: Prober) -> None:
    port = free_port()
    catalog = local_catalog(port)
    clock = SystemClock()
    verifier = ProbeVerifier(prober, HealthTracker(catalog, clock), clock, python=sys.executable)
    result = await verifier.verify(catalog.get("svc"), [local_instance(port)], timeout=0.3)
    assert not result.ok
    assert result.detail.startswith("not healthy within 0.3s")
    assert "connection refused" in result.detail


async def test_verification_requires_the_success_threshold(prober: Prober) -> None:
    port = free_port()
    catalog = local_catalog(port, success_threshold=3)
    clock = SystemClock()
    tracker = HealthTracker(catalog, clock)
    seen: list[int] = []
    original = prober.probe

    async def counting(target: ProbeTarget) -> ProbeResult:
        result = await original(target)
        seen.append(int(result.ok))
        return result

    prober.probe = counting  # type: ignore[method-assign]
    server = await listen(port)
    try:
        verifier = ProbeVerifier(prober, tracker, clock, python=sys.executable)
        result = await verifier.verify(catalog.get("svc"), [local_instance(port)], timeout=3)
    finally:
        server.close()
    assert result.ok and seen == [1, 1, 1]
