"""End to end for graceful degradation: a fallback service answers while a service cannot,
and a service failing because its dependency fails is shown degraded and left alone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support import (
    REPO,
    free_port,
    running_phoenix,
    service_file,
    wait_until,
    web_service_yaml,
)

pytestmark = pytest.mark.e2e


def test_a_fallback_service_answers_while_the_circuit_is_open(tmp_path: Path) -> None:
    port, spare_port = free_port(), free_port()
    fallback = f"""    fallback: {{upstream: "127.0.0.1:{spare_port}", status: 503, body: static}}
    circuit: {{open_for: 30s, queue_timeout: 100ms}}
"""
    path = service_file(
        tmp_path,
        web_service_yaml("catalog", port, extra=fallback),
        web_service_yaml("catalog-static", spare_port),
    )
    with running_phoenix(path, tmp_path / "var") as server:
        for name in ("catalog", "catalog-static"):
            wait_until(lambda name=name: server.status_of(name) == "healthy", timeout=20)
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["name"] == "catalog"
        answer = server.post(
            "/api/recovery/trigger", json={"service": "catalog", "strategy": "circuit_break"}
        )
        assert answer.status_code == 202, answer.text
        wait_until(lambda: server.health_of("catalog")["circuit"] == "open", timeout=10)
        # Clients get the fallback service's answers, not errors.
        served = httpx.get(f"http://127.0.0.1:{port}/")
        assert served.status_code == 200 and served.json()["name"] == "catalog-static"
        shown = server.health_of("catalog")
        assert (shown["status"], shown["fallback"]) == ("degraded", True)
        # The fallback service down too: the static answer.
        spare = server.service("catalog-static")
        server.post(
            "/api/recovery/trigger",
            json={"service": "catalog-static", "strategy": "circuit_break"},
        )
        wait_until(lambda: server.health_of("catalog-static")["circuit"] == "open", timeout=10)
        assert spare["routed"]
        static = httpx.get(f"http://127.0.0.1:{port}/")
        # catalog's router forwards to catalog-static's router, which answers its own
        # fallback (a plain 503): either way the client gets a fast answer, not a hang.
        assert static.status_code == 503


def test_a_service_failing_because_its_dependency_fails_is_degraded_and_not_restarted(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "db-is-broken"
    check = (
        f'["{{python}}", "-c", "import os, sys; sys.exit(os.path.exists(sys.argv[1]))", "{flag}"]'
    )
    db = f"""
  - name: db
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    health: {{command: {check}, interval: 0.5s, timeout: 1s, failure_threshold: 2,
              startup_timeout: 2s}}
    stop: {{grace: 2s}}
    recovery: {{backoff: {{initial: 500ms}}}}
    circuit: {{open_for: 1s, steps: [100], hold: 0s}}
"""
    app = f"""
  - name: app
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    depends_on: [db]
    health: {{command: {check}, interval: 0.3s, timeout: 1s, failure_threshold: 1}}
    stop: {{grace: 2s}}
"""
    path = service_file(tmp_path, db, app)
    with running_phoenix(path, tmp_path / "var") as server:
        for name in ("db", "app"):
            wait_until(lambda name=name: server.status_of(name) == "healthy", timeout=20)
        app_pid = server.live_pid("app")
        flag.touch()  # db's checks fail, and so do app's, because of db
        shown = wait_until(
            lambda: (h := server.health_of("app"))["waitingOn"] == "db" and h,
            timeout=15,
            message="app shown waiting on db",
        )
        assert shown["status"] == "degraded" and "its dependency db is failing" in shown["reason"]
        # Phoenix tries to recover db (and gives up, since its checks keep failing), and
        # meanwhile decides, past the time db's checks need, that app's failure is db's.
        wait_until(
            lambda: any(
                i["status"] == "unresolved"
                for i in server.get("/api/incidents").json()["incidents"]
                if i["service"] == "db"
            ),
            timeout=30,
            message="Phoenix to give up on db",
        )
        wait_until(lambda: "leaving app alone" in server.log(), timeout=10)
        assert server.health_of("db")["status"] == "unhealthy"
        assert server.health_of("app")["waitingOn"] == "db"
        flag.unlink()  # db is back; app's own checks pass again without any action on it
        wait_until(lambda: server.status_of("db") == "healthy", timeout=30)
        wait_until(lambda: server.health_of("app")["status"] == "healthy", timeout=15)
        assert server.live_pid("app") == app_pid, "app was not restarted"
        assert server.recoveries_of("app") == []
        incidents = server.get("/api/incidents").json()["incidents"]
        assert {i["service"] for i in incidents} == {"db"}
