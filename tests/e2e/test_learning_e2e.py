"""``GET /api/learning/stats`` over real HTTP after a real recovery: each finished attempt is
evidence for its service, failure type and strategy, and a false positive stops counting."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml


def test_a_recovery_becomes_evidence_and_a_false_positive_is_forgotten(tmp_path: Path) -> None:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
        empty = server.get("/api/learning/stats").json()
        assert empty["success"] is True and empty["estimates"] == []
        assert empty["policy"]["method"] == "thompson_sampling"
        assert empty["policy"]["candidates"]["service_down"][:2] == ["failover", "restart"]
        pid = server.live_pid("web")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        [summary] = wait_until(lambda: server.recoveries_of("web"), timeout=10)
        recovery = server.finished(summary["id"])
        assert recovery["status"] == "completed"
        # No history yet, and only restart available: the default table decided.
        assert recovery["decision"]["source"] == "default"

        # Evidence once the recovery has held for its stabilisation period (10 s).
        stats = wait_until(
            lambda: (
                found
                if (found := server.get("/api/learning/stats", params={"service": "web"}).json())[
                    "estimates"
                ]
                else None
            ),
            timeout=20,
            interval=0.2,
            message="the recovery learned",
        )
        [estimate] = stats["estimates"]
        assert estimate["service"] == "web" and estimate["failureType"] == "service_down"
        assert estimate["strategy"] == "restart"
        assert estimate["observations"] == 1 and estimate["successes"] == 1
        assert estimate["successRate"] == round((1.5 + 1) / (1.5 + 1 + 1), 4)
        assert 0 < estimate["timeToRecover"] <= recovery["duration"] + 0.01
        assert estimate["expectedSeconds"] > estimate["timeToRecover"]
        assert 0 < estimate["score"] <= 1
        [pooled] = stats["byFailureType"]
        assert pooled["service"] is None and pooled["observations"] == 1

        other = server.get("/api/learning/stats", params={"failureType": "high_load"}).json()
        assert other["estimates"] == [] and other["byFailureType"] == []
        unknown = server.get("/api/learning/stats", params={"service": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
        bad = server.get("/api/learning/stats", params={"failureType": "meltdown"})
        assert bad.status_code == 422 and bad.json()["error"]["details"]

        marked = server.post(f"/api/incidents/{recovery['incidentId']}/false-positive")
        assert marked.status_code == 200
        assert server.get("/api/learning/stats").json()["estimates"] == []
