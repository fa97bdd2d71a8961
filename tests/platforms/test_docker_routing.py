"""Docker containers behind Phoenix's router, on a real engine: replicas killed, restarted
one at a time, scaled out, a circuit broken, and Phoenix gone and back — with real client
traffic through the router, counted on the client's side."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from phoenix_server.domain.recoveries import RecoveryStatus, StepStatus, Strategy
from phoenix_server.domain.services import InstanceRole
from phoenix_server.runtime import Runtime
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import LoadGenerator, eventually, free_port, wait_until

pytestmark = pytest.mark.e2e  # starts real containers and router processes


def web(image: str, port: int, *, replicas: str = "2", extra: str = "") -> str:
    return f"""
  - name: web
    platform: docker
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    replicas: {replicas}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
    stop: {{grace: 1s, drain: 1s}}
{extra}"""


def serving(runtime: Runtime, count: int) -> list[str]:
    """The ids of the service's containers in the router's rotation, once there are
    ``count`` of them and each runs."""
    assert runtime.docker is not None
    running = {i.id for i in runtime.docker.instances("web") if i.alive}
    backends = [b.id for b in runtime.docker.routers.backends("web")]
    return backends if len(backends) == count and set(backends) == running else []


def settle(load: LoadGenerator, requests: int = 200) -> None:
    start = load.ok
    wait_until(lambda: load.ok - start >= requests, timeout=15, message="traffic")


def owned_containers() -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=phoenix.service=web", "--format", "{{.Names}}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(listed.stdout.split())


def running(pid: int) -> bool:
    """Alive (a zombie is not: the first Phoenix here, its parent, no longer reaps it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def router_pid(runtime: Runtime) -> int:
    assert runtime.docker is not None
    router = runtime.docker.routers.instance("web")
    assert router is not None and router.role is InstanceRole.ROUTER and router.pid
    return router.pid


async def test_a_killed_container_of_two_is_replaced_alone_and_clients_lose_nothing(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port)) as runtime:
        await healthy(runtime, "web")
        victim, survivor = await eventually(lambda: serving(runtime, 2), message="two serving")
        with LoadGenerator(port, concurrency=4, path="/health") as load:
            settle(load)
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
            [recovery] = await eventually(
                lambda: history(runtime, service="web"), message="recovery"
            )
            recovery = await finished(runtime, recovery.id)
            await eventually(lambda: serving(runtime, 2), message="two serving again")
            settle(load)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert [s.name for s in recovery.steps] == [
            "Replacement start",
            "Health verification",
            "Traffic switch",
            "Graceful shutdown of the old",
        ], "with replicas, the replacement starts first"
        assert victim in (recovery.steps[-1].detail or ""), "the dead container is replaced"
        now = serving(runtime, 2)
        assert survivor in now and victim not in now, "the survivor was left alone"
        assert load.failed == 0, f"clients saw failures: {load.bad} of {load.ok}"
        assert victim not in owned_containers(), "the dead container was removed"


async def test_a_rolling_restart_of_two_containers_loses_no_request(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port)) as runtime:
        await healthy(runtime, "web")
        before = set(await eventually(lambda: serving(runtime, 2), message="two serving"))
        with LoadGenerator(port, concurrency=4, path="/health") as load:
            settle(load)
            started = await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.RESTART, reason="test", force=False
            )
            recovery = await finished(runtime, started.id)
            settle(load)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert len(recovery.steps) == 8, "four steps per container, one container at a time"
        assert recovery.steps[0].name.startswith("Replacement start (1/2: phoenix-web-")
        assert all(s.status is StepStatus.COMPLETED for s in recovery.steps)
        assert load.failed == 0, f"clients saw failures: {load.bad} of {load.ok}"
        after = set(serving(runtime, 2))
        assert len(after) == 2 and not after & before, "both replaced"
        assert sorted(after) == owned_containers(), "no container left over"


async def test_scaling_out_adds_a_container_to_the_rotation(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port, replicas="{min: 1, max: 2}")) as runtime:
        await healthy(runtime, "web")
        [first] = await eventually(lambda: serving(runtime, 1), message="one serving")
        started = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.SCALE, reason="test", force=False
        )
        recovery = await finished(runtime, started.id)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert [s.name for s in recovery.steps][-1] == "Capacity verification"
        both = serving(runtime, 2)
        assert first in both and len(owned_containers()) == 2
        assert "its declared maximum" in runtime.orchestrator.unavailable_reason(
            runtime.catalog.get("web"), Strategy.SCALE
        )


async def test_a_broken_circuit_answers_at_once_then_closes(
    tmp_path: Path, docker_image: str
) -> None:
    """The router opens the circuit in front of the containers, half-opens it, and closes
    it again once health holds; traffic through it is counted."""
    port = free_port()
    circuit = "    circuit: {open_for: 1s, steps: [50, 100], hold: 1s, queue_timeout: 200ms}\n"
    async with engine(tmp_path, web(docker_image, port, replicas="1", extra=circuit)) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        await eventually(lambda: serving(runtime, 1), message="one serving")
        with LoadGenerator(port, concurrency=2, path="/health") as load:
            settle(load, 50)
            started = await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.CIRCUIT_BREAK, reason="test", force=False
            )
            recovery = await finished(runtime, started.id)
            settle(load, 50)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert recovery.steps[0].name == "Isolate (open circuit)"
        assert any(k.startswith("HTTP 503") for k in load.bad), "the open circuit answered 503"
        traffic = await runtime.docker.traffic(runtime.catalog.get("web"))
        assert traffic is not None and traffic.circuit == "closed"
        assert traffic.received >= load.ok


async def test_phoenix_gone_and_back_changes_nothing(tmp_path: Path, docker_image: str) -> None:
    """Phoenix stops without stopping its services: the router and both containers serve
    on without it; the next Phoenix adopts all three (same containers, same router
    process), starts nothing, and recovers nothing."""
    port = free_port()
    services = web(docker_image, port)
    load = LoadGenerator(port, concurrency=4, path="/health")
    try:
        async with engine(tmp_path, services, PHOENIX_KEEP_SERVICES="true") as runtime:
            await healthy(runtime, "web")
            containers = set(await eventually(lambda: serving(runtime, 2), message="serving"))
            router = router_pid(runtime)
            load.__enter__()
            settle(load)
        gone_at = load.ok
        settle(load, 300)
        assert load.ok > gone_at, "the data plane served without Phoenix"
        async with engine(tmp_path, services) as runtime:
            await healthy(runtime, "web")
            assert set(await eventually(lambda: serving(runtime, 2), message="adopted")) == (
                containers
            ), "adopted, not started again"
            assert router_pid(runtime) == router, "the router adopted too"
            assert owned_containers() == sorted(containers), "nothing duplicated or orphaned"
            settle(load)
            load.stop()
            assert await history(runtime, service="web") == []
    finally:
        load.stop()
    assert load.failed == 0, f"clients saw failures around Phoenix's absence: {load.bad}"
    assert not running(router), "stopped with Phoenix the second time"
    assert owned_containers() == []


async def test_a_container_without_the_router_listens_on_the_port_itself(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    services = web(docker_image, port, replicas="1", extra="    router: false\n")
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        [only] = runtime.docker.instances("web")
        assert only.port == port and runtime.docker.routers.instance("web") is None
        shown = subprocess.run(
            ["docker", "inspect", only.id], check=True, capture_output=True, text=True
        )
        assert f"PORT={port}" in json.loads(shown.stdout)[0]["Config"]["Env"]


def memory_limit(container: str) -> int:
    shown = subprocess.run(
        ["docker", "inspect", "--format", "{{.HostConfig.Memory}}", container],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(shown.stdout)


async def test_scaling_out_sets_the_declared_resources_in_place(
    tmp_path: Path, docker_image: str
) -> None:
    """The scale plan's resource step is ``docker update`` on every container; a Phoenix
    restarted with another memory limit declared changes it in place, restarting nothing."""
    port = free_port()
    limited = "    resources: {memory_max: 64MiB}\n"
    services = web(docker_image, port, replicas="{min: 1, max: 2}", extra=limited)
    async with engine(tmp_path, services, PHOENIX_KEEP_SERVICES="true") as runtime:
        await healthy(runtime, "web")
        started = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.SCALE, reason="test", force=False
        )
        recovery = await finished(runtime, started.id)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        [step] = [s for s in recovery.steps if s.name == "Resource allocation"]
        assert "memory 64 MiB on phoenix-web-" in (step.detail or ""), step
        both = serving(runtime, 2)
        assert [memory_limit(c) for c in both] == [64 * 1024 * 1024] * 2
    more = services.replace("64MiB", "96MiB")
    async with engine(tmp_path, more) as runtime:
        await healthy(runtime, "web")
        assert sorted(await eventually(lambda: serving(runtime, 2), message="adopted")) == sorted(
            both
        ), "adopted, not restarted"
        assert [memory_limit(c) for c in both] == [96 * 1024 * 1024] * 2


async def test_a_port_held_by_another_process_is_named_and_served_once_free(
    tmp_path: Path, docker_image: str
) -> None:
    """Another process holds the service's port: Phoenix stays up, says so in /health's
    problems and in the service's reason, keeps the containers running, and the router
    takes the port as soon as it is free."""
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        async with engine(tmp_path, web(docker_image, port, replicas="1")) as runtime:
            problem = "service web is not served on its port"
            await eventually(
                lambda: any(problem in p for p in runtime.problems()), message="the problem"
            )
            assert runtime.docker is not None and runtime.docker.instances("web")
            holder.close()
            await eventually(
                lambda: not any(problem in p for p in runtime.problems()),
                timeout=20,
                message="the port served again",
            )
            await healthy(runtime, "web")
            await eventually(lambda: serving(runtime, 1), message="in rotation")
            answer = await asyncio.to_thread(
                httpx.get, f"http://127.0.0.1:{port}/health", timeout=5
            )
            assert answer.status_code == 200
    finally:
        holder.close()
