"""End to end through the router: real traffic while instances restart, crash, or while
Phoenix itself is killed. What clients saw is counted on the client side and compared with
what Phoenix recorded."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    LoadGenerator,
    PhoenixServer,
    free_port,
    running_phoenix,
    service_file,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e

REPLICAS = "    replicas: 2\n"


def live_pids(server: PhoenixServer, name: str) -> dict[str, int]:
    return {
        i["id"]: i["pid"]
        for i in server.service(name)["instances"]
        if i["state"] in ("starting", "running")
    }


def in_rotation(server: PhoenixServer, name: str, count: int) -> bool:
    running = [i for i in server.service(name)["instances"] if i["state"] == "running"]
    return server.status_of(name) == "healthy" and len(running) == count


def settle(load: LoadGenerator, requests: int = 200, timeout: float = 10) -> None:
    """Let traffic flow for a while (``requests`` answered) before acting."""
    start = load.ok
    wait_until(lambda: load.ok - start >= requests, timeout=timeout, message="traffic")


def test_a_rolling_restart_of_two_replicas_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", port, extra=REPLICAS))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: in_rotation(server, "azora-auth", 2), timeout=20)
        before = live_pids(server, "azora-auth")
        with LoadGenerator(port, concurrency=4) as load:
            settle(load)
            started = server.post(
                "/api/recovery/trigger", json={"service": "azora-auth", "strategy": "restart"}
            ).json()
            recovery = server.finished(started["recoveryId"])
            settle(load)
        assert recovery["status"] == "completed", recovery
        assert len(recovery["steps"]) == 8, "four steps per instance, one instance at a time"
        assert recovery["steps"][0]["name"].startswith("Graceful shutdown (1/2: azora-auth-")
        assert all(s["status"] == "completed" for s in recovery["steps"])
        assert load.failed == 0, f"clients saw failures: {load.bad} of {load.ok}"
        assert recovery["metrics"]["requestsLost"] == 0
        assert recovery["metrics"]["downtime"] == 0, "one replica served all along"
        after = live_pids(server, "azora-auth")
        assert len(after) == 2 and not set(after.values()) & set(before.values())


def test_a_crashed_replica_is_replaced_alone_without_losing_requests(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", port, extra=REPLICAS))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: in_rotation(server, "azora-auth", 2), timeout=20)
        victim, survivor = sorted(live_pids(server, "azora-auth").items())
        with LoadGenerator(port, concurrency=4) as load:
            settle(load)
            os.kill(victim[1], signal.SIGKILL)
            [summary] = wait_until(lambda: server.recoveries_of("azora-auth"), timeout=10)
            recovery = server.finished(summary["id"])
            settle(load)
        assert recovery["status"] == "completed"
        assert [s["name"] for s in recovery["steps"]] == [
            "Graceful shutdown",
            "Service restart",
            "Health verification",
            "Traffic restoration",
        ], "only the dead replica is replaced"
        assert victim[0] in recovery["steps"][0]["detail"]
        assert survivor[1] in live_pids(server, "azora-auth").values(), (
            "the survivor was left alone"
        )
        assert load.failed == 0, f"clients saw failures: {load.bad}"
        assert recovery["metrics"]["downtime"] == 0


def test_a_single_instance_crash_is_ridden_out_by_the_router(tmp_path: Path) -> None:
    """With one instance, requests arriving while it restarts wait in the router for it."""
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", port))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: in_rotation(server, "azora-auth", 1), timeout=20)
        [pid] = live_pids(server, "azora-auth").values()
        with LoadGenerator(port, concurrency=4) as load:
            settle(load)
            os.kill(pid, signal.SIGKILL)
            [summary] = wait_until(lambda: server.recoveries_of("azora-auth"), timeout=10)
            recovery = server.finished(summary["id"])
            settle(load)
        assert recovery["status"] == "completed"
        assert recovery["metrics"]["requestsLost"] == 0
        assert load.failed <= 4, f"at most the requests in flight on the killed process: {load.bad}"


def test_traffic_flows_while_phoenix_is_dead_and_is_adopted_after(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("azora-auth", port, extra=REPLICAS))
    server = PhoenixServer(path, tmp_path / "var").start()
    try:
        wait_until(lambda: in_rotation(server, "azora-auth", 2), timeout=20)
        pids = live_pids(server, "azora-auth")
        router_pid = _router_pid(server, tmp_path)
        with LoadGenerator(port, concurrency=4) as load:
            settle(load)
            server.stop(signal.SIGKILL)
            killed_at = load.ok
            time.sleep(0.2)  # a window with no control plane at all
            settle(load, requests=300)
            assert load.ok > killed_at, "the data plane kept serving without Phoenix"
            server = PhoenixServer(path, tmp_path / "var").start()
            wait_until(lambda: in_rotation(server, "azora-auth", 2), timeout=20)
            settle(load)
        assert load.failed == 0, f"clients saw failures around Phoenix's death: {load.bad}"
        assert live_pids(server, "azora-auth") == pids, "instances adopted, not restarted"
        assert _router_pid(server, tmp_path) == router_pid, "the router adopted too"
        assert server.recoveries_of("azora-auth") == [], "nothing needed recovering"
    finally:
        server.close()


def _router_pid(server: PhoenixServer, tmp_path: Path) -> int:
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline: Any = process.info["cmdline"] or []
        if "phoenix_server.platforms.router" in cmdline and str(tmp_path) in " ".join(cmdline):
            return int(process.pid)
    raise AssertionError("no router process found")
