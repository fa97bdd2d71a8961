"""End to end for versions: deploy through the API, known-good tracking, and rollback (the
automatic one after a failed deploy, and the operator's), on real example services behind
the real router with real client traffic."""

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
    service_file,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e

BROKEN = '["{python}", "-m", "examples.services.web", "--port", "{port}", "--fail-health"]'


def versioned(name: str, port: int, marks: Path, *, known_good_after: str = "1s") -> str:
    """Three versions: v1 declared known good, v2 (runs first), v3 whose health check fails.
    The hooks leave a file per run so the test can see they ran, and with which version."""
    record = "import pathlib, sys; pathlib.Path(sys.argv[1]).joinpath(sys.argv[2]).touch()"
    smoke = (
        "import sys, urllib.request; "
        "sys.exit(0 if urllib.request.urlopen(sys.argv[1]).status == 200 else 1)"
    )
    extra = f"""    replicas: 2
    known_good_after: {known_good_after}
    version: v2
    versions:
      - {{name: v1, known_good: true, env: {{SERVICE_VERSION: v1}}}}
      - {{name: v2, env: {{SERVICE_VERSION: v2}}}}
      - {{name: v3, command: {BROKEN}, env: {{SERVICE_VERSION: v3}}}}
    hooks:
      data_migration: ["{{python}}", "-c", "{record}", "{marks}", "migrated-{{version}}"]
      smoke: ["{{python}}", "-c", "{smoke}", "http://127.0.0.1:{port}/"]
"""
    return web_service_yaml(name, port, extra=extra).replace(
        "      failure_threshold: 2\n", "      failure_threshold: 2\n      startup_timeout: 3s\n"
    )


def deploy(server: PhoenixServer, name: str, version: str) -> httpx.Response:
    return server.post(f"/api/services/{name}/deploy", json={"version": version})


def deployments(server: PhoenixServer, name: str) -> list[dict[str, Any]]:
    response = server.get(f"/api/services/{name}/deployments")
    assert response.status_code == 200, response.text
    return list(response.json()["deployments"])


def deployment(server: PhoenixServer, name: str, deployment_id: str) -> dict[str, Any]:
    return next(d for d in deployments(server, name) if d["id"] == deployment_id)


def versions_running(server: PhoenixServer, name: str) -> list[str]:
    service = server.service(name)
    return sorted(i["version"] for i in service["instances"] if i["state"] == "running")


def served_version(port: int) -> str:
    return str(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["version"])


def test_a_failed_deploy_is_rolled_back_to_the_last_known_good_version_without_losing_requests(
    tmp_path: Path,
) -> None:
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    path = service_file(tmp_path, versioned("shop", port, marks))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("shop") == "healthy", timeout=30)
        assert server.service("shop")["currentVersion"] == "v2"
        wait_until(lambda: versions_running(server, "shop") == ["v2", "v2"], timeout=15)
        # v2 becomes known good once it has served healthily for known_good_after (1 s).
        wait_until(
            lambda: server.service("shop")["knownGoodVersions"] == ["v1", "v2"],
            timeout=15,
            message="v2 known good",
        )
        [initial] = deployments(server, "shop")
        assert initial["reason"] == "initial" and initial["knownGoodAt"] is not None

        with LoadGenerator(port, concurrency=2) as load:
            answer = deploy(server, "shop", "v3")
            assert answer.status_code == 202, answer.text
            dep = answer.json()["deployment"]
            assert (dep["version"], dep["previousVersion"], dep["status"]) == (
                "v3",
                "v2",
                "in_progress",
            )
            failed = wait_until(
                lambda: (d := deployment(server, "shop", dep["id"]))["status"] == "failed" and d,
                timeout=30,
                message="the v3 deploy to fail its validation",
            )
            # Clients kept being served by the remaining v2 replica meanwhile.
            assert served_version(port) == "v2"
            rollback = wait_until(
                lambda: next(
                    (r for r in server.recoveries_of("shop") if r["strategy"] == "rollback"),
                    None,
                ),
                timeout=15,
                message="the automatic rollback",
            )
            recovery = server.finished(rollback["id"], timeout=60)
        assert load.ok > 0
        assert load.failed == 0, load.bad
        failed = deployment(server, "shop", dep["id"])
        assert versions_running(server, "shop") == ["v2", "v2"]
        assert served_version(port) == "v2"
        assert server.service("shop")["currentVersion"] == "v2"

    steps = {s["name"]: s for s in failed["steps"]}
    first_deploy = next(s for s in failed["steps"] if s["action"] == "start_instances")
    assert first_deploy["name"].startswith("Deploy v3") and first_deploy["status"] == "completed"
    verify = next(s for s in failed["steps"] if s["action"] == "verify_health")
    assert verify["status"] in ("failed", "timed_out"), steps
    assert any(s["status"] == "skipped" for s in failed["steps"]), "later steps not run"
    assert "rolling back by" in failed["detail"]

    assert recovery["status"] == "completed", recovery
    assert recovery["outcome"] == "success"
    assert recovery["trigger"] == "automatic"
    assert recovery["decision"]["source"] == "default"
    assert "goes back to what ran before it (v2)" in recovery["decision"]["reason"]
    names = [s["name"] for s in recovery["steps"]]
    assert any(n.startswith("Deploy v2") for n in names), names
    assert names[-3:] == ["Data migration", "Validation: health", "Validation: smoke test"]
    assert all(s["status"] == "completed" for s in recovery["steps"]), recovery["steps"]
    assert recovery["metrics"]["requestsLost"] == 0
    assert recovery["metrics"]["dataIntegrity"] == "verified"
    assert (marks / "migrated-v2").exists()


def test_deploy_rolls_forward_and_an_operator_rolls_back_and_it_survives_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    path = service_file(tmp_path, versioned("shop", port, marks, known_good_after="1h"))
    data_dir = tmp_path / "var"
    with running_phoenix(path, data_dir) as server:
        wait_until(lambda: versions_running(server, "shop") == ["v2", "v2"], timeout=30)
        # v2 has not run for an hour: only v1 (declared) is known good.
        assert server.service("shop")["knownGoodVersions"] == ["v1"]
        unchanged = deploy(server, "shop", "v2")
        assert unchanged.status_code == 200 and unchanged.json()["changed"] is False

        with LoadGenerator(port, concurrency=2) as load:
            # Back to v1 on request: a rollback recovery picks the newest known-good older one.
            answer = server.post(
                "/api/recovery/trigger",
                json={"service": "shop", "strategy": "rollback", "reason": "bad release"},
            )
            assert answer.status_code == 202, answer.text
            recovery = server.finished(answer.json()["recoveryId"], timeout=60)
        assert recovery["status"] == "completed", recovery
        assert recovery["metrics"]["requestsLost"] == 0
        assert load.failed == 0, load.bad
        assert versions_running(server, "shop") == ["v1", "v1"]
        assert served_version(port) == "v1"
        assert (marks / "migrated-v1").exists()
        latest = deployments(server, "shop")[0]
        assert (latest["version"], latest["reason"], latest["recoveryId"]) == (
            "v1",
            "rollback",
            recovery["id"],
        )
        # Nothing older than v1: a second rollback is refused, saying why.
        refused = server.post(
            "/api/recovery/trigger", json={"service": "shop", "strategy": "rollback"}
        )
        assert refused.status_code == 422
        assert "oldest declared version" in refused.json()["error"]["message"]

        # And forward again to v2 by deploy (once the rollback's record is closed).
        wait_until(lambda: deployments(server, "shop")[0]["status"] == "completed", timeout=10)
        forward = deploy(server, "shop", "v2")
        assert forward.status_code == 202, forward.text
        dep_id = forward.json()["deployment"]["id"]
        done = wait_until(
            lambda: (d := deployment(server, "shop", dep_id))["status"] != "in_progress" and d,
            timeout=60,
        )
        assert done["status"] == "completed", done
        assert [s["status"] for s in done["steps"]] == ["completed"] * len(done["steps"])
        assert versions_running(server, "shop") == ["v2", "v2"]

    # A restarted Phoenix keeps running v2 (the last deployed), not what a fresh start would.
    with running_phoenix(path, data_dir) as server:
        wait_until(lambda: server.status_of("shop") == "healthy", timeout=30)
        assert server.service("shop")["currentVersion"] == "v2"
        wait_until(lambda: versions_running(server, "shop") == ["v2", "v2"], timeout=15)
        assert served_version(port) == "v2"
        assert [d["version"] for d in deployments(server, "shop")][:2] == ["v2", "v1"]


def test_deploy_refusals_name_the_problem(tmp_path: Path) -> None:
    port, plain_port = free_port(), free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    path = service_file(
        tmp_path, versioned("shop", port, marks), web_service_yaml("plain", plain_port)
    )
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("shop") == "healthy", timeout=30)
        cases = [
            (
                "shop",
                {"version": "v9"},
                422,
                "unknown version 'v9' of 'shop'; declared: v1, v2, v3",
            ),
            ("plain", {"version": "v1"}, 422, "service 'plain' declares no versions"),
            ("nope", {"version": "v1"}, 404, "unknown service 'nope'"),
            ("shop", {"version": ""}, 422, "version"),
            ("shop", {}, 422, "version: required"),
            ("shop", {"version": "v1", "now": True}, 422, "now: unknown field"),
        ]
        for name, body, status, fragment in cases:
            answer = server.post(f"/api/services/{name}/deploy", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert fragment in answer.json()["error"]["message"], answer.text
        bad = server.post("/api/services/shop/deploy", json={"version": "v9"}).json()
        assert [d["path"] for d in bad["error"]["details"]] == ["version"]
        assert server.get("/api/services/nope/deployments").status_code == 404

        # While a deploy runs, a recovery (and another deploy) of the service is a conflict.
        started = deploy(server, "shop", "v1")
        assert started.status_code == 202
        busy = server.post("/api/recovery/trigger", json={"service": "shop", "strategy": "restart"})
        assert busy.status_code == 409 and "is being deployed" in busy.json()["error"]["message"]
        again = deploy(server, "shop", "v2")
        assert again.status_code == 409, again.text
        dep_id = started.json()["deployment"]["id"]
        wait_until(lambda: deployment(server, "shop", dep_id)["status"] == "completed", timeout=60)


def test_a_rollback_that_does_not_verify_is_followed_by_restarts_then_phoenix_gives_up(
    tmp_path: Path,
) -> None:
    """v1 (declared known good) turns out broken: the rollback to it fails, and the next
    attempts restart v1 rather than rolling back further; nothing in Phoenix dies."""
    port = free_port()
    extra = f"""    version: v2
    versions:
      - {{name: v1, known_good: true, command: {BROKEN}}}
      - {{name: v2}}
    recovery: {{backoff: {{initial: 200ms}}}}
"""
    entry = web_service_yaml("shop", port, extra=extra).replace(
        "      failure_threshold: 2\n", "      failure_threshold: 2\n      startup_timeout: 2s\n"
    )
    with running_phoenix(service_file(tmp_path, entry), tmp_path / "var") as server:
        wait_until(lambda: server.status_of("shop") == "healthy", timeout=30)
        answer = server.post(
            "/api/recovery/trigger", json={"service": "shop", "strategy": "rollback"}
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["incidentId"] is None, "a healthy service: maintenance"
        first = server.finished(answer.json()["recoveryId"], timeout=30)
        assert first["status"] == "failed"

        def attempts() -> list[dict[str, Any]]:
            items = server.recoveries_of("shop")
            return sorted(items, key=lambda r: r["attempt"])

        done = wait_until(
            lambda: (a := attempts()) and len(a) == 3 and a[-1]["status"] == "failed" and a,
            timeout=60,
            message="three attempts",
        )
        assert [a["strategy"] for a in done] == ["rollback", "restart", "restart"]
        # Phoenix gave up: the service is left to a person, with an unresolved incident.
        wait_until(
            lambda: any(
                i["service"] == "shop" and i["status"] == "unresolved"
                for i in server.get("/api/incidents").json()["incidents"]
            ),
            timeout=10,
        )
        assert not any("died" in w for w in server.get("/health").json()["warnings"])
        assert server.service("shop")["currentVersion"] == "v1"
