"""End to end for the strategies beyond restart: circuit breaking and scaling, on real
example services behind the real router, with real client traffic."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
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

CIRCUIT = """    circuit: {open_for: 1s, steps: [50, 100], hold: 1s, queue_timeout: 200ms}
    fallback: {status: 503, body: '{"error":"degraded"}', content_type: application/json}
"""


def trigger(server: PhoenixServer, service: str, strategy: str) -> dict[str, Any]:
    response = server.post("/api/recovery/trigger", json={"service": service, "strategy": strategy})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def step_done(server: PhoenixServer, recovery_id: str, index: int) -> bool:
    steps = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]["steps"]
    return len(steps) > index and steps[index]["status"] == "completed"


def test_a_circuit_isolates_a_failing_service_and_lets_it_back_once_it_heals(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("billing", port, extra=CIRCUIT))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("billing") == "healthy", timeout=20)
        direct = server.instance_port("billing")
        httpx.post(f"http://127.0.0.1:{direct}/admin/errors", json={"rate": 1.0})
        with LoadGenerator(port, concurrency=2) as load:
            recovery_id = trigger(server, "billing", "circuit_break")["recoveryId"]
            wait_until(lambda: step_done(server, recovery_id, 0), timeout=10, message="open")
            began = time.monotonic()
            answer = httpx.get(f"http://127.0.0.1:{port}/work")
            assert time.monotonic() - began < 1.0, "callers fail fast, they do not pile up"
            assert answer.status_code == 503 and answer.json() == {"error": "degraded"}
            assert (
                answer.headers["x-phoenix-router"] == "fallback" and answer.headers["retry-after"]
            )
            wait_until(lambda: server.health_of("billing")["circuit"] == "open", timeout=5)
            assert server.health_of("billing")["status"] == "degraded"
            httpx.post(f"http://127.0.0.1:{direct}/admin/errors", json={"rate": 0})
            recovery = server.finished(recovery_id)
        assert recovery["status"] == "completed" and recovery["outcome"] == "success", recovery
        assert [s["name"] for s in recovery["steps"]] == [
            "Isolate (open circuit)",
            "Wait before trying again",
            "Half-open: 50% of traffic",
            "Hold at 50%",
            "Close circuit",
            "Health verification",
        ]
        wait_until(lambda: server.health_of("billing")["circuit"] == "closed", timeout=5)
        assert httpx.get(f"http://127.0.0.1:{port}/work").status_code == 200
        assert load.ok > 0


def test_a_failure_while_half_open_reopens_the_circuit(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("billing", port, extra=CIRCUIT))
    with running_phoenix(path, tmp_path / "var", env={"MAX_RECOVERY_ATTEMPTS": "1"}) as server:
        wait_until(lambda: server.status_of("billing") == "healthy", timeout=20)
        direct = server.instance_port("billing")
        httpx.post(f"http://127.0.0.1:{direct}/admin/errors", json={"rate": 1.0})
        with LoadGenerator(port, concurrency=2, path="/work"):
            recovery = server.finished(trigger(server, "billing", "circuit_break")["recoveryId"])
        assert recovery["status"] == "failed" and recovery["outcome"] == "failure"
        hold = next(s for s in recovery["steps"] if s["name"] == "Hold at 50%")
        assert hold["status"] == "failed" and "reopened the circuit" in hold["detail"]
        wait_until(lambda: server.health_of("billing")["circuit"] == "open", timeout=5)


def test_scaling_out_adds_verified_replicas_up_to_max(tmp_path: Path) -> None:
    port = free_port()
    replicas = "    replicas: {min: 1, max: 2}\n"
    path = service_file(tmp_path, web_service_yaml("search", port, extra=replicas))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("search") == "healthy", timeout=20)
        assert server.service("search")["strategies"] == ["circuit_break", "restart", "scale"]
        with LoadGenerator(port, concurrency=2) as load:
            recovery = server.finished(trigger(server, "search", "scale")["recoveryId"])
        assert recovery["status"] == "completed", recovery
        assert [s["name"] for s in recovery["steps"]] == [
            "Add replicas",
            "Health verification",
            "Load balancer reconfiguration",
            "Capacity verification",
        ]
        assert recovery["steps"][3]["detail"] == "2 instances serving"
        running = [i for i in server.service("search")["instances"] if i["state"] == "running"]
        assert len(running) == 2
        assert load.failed == 0
        refused = server.post(
            "/api/recovery/trigger", json={"service": "search", "strategy": "scale"}
        )
        assert refused.status_code == 422
        assert (
            "already runs 2 replica(s), its declared maximum (replicas.max: 2)"
            in (refused.json()["error"]["message"])
        )


def test_a_scaled_out_service_scales_back_in_once_load_stays_low(tmp_path: Path) -> None:
    port = free_port()
    # Any load this test makes counts as low (the threshold itself is unit-tested).
    replicas = "    replicas: {min: 1, max: 3, step: 2, scale_in_below: 1e6, scale_in_after: 2s}\n"
    path = service_file(tmp_path, web_service_yaml("search", port, extra=replicas))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("search") == "healthy", timeout=20)

        def running() -> list[str]:
            instances = server.service("search")["instances"]
            return [i["id"] for i in instances if i["state"] == "running"]

        first = wait_until(lambda: (found := running()) and len(found) == 1 and found, timeout=10)
        recovery = server.finished(trigger(server, "search", "scale")["recoveryId"])
        assert recovery["status"] == "completed", recovery
        assert len(running()) == 3
        with LoadGenerator(port, concurrency=1) as load:
            # Light load: one replica at a time is drained and stopped, a window apart.
            wait_until(lambda: len(running()) == 2, timeout=20, message="down to 2")
            wait_until(lambda: running() == first, timeout=20, message="down to min")
        assert load.ok > 0 and load.failed == 0, load.bad
        log = server.log()
        assert "scaling in from 3 to 2 replicas" in log
        assert "scaling in from 2 to 1 replicas" in log
        assert "scaling in from 1" not in log


HOT_BACKUP = """    backup: {mode: hot}
    hooks:
      data_sync: ["{python}", "-c", "print('replica caught up')"]
      consistency_check: ["{python}", "-c", "print('checksums match')"]
"""


def test_failover_to_a_hot_standby_when_the_primary_dies(tmp_path: Path) -> None:
    import os
    import signal

    port = free_port()
    path = service_file(tmp_path, web_service_yaml("ledger", port, extra=HOT_BACKUP))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("ledger") == "healthy", timeout=20)
        standby = wait_until(lambda: server.service("ledger")["standby"], timeout=20)
        assert "failover" in server.service("ledger")["strategies"]
        [primary] = server.service("ledger")["instances"]
        with LoadGenerator(port, concurrency=4) as load:
            wait_until(lambda: load.ok > 200, timeout=10)
            os.kill(primary["pid"], signal.SIGKILL)
            [summary] = wait_until(lambda: server.recoveries_of("ledger"), timeout=10)
            recovery = server.finished(summary["id"])
            ok_then = load.ok
            wait_until(lambda: load.ok > ok_then + 200, timeout=10)
        assert recovery["strategy"] == "failover" and recovery["status"] == "completed", recovery
        assert recovery["decision"]["reason"].startswith("default table: service_down → failover")
        assert [s["name"] for s in recovery["steps"]] == [
            "Primary to backup switch",
            "Data synchronization",
            "Routing update",
            "Consistency check",
            "Standby replacement",
        ]
        assert standby["id"] in recovery["steps"][0]["detail"]
        assert "replica caught up" in recovery["steps"][1]["detail"]
        assert recovery["metrics"]["dataIntegrity"] == "verified"
        assert recovery["metrics"]["downtime"] < 1.0
        assert load.failed == 0, f"clients saw failures: {load.bad}"
        [serving] = server.service("ledger")["instances"]
        assert serving["id"] == standby["id"], "the standby now serves"
        fresh = wait_until(lambda: server.service("ledger")["standby"], timeout=20)
        assert fresh["id"] not in (standby["id"], primary["id"]), "and a new standby waits"
