"""``GET /metrics`` read back with the Prometheus text parser, after real recoveries."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import PhoenixServer, free_port, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PhoenixServer]:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    phoenix = PhoenixServer(path, tmp_path / "var").start()
    wait_until(lambda: phoenix.status_of("web") == "healthy", timeout=20)
    yield phoenix
    phoenix.close()


def samples(server: PhoenixServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = server.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_count_recoveries_and_show_services(server: PhoenixServer) -> None:
    before = samples(server)
    assert value(before, "phoenix_service_up", service="web") == 1.0
    assert value(before, "phoenix_service_status", service="web", status="healthy") == 1.0
    assert value(before, "phoenix_service_status", service="web", status="unhealthy") == 0.0
    assert value(before, "phoenix_active_recoveries") == 0.0

    pid = server.live_pid("web")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: server.recoveries_of("web"), timeout=20)
    done = {"service": "web", "strategy": "restart", "status": "completed", "outcome": "success"}
    seen = []

    def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        found = samples(server)
        seen.append(found)
        return found if ("phoenix_recoveries_total", frozenset(done.items())) in found else None

    recovery = server.finished(server.recoveries_of("web")[0]["id"])
    assert recovery["status"] == "completed"
    # Counted once it has held for its stabilisation period (10 s): never before, and never
    # as pending or in progress (a counter that appears and vanishes is not a counter).
    after = wait_until(counted, timeout=30, interval=0.2, message="the recovery counted")
    assert value(after, "phoenix_recoveries_total", **done) == 1.0
    statuses = {
        dict(labels)["status"]
        for found in seen
        for name, labels in found
        if name == "phoenix_recoveries_total"
    }
    assert statuses == {"completed"}, statuses
    assert not any(name.endswith("_created") for found in seen for name, _ in found)
    assert not any(name == "phoenix_recovery_attempts_total" for name, _ in after)
    assert value(after, "phoenix_incidents_total", service="web", failure_type="service_down") == 1
    took = value(after, "phoenix_time_to_recovery_seconds_sum", service="web", strategy="restart")
    assert 0 < took < 10
    assert value(after, "phoenix_detection_to_action_seconds_count", service="web") == 1.0
    assert 0.0 < value(after, "phoenix_service_uptime_ratio", service="web") <= 1.0
    summary = server.get("/api/metrics/summary").json()
    assert (summary["recoveries"], summary["recoverySuccessRate"]) == (1, 1.0)
    assert 0 < summary["meanTimeToRecovery"] < 10
    assert summary["falsePositiveRate"] == 0.0
    [restart] = summary["strategies"]
    assert (restart["strategy"], restart["attempts"], restart["successes"]) == ("restart", 1, 1)
    assert summary["services"][0]["service"] == "web" and summary["services"][0]["uptime"] > 0

    assert value(after, "phoenix_build_info", version=server.get("/health").json()["version"]) == 1
    assert value(after, "process_cpu_seconds_total") > 0
    assert value(after, "phoenix_alert_outbox_pending") == 0
    assert value(after, "phoenix_alert_outbox_oldest_age_seconds") == 0
    assert value(after, "phoenix_alerts_truncated_total", by="alertmanager") == 0


def test_a_restart_by_phoenix_is_exported_as_recovering_not_down(server: PhoenixServer) -> None:
    """An alert rule on ``phoenix_service_up == 0`` fired during Phoenix's own restart and
    came back as a second incident: while Phoenix recovers a service, ``up`` is not
    exported for it and ``phoenix_service_recovering`` says why."""
    trigger = server.post(
        "/api/recovery/trigger", json={"service": "web", "strategy": "restart", "reason": "t"}
    )
    assert trigger.status_code == 202, trigger.text
    recovery_id = trigger.json()["recoveryId"]
    seen: list[tuple[float | None, float]] = []

    def ended() -> bool:
        found = samples(server)
        seen.append(
            (
                found.get(("phoenix_service_up", frozenset({("service", "web")}))),
                value(found, "phoenix_service_recovering", service="web"),
            )
        )
        status = server.get(f"/api/recovery/status/{recovery_id}").json()["recovery"]["status"]
        return status not in ("pending", "in_progress")

    wait_until(ended, timeout=30, interval=0.01, message="the restart to end")
    assert server.finished(recovery_id)["status"] == "completed"
    assert any(recovering == 1.0 for _, recovering in seen), seen
    assert all(up is None for up, recovering in seen if recovering == 1.0), seen
    assert all(up != 0.0 for up, _ in seen), f"reported down during its own restart: {seen}"
    after = samples(server)
    assert value(after, "phoenix_service_recovering", service="web") == 0.0
    assert value(after, "phoenix_service_up", service="web") == 1.0


def test_samples_refused_before_detection_are_counted_by_reason(server: PhoenixServer) -> None:
    now = datetime.now(UTC)

    def push(value: float, at: datetime) -> None:
        sample = {"metric": "queue_depth", "value": value, "timestamp": at.isoformat()}
        answer = server.post("/api/metrics", json={"service": "web", "samples": [sample]})
        assert answer.status_code == 202, answer.text

    push(3.0, now)
    push(3.0, now)  # a retried push: the same instant and value
    push(4.0, now - timedelta(seconds=10))  # older than the series' latest
    push(5.0, now - timedelta(seconds=5))
    found = samples(server)
    dropped = "phoenix_signal_samples_dropped_total"
    assert value(found, dropped, service="web", metric="queue_depth", reason="repeated") == 1.0
    assert value(found, dropped, service="web", metric="queue_depth", reason="late") == 2.0
    assert (
        dropped,
        frozenset({"service": "web", "metric": "queue_depth", "reason": "not_finite"}.items()),
    ) not in found
