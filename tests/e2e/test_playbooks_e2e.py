"""Playbooks end to end on real example services: the seed's playbook fired by a real
error-rate burst, the condition path where the first step fails and the second runs, and a
dry run that acts on nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    LoadGenerator,
    PhoenixServer,
    free_port,
    running_phoenix,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e

SERVICE = """    detection: {error_rate: {above: 0.5, for: 2s}}
    actions:
      restart_connection_pool: {http: {method: POST, url: "http://127.0.0.1:{port}/admin/pool/restart"}}
      flush_cache: {http: {method: POST, url: "http://127.0.0.1:{port}/admin/no-such-thing"}}
"""

SEED = {
    "name": "Database Connection Recovery",
    "service": "azora-education",
    "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 1}],
    "steps": [
        {"action": "restart_connection_pool", "timeout": 30},
        {"action": "restart_service", "timeout": 60, "condition": "if_previous_failed"},
    ],
}


def config(tmp_path: Path) -> Path:
    path = tmp_path / "phoenix.yaml"
    path.write_text("services:" + web_service_yaml("azora-education", free_port(), extra=SERVICE))
    return path


def create(server: PhoenixServer, body: dict[str, Any]) -> str:
    answer = server.post("/api/playbooks", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["playbookId"])


def test_the_seeds_playbook_answers_a_real_error_burst(tmp_path: Path) -> None:
    with running_phoenix(config(tmp_path), tmp_path / "var") as server:
        wait_until(lambda: server.status_of("azora-education") == "healthy", timeout=20)
        playbook_id = create(server, SEED)
        pid = server.live_pid("azora-education")
        public = int(server.service("azora-education")["port"])
        with LoadGenerator(public, concurrency=2, path="/work"):
            httpx.post(
                f"http://127.0.0.1:{server.instance_port('azora-education')}/admin/errors",
                json={"rate": 1},
            )
            recovery_id = wait_until(
                lambda: next(iter(server.recoveries_of("azora-education")), {}).get("id"),
                timeout=30,
                message="a recovery",
            )
            recovery = server.finished(recovery_id, timeout=60)
        assert recovery["status"] == "completed" and recovery["outcome"] == "success", recovery
        assert recovery["decision"]["source"] == "playbook"
        assert (recovery["playbookId"], recovery["playbookVersion"]) == (playbook_id, 1)
        steps = recovery["steps"]
        assert [s["name"] for s in steps] == [
            "Restart connection pool",
            "Restart service",
            "Outcome: health verification",
        ]
        assert steps[0]["status"] == "completed" and "→ 200" in steps[0]["detail"]
        assert steps[1]["status"] == "skipped"
        assert "condition if_previous_failed not met" in steps[1]["detail"]
        assert steps[2]["status"] == "completed"
        assert server.live_pid("azora-education") == pid, "the pool restart sufficed"
        incident = server.get(f"/api/incidents/{recovery['incidentId']}").json()["incident"]
        assert incident["failureType"] == "high_error_rate"


def test_when_the_first_step_fails_the_second_runs(tmp_path: Path) -> None:
    with running_phoenix(config(tmp_path), tmp_path / "var") as server:
        wait_until(lambda: server.status_of("azora-education") == "healthy", timeout=20)
        playbook_id = create(
            server,
            {
                "name": "Cache then restart",
                "service": "azora-education",
                "triggers": [{"type": "manual"}],
                "steps": [
                    {"action": "flush_cache", "timeout": 5},
                    {"action": "restart_service", "condition": "if_previous_failed"},
                    {"action": "notify", "message": "restarted", "condition": "if_healthy"},
                ],
            },
        )
        pid = server.live_pid("azora-education")
        answer = server.post(f"/api/playbooks/{playbook_id}/execute", json={})
        assert answer.status_code == 202, answer.text
        assert answer.json()["decision"]["source"] == "playbook"
        recovery = server.finished(answer.json()["recoveryId"], timeout=60)
        steps = recovery["steps"]
        assert steps[0]["status"] == "failed" and "→ 404" in steps[0]["detail"]
        assert steps[1]["status"] == "completed" and steps[1]["detail"].startswith("restart:")
        assert steps[2]["status"] == "completed" and steps[2]["detail"] == "noted: restarted"
        assert recovery["status"] == "completed" and recovery["outcome"] == "success"
        assert recovery["trigger"] == "playbook", "run by /execute: a playbook run"
        assert server.live_pid("azora-education") != pid


def test_a_dry_run_says_what_would_happen_and_does_nothing(tmp_path: Path) -> None:
    with running_phoenix(config(tmp_path), tmp_path / "var") as server:
        wait_until(lambda: server.status_of("azora-education") == "healthy", timeout=20)
        playbook_id = create(server, SEED)
        pid = server.live_pid("azora-education")
        answer = server.post(f"/api/playbooks/{playbook_id}/dry-run", json={})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["service"], body["serviceStatus"], body["strategy"]) == (
            "azora-education",
            "healthy",
            "restart",
        )
        first, second, verdict = body["steps"]
        assert (first["action"], first["would"]) == ("http_request", "run")
        assert (second["would"], second["plan"]) == (
            "depends",
            ["Graceful shutdown", "Service restart", "Health verification", "Traffic restoration"],
        )
        assert "if_previous_failed: on how step 1 ends" == second["why"]
        assert verdict["name"] == "Outcome: health verification"
        assert server.live_pid("azora-education") == pid
        assert server.recoveries_of("azora-education") == []

        refused = server.post(f"/api/playbooks/{playbook_id}/dry-run", json={"service": "x"})
        assert refused.status_code == 422
        assert "bound to service 'azora-education'" in refused.json()["error"]["message"]
        server.client.put(f"/api/playbooks/{playbook_id}", json={"status": "disabled"})
        disabled = server.post(f"/api/playbooks/{playbook_id}/execute", json={})
        assert disabled.status_code == 409 and "disabled" in disabled.json()["error"]["message"]
        assert server.post("/api/playbooks/pb-000000000000/execute", json={}).status_code == 404


def test_a_playbook_trigger_fires_on_a_signal_the_default_rules_tolerate(tmp_path: Path) -> None:
    with running_phoenix(config(tmp_path), tmp_path / "var") as server:
        wait_until(lambda: server.status_of("azora-education") == "healthy", timeout=20)
        strict = {**SEED, "name": "Strict errors"}
        strict["triggers"] = [{"type": "error_rate", "threshold": 0.1, "duration": 2}]
        playbook_id = create(server, strict)
        public = int(server.service("azora-education")["port"])
        with LoadGenerator(public, concurrency=2, path="/work"):
            # 30% errors: under the service's own rule (50%), over the playbook's (10%).
            httpx.post(
                f"http://127.0.0.1:{server.instance_port('azora-education')}/admin/errors",
                json={"rate": 0.3},
            )
            recovery_id = wait_until(
                lambda: next(iter(server.recoveries_of("azora-education")), {}).get("id"),
                timeout=30,
                message="the playbook to fire",
            )
            recovery = server.finished(recovery_id, timeout=60)
        assert server.status_of("azora-education") == "healthy"
        assert recovery["trigger"] == "playbook" and recovery["playbookId"] == playbook_id
        assert recovery["status"] == "completed", recovery
        assert recovery["steps"][0]["status"] == "completed"
        incident = server.get(f"/api/incidents/{recovery['incidentId']}").json()["incident"]
        assert incident["failureType"] == "high_error_rate"
        assert "error_rate >= 0.1 for 2s" in incident["summary"]


FILE_PLAYBOOK = """name: Touch a mark
service: azora-education
description: {description}
triggers: [{{type: manual}}]
steps:
  - action: run_command
    command: ["{{python}}", "-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()", "{mark}"]
"""


def file_playbooks(server: PhoenixServer) -> list[dict[str, Any]]:
    listed = server.get("/api/playbooks").json()["playbooks"]
    return [p for p in listed if p["source"] == "file"]


def test_playbooks_from_files_are_loaded_reloaded_and_kept_when_broken(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    mark = tmp_path / "mark"
    source = folder / "touch.yaml"
    source.write_text(FILE_PLAYBOOK.format(description="first", mark=mark))
    env = {"PHOENIX_PLAYBOOKS_DIR": str(folder)}
    with running_phoenix(config(tmp_path), tmp_path / "var", env=env) as server:
        wait_until(lambda: server.status_of("azora-education") == "healthy", timeout=20)
        [loaded] = file_playbooks(server)
        assert (loaded["name"], loaded["version"], loaded["description"]) == (
            "Touch a mark",
            1,
            "first",
        )
        # run_command is allowed here: the file is the operator's.
        answer = server.post(f"/api/playbooks/{loaded['id']}/execute", json={})
        assert answer.status_code == 202, answer.text
        recovery = server.finished(answer.json()["recoveryId"], timeout=30)
        assert recovery["steps"][0]["status"] == "completed", recovery
        assert mark.exists()

        source.write_text(FILE_PLAYBOOK.format(description="second", mark=mark))
        changed = wait_until(
            lambda: (p := file_playbooks(server)) and p[0]["version"] == 2 and p[0],
            timeout=10,
            message="the change reloaded",
        )
        assert changed["id"] == loaded["id"] and changed["description"] == "second"

        source.write_text("name: Touch a mark\nsteps: [{action: teleport}]\n")
        warnings = wait_until(
            lambda: [w for w in server.get("/health").json()["warnings"] if "touch.yaml" in w],
            timeout=10,
            message="the broken file reported",
        )
        assert "triggers" in warnings[0] and "teleport" in warnings[0]
        assert file_playbooks(server)[0]["description"] == "second", "previous version kept"

        edit = server.client.put(f"/api/playbooks/{loaded['id']}", json={"priority": 3})
        assert edit.status_code == 409 and "change or remove the file" in edit.text

        source.unlink()
        wait_until(lambda: file_playbooks(server) == [], timeout=10, message="removed")
