"""End to end: the real ``phoenix serve`` supervising real example services.

Faults are real (SIGKILL, a hung process, Phoenix itself killed) and every wait has a
deadline. What the user sees through the API is what is asserted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    REPO,
    PhoenixServer,
    free_port,
    running_phoenix,
    service_file,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_service_is_recovered_automatically(tmp_path: Path) -> None:
    port = free_port()
    with running_phoenix(
        service_file(tmp_path, web_service_yaml("azora-auth", port)), tmp_path / "var"
    ) as server:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        pid = server.live_pid("azora-auth")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        [summary] = wait_until(lambda: server.recoveries_of("azora-auth"), timeout=10)
        recovery = server.finished(summary["id"])
        assert recovery["status"] == "completed" and recovery["outcome"] == "success"
        assert recovery["trigger"] == "automatic"
        assert "killed by SIGKILL" in recovery["reason"]
        assert [s["status"] for s in recovery["steps"]] == ["completed"] * 4
        assert answers(port)
        assert server.live_pid("azora-auth") not in (None, pid)
        assert server.status_of("azora-auth") == "healthy"
        path = f"/api/incidents/{recovery['incidentId']}"
        assert server.get(path).json()["incident"]["status"] == "open", "until it has held"
        # Healthy through the stabilisation period (reset_after, 10 s): resolved.
        incident = wait_until(
            lambda: (
                (found := server.get(path).json()["incident"])["status"] == "resolved" and found
            ),
            timeout=20,
            interval=0.2,
            message="the incident resolved",
        )
        assert [r["id"] for r in incident["recoveries"]] == [recovery["id"]]


def test_a_hung_service_is_detected_by_its_probe_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    with running_phoenix(
        service_file(tmp_path, web_service_yaml("azora-auth", port)), tmp_path / "var"
    ) as server:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        pid = server.live_pid("azora-auth")
        assert httpx.post(f"http://127.0.0.1:{port}/admin/hang").status_code == 200
        assert not answers(port), "hung: alive but not answering"
        [summary] = wait_until(lambda: server.recoveries_of("azora-auth"), timeout=10)
        recovery = server.finished(summary["id"])
        assert recovery["status"] == "completed"
        assert "health check failing" in recovery["reason"]
        assert "stopped azora-auth-" in recovery["steps"][0]["detail"]
        assert answers(port) and server.live_pid("azora-auth") != pid


def test_a_manual_restart_through_the_api(tmp_path: Path) -> None:
    port = free_port()
    with running_phoenix(
        service_file(tmp_path, web_service_yaml("azora-auth", port)), tmp_path / "var"
    ) as server:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        response = server.post(
            "/api/recovery/trigger",
            json={"service": "azora-auth", "strategy": "restart", "reason": "deploy config"},
        )
        assert response.status_code == 202
        recovery = server.finished(response.json()["recoveryId"])
        assert recovery["status"] == "completed" and recovery["reason"] == "deploy config"
        assert recovery["metrics"]["downtime"] > 0
        assert answers(port)


def test_services_outlive_a_killed_phoenix_and_are_adopted(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", port))
    server = PhoenixServer(path, tmp_path / "var").start()
    try:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        pid = server.live_pid("azora-auth")
        server.stop(signal.SIGKILL)
        assert answers(port), "the data plane keeps serving while Phoenix is down"
        server = PhoenixServer(path, tmp_path / "var").start()
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        assert server.live_pid("azora-auth") == pid, "adopted, not restarted"
        assert "adopted azora-auth-" in server.log()
        os.kill(pid, signal.SIGKILL)  # the adopted process is watched like any other
        [summary] = wait_until(lambda: server.recoveries_of("azora-auth"), timeout=10)
        assert server.finished(summary["id"])["status"] == "completed"
    finally:
        server.close()
    assert not answers(port), "a clean stop stops the services too"


def test_a_recovery_cut_short_by_phoenix_dying_is_closed_as_interrupted(tmp_path: Path) -> None:
    port = free_port()
    stubborn = web_service_yaml("azora-auth", port).replace(
        '"--name", "{name}"]', '"--name", "{name}", "--ignore-sigterm"]'
    )
    path = service_file(tmp_path, stubborn)
    server = PhoenixServer(path, tmp_path / "var").start()
    try:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        recovery_id = server.post(
            "/api/recovery/trigger", json={"service": "azora-auth", "strategy": "restart"}
        ).json()["recoveryId"]

        def stopping() -> bool:
            steps = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]["steps"]
            return bool(steps) and steps[0]["status"] == "running"

        wait_until(stopping, timeout=10, message="in its shutdown step")
        server.stop(signal.SIGKILL)
        server = PhoenixServer(path, tmp_path / "var").start()
        recovery = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]
        assert recovery["status"] == "interrupted" and recovery["endTime"] is not None
        assert recovery["steps"][0]["status"] == "failed"
        assert recovery["steps"][0]["detail"] == "Phoenix stopped"
        assert server.get("/health").json()["activeRecoveries"] == 0
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
    finally:
        server.close()


def test_the_example_fleet_starts_healthy(tmp_path: Path) -> None:
    text = (REPO / "examples" / "phoenix.yaml").read_text()
    for old in re.findall(r"port: (\d+)", text):
        text = text.replace(f"port: {old}", f"port: {free_port()}")
    text = text.replace("cwd: ..", f"cwd: {REPO}")
    path = tmp_path / "phoenix.yaml"
    path.write_text(text)
    with running_phoenix(path, tmp_path / "var") as server:
        names = [s["name"] for s in server.get("/api/services").json()["services"]]
        assert names == ["azora-db", "azora-auth", "azora-education", "azora-worker"]
        for name in names:
            wait_until(
                lambda name=name: server.status_of(name) == "healthy", timeout=20, message=name
            )
        assert (tmp_path / "var" / "logs" / "azora-worker.log").exists()
        assert (tmp_path / "var" / "phoenix.db").exists()


def phoenix(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_server", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands() -> None:
    result = phoenix("--help")
    assert result.returncode == 0
    for command in ("serve", "check-config", "version"):
        assert command in result.stdout


def test_an_invalid_service_file_refuses_to_start_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services:\n  - name: azora-auth\n    command: [x]\n    health: {interval: soon}\n"
    )
    result = phoenix(
        "serve",
        "--config",
        str(path),
        "--port",
        str(free_port()),
        env={"PHOENIX_DATA_DIR": str(tmp_path / "var")},
    )
    assert result.returncode == 2
    assert "services[0] (azora-auth).health.interval" in result.stderr
    assert "expected a duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_value_refuses_to_start(tmp_path: Path) -> None:
    result = phoenix(
        "serve", env={"MAX_RECOVERY_ATTEMPTS": "lots", "PHOENIX_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert result.stderr.startswith("phoenix: invalid environment: MAX_RECOVERY_ATTEMPTS")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", free_port()))
    with running_phoenix(path, tmp_path / "one") as first:
        result = phoenix(
            "serve",
            "--config",
            str(path),
            "--port",
            str(first.port),
            env={"PHOENIX_DATA_DIR": str(tmp_path / "two")},
        )
    assert result.returncode == 2
    assert f"port {first.port} on 127.0.0.1 is already in use" in result.stderr
    assert not (tmp_path / "two" / "logs").exists(), "no service was started"
    del port


def test_check_config_validates_without_starting(tmp_path: Path) -> None:
    result = phoenix("check-config", "--config", str(REPO / "examples" / "phoenix.yaml"))
    assert result.returncode == 0, result.stderr
    assert "4 service(s) OK" in result.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_service_that_cannot_start_does_not_stop_the_others(tmp_path: Path) -> None:
    port = free_port()
    broken = """
  - name: broken
    command: ["no-such-binary-for-phoenix", "--serve"]
    health: {process: true}
    recovery: {backoff: {initial: 100ms}}
"""
    path = service_file(tmp_path, web_service_yaml("azora-auth", port), broken)
    with running_phoenix(path, tmp_path / "var", env={"MAX_RECOVERY_ATTEMPTS": "2"}) as server:
        wait_until(lambda: server.status_of("azora-auth") == "healthy", timeout=15)
        assert server.status_of("broken") == "unhealthy"

        def given_up() -> dict[str, Any] | None:
            found = server.get("/api/incidents", params={"service": "broken"}).json()["incidents"]
            return found[0] if found and found[0]["status"] == "unresolved" else None

        incident = wait_until(given_up, timeout=20, message="Phoenix to give up on it")
        assert (
            "could not start: command not found: 'no-such-binary-for-phoenix'"
            in incident["summary"]
        )
        attempts = server.get(f"/api/incidents/{incident['id']}").json()["incident"]["recoveries"]
        assert len(attempts) == 2
        last = server.get(f"/api/recovery/status/{attempts[0]['id']}").json()["recovery"]
        assert last["steps"][1]["status"] == "failed"
        assert "command not found" in last["steps"][1]["detail"]
        assert answers(port)
