"""Failures reported from outside, over real HTTP: Alertmanager's webhook (payloads in its
documented version-4 shape) and ``POST /api/events`` from chaos tooling. Each opens an
incident, runs an ``alert``-triggered playbook or the policy, is deduplicated when sent
again, and its resolution closes what it opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import PhoenixServer, free_port, running_phoenix, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

SERVICE = """    actions:
      restart_connection_pool: {http: {method: POST, url: "http://127.0.0.1:{port}/admin/pool/restart"}}
"""


def alertmanager_payload(status: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    """As Alertmanager's webhook receiver documents it (version 4)."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "phoenix",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
    }


def alert(status: str, labels: dict[str, str], fingerprint: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "5xx above 10% for 5 minutes"},
        "startsAt": "2026-11-30T02:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-30T02:10:00.000Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=rate",
        "fingerprint": fingerprint,
    }


def incident(server: PhoenixServer, incident_id: str) -> dict[str, Any]:
    body: dict[str, Any] = server.get(f"/api/incidents/{incident_id}").json()["incident"]
    return body


@pytest.fixture()
def server(tmp_path: Path) -> Any:
    path = tmp_path / "phoenix.yaml"
    path.write_text("services:" + web_service_yaml("web", free_port(), extra=SERVICE))
    with running_phoenix(path, tmp_path / "var") as phoenix:
        wait_until(lambda: phoenix.status_of("web") == "healthy", timeout=20)
        yield phoenix


def test_an_alertmanager_alert_runs_its_playbook_once(server: PhoenixServer) -> None:
    created = server.post(
        "/api/playbooks",
        json={
            "name": "Errors alert",
            "service": "web",
            "triggers": [{"type": "alert", "alert": "HighErrorRate"}],
            "steps": [{"action": "restart_connection_pool", "timeout": 10}],
        },
    )
    assert created.status_code == 201, created.text
    firing = alert(
        "firing",
        {"alertname": "HighErrorRate", "service": "web", "failure_type": "high_error_rate"},
        "a1b2c3",
    )
    answer = server.post("/api/alerts/alertmanager", json=alertmanager_payload("firing", firing))
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["action"] == "recovering" and result["service"] == "web", result
    recovery = server.finished(result["recoveryId"])
    assert recovery["trigger"] == "alert" and recovery["status"] == "completed", recovery
    assert recovery["decision"]["source"] == "playbook"
    assert recovery["playbookId"] == created.json()["playbookId"]
    assert recovery["steps"][0]["name"] == "Restart connection pool"
    opened = incident(server, result["incidentId"])
    assert opened["source"] == "alert" and opened["failureType"] == "high_error_rate"
    assert "5xx above 10%" in opened["summary"]
    assert any("alertname=HighErrorRate" in e for e in opened["evidence"])

    # Alertmanager sends the same firing alert again at its next group interval: no-op.
    again = server.post("/api/alerts/alertmanager", json=alertmanager_payload("firing", firing))
    assert again.json()["results"][0]["action"] == "duplicate"
    assert len(server.recoveries_of("web")) == 1
    wait_until(lambda: incident(server, result["incidentId"])["status"] == "resolved", timeout=10)
    # Its resolution finds the incident already closed by the recovery's verdict.
    resolved = alert("resolved", firing["labels"], "a1b2c3")
    late = server.post("/api/alerts/alertmanager", json=alertmanager_payload("resolved", resolved))
    assert late.json()["results"][0]["action"] == "ignored"


def test_alerts_phoenix_records_only_or_cannot_map(server: PhoenixServer) -> None:
    informing = alert(
        "firing", {"alertname": "DiskFilling", "service": "web", "phoenix_recover": "false"}, "d1"
    )
    unlabelled = alert("firing", {"alertname": "Orphan"}, "d2")
    stranger = alert("firing", {"alertname": "Other", "service": "nope"}, "d3")
    answer = server.post(
        "/api/alerts/alertmanager",
        json=alertmanager_payload("firing", informing, unlabelled, stranger),
    ).json()
    recorded, no_label, unknown = answer["results"]
    assert recorded["action"] == "recorded" and "not to act" in recorded["reason"]
    assert no_label["action"] == "ignored" and "'service' label" in no_label["reason"]
    assert unknown["action"] == "ignored" and "unknown service 'nope'" in unknown["reason"]
    assert server.recoveries_of("web") == []
    opened = incident(server, recorded["incidentId"])
    assert opened["status"] == "open" and opened["failureType"] == "unknown"
    # Its resolution closes it (Phoenix's own healthy view does not: tests/recovery).
    resolved = alert("resolved", informing["labels"], "d1")
    closing = server.post(
        "/api/alerts/alertmanager", json=alertmanager_payload("resolved", resolved)
    ).json()
    assert closing["results"][0]["action"] == "resolved"
    closed = incident(server, recorded["incidentId"])
    assert (
        closed["status"] == "resolved" and "alertmanager reported it resolved" in closed["summary"]
    )


def test_alertmanager_payloads_phoenix_cannot_read(server: PhoenixServer) -> None:
    wrong_version = server.post(
        "/api/alerts/alertmanager", json={**alertmanager_payload("firing"), "version": "3"}
    )
    assert wrong_version.status_code == 422
    assert wrong_version.json()["error"]["details"][0]["path"] == "version"
    no_alerts = server.post("/api/alerts/alertmanager", json={"version": "4"})
    assert no_alerts.status_code == 422
    assert no_alerts.json()["error"]["details"][0]["path"] == "alerts"
    # One bad alert never costs the others (Alertmanager does not retry a 4xx).
    bad = {**alert("firing", {"alertname": "X", "service": "web"}, "x"), "status": "maybe"}
    long_url = alert(
        "firing", {"alertname": "Y", "service": "web", "phoenix_recover": "false"}, "y"
    )
    long_url["generatorURL"] = "http://prometheus.example:9090/graph?g0.expr=" + "x" * 10_000
    payload = {**alertmanager_payload("firing", bad, long_url), "truncatedAlerts": 3}
    answer = server.post("/api/alerts/alertmanager", json=payload)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["truncated"] == 3
    first, second = body["results"]
    assert first["action"] == "ignored" and "status" in first["reason"]
    assert second["action"] == "recorded"
    evidence = incident(server, second["incidentId"])["evidence"]
    assert max(len(line) for line in evidence) <= 512


def test_a_chaos_event_opens_an_incident_and_phoenix_recovers(server: PhoenixServer) -> None:
    event = {
        "service": "web",
        "kind": "failure",
        "failureType": "service_down",
        "source": "chaos-monkey",
        "message": "killed web's process",
        "id": "chaos-1",
    }
    answer = server.post("/api/events", json={"events": [event]})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["action"] == "recovering", result
    recovery = server.finished(result["recoveryId"])
    assert recovery["trigger"] == "alert" and recovery["strategy"] == "restart"
    assert recovery["status"] == "completed" and recovery["decision"]["source"] == "default"
    opened = incident(server, result["incidentId"])
    assert opened["source"] == "event" and "chaos-monkey reported web failing" in opened["summary"]
    resent = server.post("/api/events", json={"events": [event]}).json()["results"][0]
    assert resent["action"] == "duplicate"
    assert len(server.recoveries_of("web")) == 1


def test_a_health_feed_event_recorded_then_recovered(server: PhoenixServer) -> None:
    down = {"service": "web", "kind": "failure", "source": "health-monitor", "id": "h-9"}
    answer = server.post("/api/events", json={"events": [{**down, "recover": False}]}).json()
    [recorded] = answer["results"]
    assert recorded["action"] == "recorded"
    up = {"service": "web", "kind": "recovered", "source": "health-monitor", "id": "h-9"}
    [closed] = server.post("/api/events", json={"events": [up]}).json()["results"]
    assert closed["action"] == "resolved" and closed["incidentId"] == recorded["incidentId"]
    assert incident(server, recorded["incidentId"])["status"] == "resolved"
    [again] = server.post("/api/events", json={"events": [up]}).json()["results"]
    assert again["action"] == "ignored"


def test_events_phoenix_refuses_name_the_problem(server: PhoenixServer) -> None:
    good = {"service": "web", "kind": "failure", "recover": False}
    unknown = server.post(
        "/api/events", json={"events": [good, {"service": "nope", "kind": "failure"}]}
    )
    assert unknown.status_code == 422
    [detail] = unknown.json()["error"]["details"]
    assert detail["path"] == "events[1].service" and "nope" in detail["message"]
    assert server.get("/api/incidents").json()["total"] == 0, "none was processed"
    bad_kind = server.post("/api/events", json={"events": [{**good, "kind": "meltdown"}]})
    assert bad_kind.status_code == 422
    assert bad_kind.json()["error"]["details"][0]["path"] == "events[0].kind"
    empty = server.post("/api/events", json={"events": []})
    assert empty.status_code == 422
    typo = server.post("/api/events", json={"events": [{**good, "servce": "web"}]})
    assert typo.status_code == 422


def test_a_large_group_is_taken_as_far_as_it_fits_and_the_rest_said_out_loud(
    server: PhoenixServer,
) -> None:
    """Alertmanager treats a 4xx as final and re-sends the same group every interval:
    1,001 alerts, or 700 with 1.5 KB descriptions (1.3 MB), used to be refused whole, so
    none ever reached Phoenix. Now the first 1,000 are read and the rest reported."""
    quiet = {"alertname": "Many", "phoenix_recover": "false"}  # no service label: ignored
    many = [alert("firing", {**quiet, "n": str(n)}, f"many-{n}") for n in range(1_001)]
    answer = server.post("/api/alerts/alertmanager", json=alertmanager_payload("firing", *many))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["received"], body["skipped"], len(body["results"])) == (1_001, 1, 1_000)

    wordy = []
    for n in range(700):
        one = alert("firing", {**quiet, "n": str(n)}, f"wordy-{n}")
        one["annotations"]["description"] = "d" * 1_500
        wordy.append(one)
    payload = {**alertmanager_payload("firing", *wordy), "truncatedAlerts": 5}
    big = server.post("/api/alerts/alertmanager", json=payload)
    assert big.status_code == 200, big.text[:300]
    assert (big.json()["received"], big.json()["truncated"]) == (700, 5)

    warnings = server.get("/health").json()["warnings"]
    assert any(
        "left out of an Alertmanager payload" in w and "5 by Alertmanager" in w for w in warnings
    ), warnings
    metrics = server.get("/metrics").text
    assert 'phoenix_alerts_truncated_total{by="alertmanager"} 5.0' in metrics
    assert 'phoenix_alerts_truncated_total{by="phoenix"} 1.0' in metrics
    assert 'phoenix_reports_total{action="ignored",origin="alertmanager"} 1700.0' in metrics
    too_big = server.post(
        "/api/alerts/alertmanager",
        content=b'{"version": "4", "alerts": [' + b" " * (17 * 1024 * 1024) + b"]}",
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413 and "16777216" in too_big.json()["error"]["message"]
