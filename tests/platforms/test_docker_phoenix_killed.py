"""Phoenix (a real ``phoenix serve`` process) SIGKILLed in the middle of a Docker recovery
and started again: the containers and the router served on, the recovery is recorded as
interrupted, and the new Phoenix adopts what runs — the half-started replacement verified
and put in rotation, nothing duplicated, nothing orphaned."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import (
    LoadGenerator,
    PhoenixServer,
    free_port,
    service_file,
    wait_until,
)

pytestmark = pytest.mark.e2e  # real Phoenix, real containers


def web(image: str, port: int) -> str:
    return f"""
  - name: web
    platform: docker
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    replicas: 2
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
      startup_timeout: 20s
    stop: {{grace: 1s, drain: 1s}}
"""


def containers(owner_filter: str = "phoenix.service=web") -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={owner_filter}", "--format", "{{.Names}}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(listed.stdout.split())


def running(server: PhoenixServer) -> list[str]:
    instances = server.service("web")["instances"]
    return sorted(i["id"] for i in instances if i["state"] == "running")


def test_phoenix_killed_mid_recovery_is_replaced_without_duplicates(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    path = service_file(tmp_path, web(docker_image, port))
    server = PhoenixServer(path, tmp_path / "var").start()
    try:
        wait_until(lambda: len(running(server)) == 2, timeout=30, message="two running")
        before = running(server)
        with LoadGenerator(port, concurrency=2, path="/health") as load:
            wait_until(lambda: load.ok > 50, timeout=10, message="traffic")
            answer = server.post(
                "/api/recovery/trigger", json={"service": "web", "strategy": "restart"}
            )
            assert answer.status_code == 202, answer.text
            recovery_id = answer.json()["recoveryId"]

            def replacement_started() -> bool:
                recovery = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]
                steps = recovery["steps"]
                return bool(steps) and steps[0]["status"] == "completed"

            wait_until(replacement_started, timeout=20, interval=0.01, message="a replacement")
            server.stop(signal.SIGKILL)
            assert len(containers()) == 3, "two serving, one started and not yet verified"
            at = load.ok
            wait_until(lambda: load.ok > at + 100, timeout=10, message="traffic, no Phoenix")
            server = PhoenixServer(path, tmp_path / "var").start()
            wait_until(
                lambda: len(running(server)) == 2 and server.status_of("web") == "healthy",
                timeout=30,
                message="two running again",
            )
            at = load.ok
            wait_until(lambda: load.ok > at + 100, timeout=10, message="traffic after")
        assert load.failed == 0, f"clients saw failures: {load.bad}"
        recovery = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]
        assert recovery["status"] == "interrupted", recovery
        now = running(server)
        assert containers() == now, "no container duplicated or orphaned"
        assert set(now) & set(before), "containers that served were adopted, not replaced"
    finally:
        server.close()
    assert containers() == [], "stopped with Phoenix"
