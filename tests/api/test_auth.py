"""Tokens with roles over real HTTP, on a Phoenix bound to every address (allowed because
tokens are configured): 401 without a valid token, 403 naming the role needed, and every
mutating call — allowed or refused — in the admin-only audit log, with no token anywhere
in answers, the audit log or Phoenix's own log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.support import PhoenixServer, envelope_error, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e  # starts real processes

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("auth")
    config = root / "phoenix.yaml"
    config.write_text("services:" + web_service_yaml("web", free_port()))
    phoenix = PhoenixServer(
        config,
        root / "var",
        env={
            "PHOENIX_HOST": "0.0.0.0",
            "PHOENIX_API_TOKENS": f"view:viewer:{VIEWER},ops:operator:{OPERATOR},root:admin:{ADMIN}",
        },
    ).start()
    wait_until(
        lambda: phoenix.get("/api/services/web", headers=bearer(VIEWER)).json()["service"][
            "instances"
        ],
        timeout=20,
    )
    yield phoenix
    phoenix.close()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    return body["error"]  # type: ignore[no-any-return]


def test_liveness_and_docs_need_no_token(server: PhoenixServer) -> None:
    health = server.get("/health").json()
    assert health["status"] == "healthy" and health["warnings"] == []
    assert server.get("/openapi.json").status_code == 200


def test_no_or_a_wrong_token_is_401(server: PhoenixServer) -> None:
    missing = server.get("/api/services")
    assert error_of(missing, 401)["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = server.get("/api/services", headers=bearer(VIEWER + "x"))
    assert "not valid" in error_of(wrong, 401)["message"]
    not_bearer = server.get("/api/services", headers={"Authorization": f"Basic {VIEWER}"})
    error_of(not_bearer, 401)


def test_each_role_does_what_it_may_and_no_more(server: PhoenixServer) -> None:
    assert server.get("/api/services", headers=bearer(VIEWER)).status_code == 200
    trigger = {"service": "web", "strategy": "restart", "reason": "auth test"}
    refused = server.post("/api/recovery/trigger", json=trigger, headers=bearer(VIEWER))
    message = error_of(refused, 403)["message"]
    assert "operator role" in message and "'view' has viewer" in message
    started = server.post("/api/recovery/trigger", json=trigger, headers=bearer(OPERATOR))
    assert started.status_code == 202, started.text
    playbook = {
        "name": "auth test",
        "triggers": [{"type": "manual"}],
        "steps": [{"action": "wait", "seconds": 1}],
    }
    not_admin = server.post("/api/playbooks", json=playbook, headers=bearer(OPERATOR))
    assert "admin role" in error_of(not_admin, 403)["message"]
    created = server.post("/api/playbooks", json=playbook, headers=bearer(ADMIN))
    assert created.status_code == 201, created.text
    dry_run = server.post(
        f"/api/playbooks/{created.json()['playbookId']}/dry-run",
        json={"service": "web"},
        headers=bearer(VIEWER),
    )
    assert dry_run.status_code == 200, "a dry run acts on nothing: viewers may"
    error_of(server.get("/api/audit", headers=bearer(OPERATOR)), 403)


def test_the_audit_log_records_who_did_what_from_where(server: PhoenixServer) -> None:
    server.post("/api/recovery/trigger", json={"service": "web"})  # unauthenticated
    server.post(
        "/api/incidents/inc-000000000000/false-positive", headers=bearer(OPERATOR)
    )  # allowed, and 404

    def seen() -> set[tuple[str, str, str, int]]:
        entries = server.get("/api/audit", headers=bearer(ADMIN), params={"limit": 1000})
        return {
            (e["actor"], e["method"], e["path"], e["status"]) for e in entries.json()["entries"]
        }

    # Each entry is written just after its call answers.
    expected = {
        ("unauthenticated", "POST", "/api/recovery/trigger", 401),
        ("ops", "POST", "/api/incidents/inc-000000000000/false-positive", 404),
    }
    wait_until(lambda: expected <= seen(), timeout=5, message="both calls audited")
    entries = server.get("/api/audit", headers=bearer(ADMIN), params={"limit": 1000}).json()[
        "entries"
    ]
    assert all(e["remote"] == "127.0.0.1" for e in entries)
    assert not [e for e in entries if e["method"] == "GET"], "reads are not audited"
    mine = server.get("/api/audit", headers=bearer(ADMIN), params={"actor": "ops"}).json()
    assert mine["total"] >= 1 and {e["actor"] for e in mine["entries"]} == {"ops"}
    assert {e["role"] for e in mine["entries"]} == {"operator"}


def test_no_token_is_ever_shown(server: PhoenixServer) -> None:
    audit = server.get("/api/audit", headers=bearer(ADMIN)).text
    log = server.log()
    for token in (VIEWER, OPERATOR, ADMIN):
        assert token not in audit and token not in log


# --- every operation of the contract, fuzzed without the right token ---------------------

OPEN = ("/health", "/openapi.json", "/docs", "/redoc", "/api/session")
"""What anyone may call (docs/api.md): liveness, the API's documentation, and the
dashboard's sign-in, which checks the token it is given itself (tested in this file)."""


def role_needed(method: str, template: str) -> str | None:
    """The contract of docs/configuration.md, written out independently of the code."""
    if template in OPEN or template.startswith(("/docs", "/static/")):
        return None
    if template.startswith("/api/audit"):
        return "admin"
    if method == "GET":
        return "viewer"
    if template in ("/api/playbooks/validate", "/api/playbooks/{playbook_id}/dry-run"):
        return "viewer"
    if template == "/api/playbooks/{playbook_id}/execute":
        return "operator"
    if template.startswith("/api/playbooks"):
        return "admin"
    return "operator"


LOWER = {"operator": ("viewer", VIEWER), "admin": ("operator", OPERATOR)}
"""For each role, a token one role short of it."""


def test_every_operation_refuses_a_caller_without_the_right_token(server: PhoenixServer) -> None:
    """Each operation of the OpenAPI document, with schemathesis-generated parameters and
    bodies: no token and a wrong token are 401 with the challenge, a token one role short is
    403 naming the role needed — before anything is acted on — all in the error envelope."""
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json",
        config=schemathesis.Config.from_dict({"headers": {"Authorization": f"Bearer {ADMIN}"}}),
    )
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.path != "/api/stream"
    ]
    assert len(operations) >= 26
    seen: list[str] = []
    problems: list[str] = []

    for operation in operations:
        _refusals(operation, seen, problems)
    assert len(seen) >= len(operations), "every operation was called"
    assert not problems, "\n".join(problems[:20])
    # Nothing refused was acted on: no playbook was made or changed by a refused caller.
    names = [
        p["name"] for p in server.get("/api/playbooks", headers=bearer(ADMIN)).json()["playbooks"]
    ]
    assert all(name == "auth test" for name in names), names


def _refusals(operation: Any, seen: list[str], problems: list[str]) -> None:
    """Call ``operation`` as each caller who may not, and note what went wrong."""
    needed = role_needed(operation.method.upper(), operation.path)

    @settings(
        max_examples=5,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def one(case: Any) -> None:
        label = f"{case.method} {case.formatted_path}"
        seen.append(label)
        callers: list[tuple[str, dict[str, str], int]] = []
        if needed is not None:
            callers += [("no token", {}, 401), ("a wrong token", bearer(ADMIN + "x"), 401)]
        if needed in LOWER:
            role, token = LOWER[needed]
            callers.append((role, bearer(token), 403))
        for who, headers, status in callers:
            case.headers = {**(case.headers or {}), **headers}
            if not headers:
                case.headers.pop("Authorization", None)
            answer = case.call(timeout=15)
            if answer.status_code != status:
                problems.append(f"{label} by {who}: {answer.status_code} {answer.text[:200]}")
                continue
            error = envelope_error(status, answer.json())
            challenge = answer.headers.get("www-authenticate")  # schemathesis: a list
            if status == 401 and challenge not in ("Bearer", ["Bearer"]):
                problems.append(f"{label} by {who}: 401 without WWW-Authenticate: Bearer")
            if status == 403 and f"{needed} role" not in error["message"]:
                problems.append(f"{label} by {who}: 403 not naming {needed}: {error}")
            for secret in (VIEWER, OPERATOR, ADMIN):
                assert secret not in answer.text

    one()


def test_the_role_follows_the_route_not_the_last_segment(server: PhoenixServer) -> None:
    """``PUT /api/playbooks/validate`` changes the playbook whose id is ``validate``: admin's
    business, so a viewer is refused for its role (it once got 404, judged by "validate")."""
    refused = server.client.put(
        "/api/playbooks/validate", json={"name": "x"}, headers=bearer(VIEWER)
    )
    assert "admin role" in error_of(refused, 403)["message"]
    unknown = server.client.put("/api/no/such/route", json={}, headers=bearer(VIEWER))
    assert error_of(unknown, 404)["message"].startswith("no such endpoint")
