"""Failure detection end to end: a real fault injected into a real example service, and the
incident's failure type and the strategy the default table chooses for it. Detection
settings are tightened so each scenario takes seconds, not minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    REPO,
    LoadGenerator,
    PhoenixServer,
    free_port,
    running_phoenix,
    service_file,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e

FAST = """    detection:
      error_rate: {above: 0.5, for: 2s}
      cpu: {above: 60, for: 2s}
      memory: {leak_window: 5s, min_growth: 0.2}
"""


def incidents_of(server: PhoenixServer, name: str) -> list[dict[str, Any]]:
    body = server.get("/api/incidents", params={"service": name}).json()
    return list(body["incidents"])


def first_incident(server: PhoenixServer, name: str, timeout: float = 30) -> dict[str, Any]:
    found: list[dict[str, Any]] = wait_until(
        lambda: incidents_of(server, name), timeout=timeout, message=f"an incident of {name}"
    )
    return found[-1]


def first_strategy(server: PhoenixServer, incident_id: str) -> str:
    def attempts() -> list[dict[str, Any]]:
        incident = server.get(f"/api/incidents/{incident_id}").json()["incident"]
        return list(incident.get("recoveries") or incident.get("attempts") or [])

    found = wait_until(attempts, timeout=15, message="a recovery of the incident")
    return str(sorted(found, key=lambda a: a["attempt"])[0]["strategy"])


def inject(port: int, path: str, body: dict[str, object] | None = None) -> None:
    answer = httpx.post(f"http://127.0.0.1:{port}{path}", json=body or {}, timeout=5)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("fault", ["/admin/crash", "/admin/hang"])
def test_a_crash_or_a_hang_is_service_down_and_restarted(tmp_path: Path, fault: str) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("auth", port))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("auth") == "healthy", timeout=20)
        inject(server.instance_port("auth"), fault)
        incident = first_incident(server, "auth")
        assert incident["failureType"] == "service_down"
        assert first_strategy(server, incident["id"]) == "restart"


def test_an_error_burst_is_a_high_error_rate_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("billing", port, extra=FAST))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("billing") == "healthy", timeout=20)
        with LoadGenerator(port, concurrency=2, path="/work"):
            inject(server.instance_port("billing"), "/admin/errors", {"rate": 0.9})
            incident = first_incident(server, "billing")
            assert incident["failureType"] == "high_error_rate", incident
            assert any("error_rate" in e for e in incident["evidence"])
            assert first_strategy(server, incident["id"]) == "restart"
            # The restarted process has no injected errors: the incident resolves.
            wait_until(
                lambda: incidents_of(server, "billing")[-1]["status"] == "resolved", timeout=30
            )


def test_a_memory_leak_is_found_before_the_limit_and_rolled_back(tmp_path: Path) -> None:
    port = free_port()
    extra = (
        FAST
        + """    resources: {memory_max: 4GiB}
    version: v2
    versions: [{name: v1, known_good: true}, {name: v2}]
"""
    )
    path = service_file(tmp_path, web_service_yaml("ledger", port, extra=extra))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("ledger") == "healthy", timeout=20)
        inject(server.instance_port("ledger"), "/admin/leak", {"mb_per_s": 20})
        incident = first_incident(server, "ledger")
        assert incident["failureType"] == "memory_leak", incident
        assert "reaches its limit of 4096 MiB in about" in incident["summary"]
        assert first_strategy(server, incident["id"]) == "rollback"


def test_a_load_spike_is_high_load_and_scaled_out(tmp_path: Path) -> None:
    port = free_port()
    extra = FAST + "    replicas: {min: 1, max: 2}\n"
    path = service_file(tmp_path, web_service_yaml("search", port, extra=extra))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("search") == "healthy", timeout=20)
        inject(server.instance_port("search"), "/admin/cpu", {"ms": 20})
        with LoadGenerator(port, concurrency=4, path="/work"):
            incident = first_incident(server, "search")
            assert incident["failureType"] == "high_load", incident
            assert any(e.startswith("cpu ") for e in incident["evidence"])
            assert first_strategy(server, incident["id"]) == "scale"


def test_a_failing_dependency_is_the_root_of_a_cascade_and_gets_circuit_breaking(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "db-is-broken"
    check = (
        f'["{{python}}", "-c", "import os, sys; sys.exit(os.path.exists(sys.argv[1]))", "{flag}"]'
    )

    def entry(name: str, depends: str, interval: str) -> str:
        return f"""
  - name: {name}
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    {depends}
    health: {{command: {check}, interval: {interval}, timeout: 1s, failure_threshold: 2}}
    stop: {{grace: 2s}}
    circuit: {{open_for: 1s, steps: [100], hold: 0s}}
"""

    path = service_file(
        tmp_path,
        entry("db", "", "0.3s"),
        entry("orders", "depends_on: [db]", "0.3s"),
        entry("payments", "depends_on: [db]", "0.3s"),
    )
    with running_phoenix(path, tmp_path / "var") as server:
        for name in ("db", "orders", "payments"):
            wait_until(lambda name=name: server.status_of(name) == "healthy", timeout=20)
        flag.touch()
        incident = first_incident(server, "db")
        assert incident["failureType"] == "cascading", incident
        assert "orders" in incident["summary"] and "payments" in incident["summary"]
        assert first_strategy(server, incident["id"]) == "circuit_break"
        flag.unlink()
        wait_until(lambda: server.status_of("db") == "healthy", timeout=30)
        assert incidents_of(server, "orders") == [] and incidents_of(server, "payments") == []


def test_a_healthy_but_noisy_service_raises_no_incident(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("feed", port, extra=FAST))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("feed") == "healthy", timeout=20)
        direct = server.instance_port("feed")
        # Some errors and some latency, well inside what the service tolerates.
        inject(direct, "/admin/errors", {"rate": 0.05})
        inject(direct, "/admin/latency", {"ms": 3})
        with LoadGenerator(port, concurrency=2, path="/work") as load:
            ends = time.monotonic() + 20
            while time.monotonic() < ends:
                assert server.status_of("feed") == "healthy"
                assert incidents_of(server, "feed") == []
                time.sleep(0.5)
        assert load.ok > 100 and load.bad.get("HTTP 500", 0) > 0, "the noise was real"


EXPORTER = """import sys, time
from prometheus_client import Counter, Gauge, start_http_server

depth = Gauge("app_queue_depth", "jobs waiting")
jobs = Counter("app_jobs", "jobs done")
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
depth.set(7)
while True:
    jobs.inc(10)
    time.sleep(0.1)
"""


def test_a_prometheus_endpoint_is_scraped_into_the_services_signals(tmp_path: Path) -> None:
    port = free_port()
    exporter = tmp_path / "exporter.py"
    exporter.write_text(EXPORTER)
    entry = f"""
  - name: worker
    command: ["{{python}}", "{exporter}", "{{port}}"]
    port: {port}
    router: false
    health: {{tcp: "127.0.0.1:{{port}}", interval: 0.5s}}
    metrics: {{prometheus: "http://127.0.0.1:{{port}}/metrics", every: 0.5s,
               names: [app_queue_depth, app_jobs_total]}}
"""
    path = service_file(tmp_path, entry)
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("worker") == "healthy", timeout=20)
        signals = wait_until(
            lambda: (s := server.service("worker")["signals"]).get("app_jobs_total") and s,
            timeout=15,
            message="scraped signals",
        )
        assert signals["app_queue_depth"] == 7.0
        assert 50 <= signals["app_jobs_total"] <= 150, "a counter becomes a rate per second"
        assert "python_gc_objects_collected_total" not in signals, "only the names asked for"
