"""Failover to a backup container on a real engine: the hot standby runs out of rotation,
takes over when the primary fails over (traffic switched through the router, the consistency
hook run in it), is replaced when it dies, and a restarted Phoenix tells the promoted
container from the standby by the router's rotation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from phoenix_server.domain.recoveries import DataIntegrity, RecoveryStatus, Strategy
from phoenix_server.domain.services import Instance
from phoenix_server.runtime import Runtime
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import LoadGenerator, eventually, free_port, wait_until

pytestmark = pytest.mark.e2e  # starts real containers and router processes

CHECK = '["/bin/busybox", "sh", "-c", "test -f /www/health && echo consistent"]'


def web(image: str, port: int) -> str:
    return f"""
  - name: web
    platform: docker
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    backup: {{mode: hot, env: {{ROLE: backup}}}}
    hooks: {{consistency_check: {CHECK}}}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
    stop: {{grace: 1s, drain: 1s}}
"""


def standby(runtime: Runtime) -> Instance | None:
    assert runtime.docker is not None
    found = runtime.docker.standby("web")
    return found if found is not None and found.alive else None


def serving(runtime: Runtime) -> list[str]:
    assert runtime.docker is not None
    return [b.id for b in runtime.docker.routers.backends("web")]


def env_of(container: str) -> list[str]:
    shown = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Config.Env}}", container],
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(shown.stdout))


async def test_failover_switches_traffic_to_the_hot_standby_and_starts_another(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port)) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        backup = await eventually(lambda: standby(runtime), message="the standby running")
        assert "ROLE=backup" in env_of(backup.id), "the backup's own env"
        [primary] = runtime.docker.instances("web")
        await eventually(lambda: serving(runtime) == [primary.id], message="primary in rotation")
        assert backup.id not in serving(runtime), "the standby takes no traffic"
        with LoadGenerator(port, concurrency=2, path="/health") as load:
            wait_until(lambda: load.ok > 50, timeout=10, message="traffic")
            started = await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.FAILOVER, reason="test", force=False
            )
            recovery = await finished(runtime, started.id)
            at = load.ok
            wait_until(lambda: load.ok > at + 50, timeout=10, message="traffic after")
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert recovery.metrics.data_integrity is DataIntegrity.VERIFIED
        [check] = [s for s in recovery.steps if s.name == "Consistency check"]
        assert "consistent" in (check.detail or "") and backup.id in (check.detail or "")
        assert serving(runtime) == [backup.id], "the standby serves now"
        assert load.failed == 0, f"clients saw failures: {load.bad}"
        new = await eventually(lambda: standby(runtime), message="a new standby")
        assert new.id not in (backup.id, primary.id)


async def test_a_dead_standby_is_replaced_quietly(tmp_path: Path, docker_image: str) -> None:
    async with engine(tmp_path, web(docker_image, free_port())) as runtime:
        await healthy(runtime, "web")
        first = await eventually(lambda: standby(runtime), message="the standby running")
        subprocess.run(["docker", "kill", first.id], check=True, capture_output=True)
        second = await eventually(
            lambda: (s := standby(runtime)) is not None and s.id != first.id and s,
            timeout=20,
            message="another standby",
        )
        assert second.id != first.id
        assert await history(runtime, service="web") == [], "no recovery: it served no one"
        gone = subprocess.run(["docker", "inspect", first.id], capture_output=True)
        assert gone.returncode != 0, "the dead standby was removed"


async def test_a_restarted_phoenix_knows_the_promoted_container_from_the_standby(
    tmp_path: Path, docker_image: str
) -> None:
    """After a failover, the serving container carries the label it was created with
    (standby); the router's rotation says it serves. A restarted Phoenix adopts it as
    serving and the new standby as the standby: nothing started, nothing removed."""
    port = free_port()
    services = web(docker_image, port)
    async with engine(tmp_path, services, PHOENIX_KEEP_SERVICES="true") as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        backup = await eventually(lambda: standby(runtime), message="the standby running")
        started = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.FAILOVER, reason="test", force=False
        )
        assert (await finished(runtime, started.id)).status is RecoveryStatus.COMPLETED
        new = await eventually(lambda: standby(runtime), message="a new standby")
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        assert [i.id for i in runtime.docker.instances("web")] == [backup.id]
        adopted = standby(runtime)
        assert adopted is not None and adopted.id == new.id
        assert serving(runtime) == [backup.id]
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
