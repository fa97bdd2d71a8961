"""The REST contract over real HTTP against a real ``phoenix serve``: shapes, statuses, errors.

One server for the module (its services are real processes); each test leaves it as it
found it. Shapes follow the seed and API.md: camelCase, ISO times with milliseconds,
the error envelope with ``details`` paths.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PhoenixServer, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e  # starts real processes

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RESTART_POOL = """    actions:
      restart_connection_pool: {http: {method: POST, url: "http://127.0.0.1:{port}/admin/pool/restart"}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("api")
    config = root / "phoenix.yaml"
    config.write_text(
        "services:"
        + web_service_yaml("azora-auth", free_port())
        + web_service_yaml("azora-education", free_port(), extra=RESTART_POOL)
        + f"""
  - name: ledger
    platform: external
    health: {{http: "http://127.0.0.1:{free_port()}/health", interval: 1s, timeout: 200ms}}
"""
    )
    phoenix = PhoenixServer(config, root / "var").start()
    wait_until(
        lambda: (
            phoenix.status_of("azora-auth") == "healthy"
            and phoenix.status_of("azora-education") == "healthy"
        ),
        timeout=20,
        message="services healthy",
    )
    yield phoenix
    phoenix.close()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    error = body["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code:
        assert error["code"] == code
    for detail in error["details"]:
        assert set(detail) == {"path", "message"}
    return body


def test_phoenix_health(server: PhoenixServer) -> None:
    body = server.get("/health").json()
    assert body["status"] == "healthy" and body["service"] == "phoenix-server"
    assert body["monitoredServices"] == 3
    assert isinstance(body["activeRecoveries"], int) and isinstance(body["playbooksActive"], int)
    assert ISO_MS.match(body["timestamp"]) and body["warnings"] == []


def test_services_health_has_the_seed_fields(server: PhoenixServer) -> None:
    body = server.get("/api/health/services").json()
    assert body["success"] is True and body["total"] == 3
    auth = next(s for s in body["services"] if s["name"] == "azora-auth")
    assert auth["status"] == "healthy" and 0 <= auth["uptime"] <= 100
    assert ISO_MS.match(auth["lastCheck"])
    assert set(auth["metrics"]) == {"errorRate", "latency", "latencyP99", "throughput"}
    assert auth["metrics"]["latency"] > 0, "milliseconds (p50)"

    def traffic_known() -> dict[str, Any] | None:
        services = server.get("/api/health/services").json()["services"]
        metrics = next(s for s in services if s["name"] == "azora-auth")["metrics"]
        return metrics if metrics["throughput"] is not None else None

    metrics = wait_until(traffic_known, timeout=10, message="the router's counts")
    assert metrics["errorRate"] == 0.0, "from the router: every request answered"
    ledger = next(s for s in body["services"] if s["name"] == "ledger")
    wait_until(lambda: server.status_of("ledger") == "unhealthy", timeout=10)
    assert ledger["platform"] == "external"


def test_services_list_configuration_and_instances(server: PhoenixServer) -> None:
    body = server.get("/api/services").json()
    assert [s["name"] for s in body["services"]] == ["azora-auth", "azora-education", "ledger"]
    auth = body["services"][0]
    assert auth["platform"] == "local" and auth["strategies"] == ["circuit_break", "restart"]
    assert auth["health"]["type"] == "http" and auth["health"]["interval"] == 0.5
    [instance] = auth["instances"]
    assert set(instance) >= {"id", "pid", "port", "version", "state", "startedAt"}
    assert instance["state"] == "running" and instance["pid"] > 0
    assert auth["routed"] is True, "a local service with a port is behind Phoenix's router"
    assert instance["port"] != auth["port"], "the instance listens on a port of its own"
    assert ISO_MS.match(instance["startedAt"])
    assert body["services"][1]["actions"] == ["restart_connection_pool"]
    assert body["services"][2]["instances"] == [] and body["services"][2]["strategies"] == []
    one = server.get("/api/services/azora-auth").json()["service"]
    assert one["name"] == "azora-auth"
    missing = assert_error(server.get("/api/services/nope"), 404, "not_found")
    assert "nope" in missing["error"]["message"]


def test_trigger_status_and_history(server: PhoenixServer) -> None:
    response = server.post(
        "/api/recovery/trigger",
        json={
            "service": "azora-auth",
            "strategy": "restart",
            "reason": "High error rate detected",
            "force": False,
        },
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["success"] is True and started["recoveryId"].startswith("rec-")
    assert started["status"] == "in_progress" and started["strategy"] == "restart"
    assert isinstance(started["estimatedDuration"], int | float)
    assert ISO_MS.match(started["startTime"])
    assert started["decision"]["source"] == "manual"

    recovery = server.finished(started["recoveryId"])
    assert recovery["status"] == "completed" and recovery["outcome"] == "success"
    assert recovery["service"] == "azora-auth" and recovery["strategy"] == "restart"
    assert ISO_MS.match(recovery["startTime"]) and ISO_MS.match(recovery["endTime"])
    assert recovery["duration"] > 0 and recovery["attempt"] == 1
    assert recovery["trigger"] == "manual"
    assert recovery["incidentId"] is None, "restarting a healthy service is no incident"
    assert [(s["name"], s["status"]) for s in recovery["steps"]] == [
        ("Graceful shutdown", "completed"),
        ("Service restart", "completed"),
        ("Health verification", "completed"),
        ("Traffic restoration", "completed"),
    ]
    assert all(isinstance(s["duration"], float) for s in recovery["steps"])
    metrics = recovery["metrics"]
    assert metrics["downtime"] > 0 and metrics["dataIntegrity"] == "unverified"
    assert "requestsLost" in metrics
    assert set(recovery["decision"]) == {"strategy", "source", "reason", "candidates"}

    history = server.get("/api/recovery/history", params={"service": "azora-auth"}).json()
    assert history["total"] >= 1 and history["limit"] == 50
    item = history["recoveries"][0]
    assert item["id"] == started["recoveryId"]
    assert set(item) >= {"id", "service", "strategy", "status", "duration", "outcome", "timestamp"}
    completed = server.get("/api/recovery/history", params={"status": "completed"}).json()
    assert all(r["status"] == "completed" for r in completed["recoveries"])
    page = server.get("/api/recovery/history", params={"limit": 1, "offset": 0}).json()
    assert len(page["recoveries"]) == 1 and page["total"] >= 1


def test_newest_first_and_paging(server: PhoenixServer) -> None:
    ids = []
    for _ in range(2):
        response = server.post("/api/recovery/trigger", json={"service": "azora-education"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["recoveryId"])
        server.finished(ids[-1])
    history = server.get("/api/recovery/history", params={"service": "azora-education"}).json()
    assert [r["id"] for r in history["recoveries"][:2]] == ids[::-1]
    second = server.get(
        "/api/recovery/history", params={"service": "azora-education", "limit": 1, "offset": 1}
    ).json()
    assert [r["id"] for r in second["recoveries"]] == [ids[0]]


def test_a_second_trigger_conflicts_unless_forced(server: PhoenixServer) -> None:
    first = server.post(
        "/api/recovery/trigger", json={"service": "azora-auth", "strategy": "restart"}
    ).json()
    conflict = assert_error(
        server.post("/api/recovery/trigger", json={"service": "azora-auth"}),
        409,
        "recovery_in_progress",
    )
    assert conflict["recoveryId"] == first["recoveryId"]
    assert first["recoveryId"] in conflict["error"]["message"]
    forced = server.post("/api/recovery/trigger", json={"service": "azora-auth", "force": True})
    assert forced.status_code == 202
    assert server.finished(first["recoveryId"])["status"] in ("cancelled", "completed")
    assert server.finished(forced.json()["recoveryId"])["status"] == "completed"


def test_concurrent_triggers_never_run_two_recoveries_at_once(server: PhoenixServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {"service": "azora-education", "strategy": "restart", "reason": "race"}

    def trigger(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post("/api/recovery/trigger", json=body)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(trigger, range(16)))
    assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
    started = [a.json()["recoveryId"] for a in answers if a.status_code == 202]
    refused = [a.json()["recoveryId"] for a in answers if a.status_code == 409]
    assert started and refused, "some raced in, the others were refused"
    # Each refusal names a recovery that was running; the accepted ones never overlapped
    # (a later one may start once the earlier has ended: a restart takes ~0.1 s).
    assert set(refused) <= set(started)
    runs = sorted(
        (server.finished(recovery_id) for recovery_id in started), key=lambda r: r["startTime"]
    )
    assert all(r["status"] == "completed" for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert earlier["endTime"] <= later["startTime"], (earlier, later)


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"service": "nope"}, 404, "not_found", "unknown service 'nope'"),
        (
            {"service": "azora-auth", "strategy": "failover"},
            422,
            "unsupported_strategy",
            "service 'azora-auth' declares no backup (add backup: {mode: hot}",
        ),
        (
            {"service": "azora-auth", "strategy": "rollback"},
            422,
            "unsupported_strategy",
            "declares no earlier version to roll back to (add a versions: list",
        ),
        ({"service": "ledger"}, 422, "unsupported_strategy", "cannot act on service 'ledger'"),
        ({"service": "azora-auth", "strategy": "reboot"}, 422, "invalid", "strategy"),
        ({"service": "azora-auth", "force": "yes"}, 422, "invalid", "force"),
        ({"service": "azora-auth", "colour": "red"}, 422, "invalid", "colour: unknown field"),
        ({"strategy": "restart"}, 422, "invalid", "service: required"),
        ({"service": ""}, 422, "invalid", "service"),
    ],
)
def test_trigger_refusals(
    server: PhoenixServer, body: dict[str, Any], status: int, code: str, fragment: str
) -> None:
    error = assert_error(server.post("/api/recovery/trigger", json=body), status, code)
    assert fragment in error["error"]["message"]


def test_unsupported_strategy_names_the_field(server: PhoenixServer) -> None:
    error = assert_error(
        server.post("/api/recovery/trigger", json={"service": "azora-auth", "strategy": "reboot"}),
        422,
    )
    assert [d["path"] for d in error["error"]["details"]] == ["strategy"]
    assert "restart" in error["error"]["details"][0]["message"]


def test_malformed_bodies(server: PhoenixServer) -> None:
    post = server.client.post
    assert_error(
        post(
            "/api/recovery/trigger",
            content=b'{"service":',
            headers={"content-type": "application/json"},
        ),
        400,
        "malformed",
    )
    assert_error(post("/api/recovery/trigger", json=["azora-auth"]), 400, "malformed")
    assert_error(post("/api/recovery/trigger"), 400, "malformed")
    huge = {"service": "azora-auth", "reason": "x" * (2 * 1024 * 1024)}
    assert_error(post("/api/recovery/trigger", json=huge), 413, "too_large")


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"status": "exploded"}, {"strategy": "pray"}],
)
def test_history_refuses_bad_queries(server: PhoenixServer, params: dict[str, Any]) -> None:
    error = assert_error(server.get("/api/recovery/history", params=params), 422, "invalid")
    assert error["error"]["details"][0]["path"] == next(iter(params))


@pytest.mark.parametrize("recovery_id", ["rec-000000000000", "nonsense", "rec%20with%20spaces"])
def test_unknown_recovery_is_404_naming_it(server: PhoenixServer, recovery_id: str) -> None:
    error = assert_error(server.get(f"/api/recovery/status/{recovery_id}"), 404, "not_found")
    assert "no recovery with id" in error["error"]["message"]


def test_unknown_routes_and_methods_use_the_envelope(server: PhoenixServer) -> None:
    assert_error(server.get("/api/nothing-here"), 404, "not_found")
    assert_error(server.client.delete("/api/recovery/history"), 405, "method_not_allowed")


def test_openapi_and_docs(server: PhoenixServer) -> None:
    spec = server.get("/openapi.json").json()
    for path in (
        "/health",
        "/api/health/services",
        "/api/recovery/trigger",
        "/api/recovery/status/{recovery_id}",
        "/api/recovery/history",
        "/api/services",
        "/api/playbooks",
        "/api/playbooks/{playbook_id}",
    ):
        assert path in spec["paths"], path
    assert server.get("/docs").status_code == 200


SEED_PLAYBOOK = {
    "name": "Database Connection Recovery",
    "service": "azora-education",
    "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60}],
    "steps": [
        {"action": "restart_connection_pool", "timeout": 30},
        {"action": "restart_service", "timeout": 60, "condition": "if_previous_failed"},
    ],
}


def test_playbook_lifecycle(server: PhoenixServer) -> None:
    created = server.post("/api/playbooks", json=SEED_PLAYBOOK)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["success"] is True and body["status"] == "active"
    playbook_id = body["playbookId"]
    assert playbook_id.startswith("pb-")
    try:
        stored = server.get(f"/api/playbooks/{playbook_id}").json()["playbook"]
        for key, value in SEED_PLAYBOOK.items():
            if key != "steps":
                assert stored[key] == value, key
        assert [s["action"] for s in stored["steps"]] == [
            "restart_connection_pool",
            "restart_service",
        ]
        assert stored["steps"][1]["condition"] == "if_previous_failed" and stored["version"] == 1
        assert server.get("/health").json()["playbooksActive"] >= 1
        listed = server.get("/api/playbooks").json()
        assert playbook_id in [p["id"] for p in listed["playbooks"]]

        updated = server.client.put(f"/api/playbooks/{playbook_id}", json={"status": "disabled"})
        assert updated.status_code == 200, updated.text
        after = updated.json()["playbook"]
        assert after["status"] == "disabled" and after["version"] == 2
        assert (
            after["updatedAt"] >= stored["updatedAt"] and after["createdAt"] == stored["createdAt"]
        )
        round_trip = server.client.put(f"/api/playbooks/{playbook_id}", json=after)
        assert round_trip.status_code == 200 and round_trip.json()["playbook"]["version"] == 3
        stale = server.client.put(
            f"/api/playbooks/{playbook_id}", json={**after, "status": "active"}
        )
        assert_error(stale, 409, "conflict")
        assert_error(server.post("/api/playbooks", json=SEED_PLAYBOOK), 409, "conflict")
    finally:
        deleted = server.client.delete(f"/api/playbooks/{playbook_id}")
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert_error(server.get(f"/api/playbooks/{playbook_id}"), 404, "not_found")
    assert_error(server.client.delete(f"/api/playbooks/{playbook_id}"), 404, "not_found")


def test_playbook_validation_names_every_problem(server: PhoenixServer) -> None:
    bad = {
        **SEED_PLAYBOOK,
        "name": "Broken",
        "triggers": [{"type": "error_rate", "threshold": 2}],
        "steps": [
            {"action": "restart_connection_pool", "timeout": 30},
            {"action": "restart_service", "timeout": 60, "condition": "if_prev_failed"},
            {"action": "run_command", "command": ["rm", "-rf", "/"]},
            {"action": "teleport", "timeout": 100000},
        ],
    }
    error = assert_error(server.post("/api/playbooks", json=bad), 422, "invalid")
    paths = {d["path"]: d["message"] for d in error["error"]["details"]}
    assert "steps[1].condition" in paths
    assert "if_previous_failed" in paths["steps[1].condition"], "lists what is expected"
    semantic = assert_error(
        server.post("/api/playbooks", json={**bad, "steps": bad["steps"][2:]}), 422
    )
    messages = {d["path"]: d["message"] for d in semantic["error"]["details"]}
    assert "only in playbooks loaded from the operator's files" in messages["steps[0].action"]
    assert "unknown action 'teleport'" in messages["steps[1].action"]
    assert "exceeds RECOVERY_TIMEOUT" in messages["steps[1].timeout"]
    assert "triggers[0].threshold" in messages


def test_incidents_and_false_positive(server: PhoenixServer) -> None:
    wait_until(
        lambda: server.get("/api/incidents", params={"service": "ledger"}).json()["total"],
        timeout=10,
    )
    incident = server.get("/api/incidents", params={"service": "ledger"}).json()["incidents"][0]
    assert incident["failureType"] == "service_down" and incident["status"] == "unresolved"
    assert "only monitor" in incident["summary"]
    detail = server.get(f"/api/incidents/{incident['id']}").json()["incident"]
    assert detail["recoveries"] == [] and ISO_MS.match(detail["detectedAt"])
    before = server.get("/api/incidents", params={"service": "ledger"}).json()
    assert before["falsePositives"] == 0 and before["falsePositiveRate"] == 0.0
    marked = server.post(f"/api/incidents/{incident['id']}/false-positive").json()
    assert marked["incident"]["falsePositive"] is True
    after = server.get("/api/incidents", params={"service": "ledger"}).json()
    assert after["falsePositives"] == 1
    assert after["falsePositiveRate"] == round(1 / after["total"], 4)
    assert_error(server.get("/api/incidents/inc-000000000000"), 404, "not_found")
    assert_error(server.post("/api/incidents/inc-000000000000/false-positive"), 404, "not_found")


def test_config_path_is_reported_back(server: PhoenixServer) -> None:
    assert Path(server.config).exists()


def test_pushed_metrics_join_the_services_signals(server: PhoenixServer) -> None:
    rng = random.Random(3)
    samples = [{"metric": "queue_depth", "value": rng.gauss(20, 2)} for _ in range(1000)]
    samples.append({"metric": "queue_depth", "value": 5000.0})
    answer = server.post("/api/metrics", json={"service": "ledger", "samples": samples})
    assert answer.status_code == 202 and answer.json() == {"success": True, "accepted": 1001}

    def ledger() -> dict[str, Any] | None:
        # The listing is a snapshot up to 100 ms old: wait for one taken after the push.
        services = server.get("/api/health/services").json()["services"]
        found: dict[str, Any] = next(s for s in services if s["name"] == "ledger")
        return found if "queue_depth" in found["anomalyScores"] else None

    shown = wait_until(ledger, timeout=5)
    assert shown["anomalyScores"]["queue_depth"] > 0.5, "a value far from all before it"
    # Why: the sample that broke it, its score and the usual range, and the score over time.
    why = shown["surprises"]["queue_depth"]
    assert why["value"] == 5000.0 and why["score"] == shown["anomalyScores"]["queue_depth"]
    low, high = why["usual"]
    assert 14.0 < low < 16.5 and 23.5 < high < 26.0, "20 +- 2.33 sd: the middle 98 %"
    history = shown["anomalyHistory"]["queue_depth"]
    assert len(history) == 30 and history[-1] >= 0.5 and max(history[:-2]) == 0.0
    quiet = [name for name, score in shown["anomalyScores"].items() if score == 0.0]
    assert not set(quiet) & set(shown["anomalyHistory"]), "quiet series are left out"
    assert shown["samplesDropped"] == {}


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"service": "nope", "samples": [{"metric": "x", "value": 1}]}, 404, None),
        ({"service": "ledger", "samples": []}, 422, "samples"),
        (
            {"service": "ledger", "samples": [{"metric": "Bad Name", "value": 1}]},
            422,
            "samples[0].metric",
        ),
        (
            {"service": "ledger", "samples": [{"metric": "x", "value": "NaN"}]},
            422,
            "samples[0].value",
        ),
        (
            {
                "service": "ledger",
                "samples": [{"metric": "x", "value": 1, "timestamp": "2001-01-01T00:00:00Z"}],
            },
            422,
            "samples[0].timestamp",
        ),
        (
            {
                "service": "ledger",
                "samples": [{"metric": "x", "value": 1, "timestamp": "2999-01-01T00:00:00Z"}],
            },
            422,
            "samples[0].timestamp",
        ),
    ],
)
def test_pushed_metrics_refusals_name_the_problem(
    server: PhoenixServer, body: dict[str, Any], status: int, path: str | None
) -> None:
    answer = server.post("/api/metrics", json=body)
    assert answer.status_code == status, answer.text
    if path is not None:
        assert path in [d["path"] for d in answer.json()["error"]["details"]]
