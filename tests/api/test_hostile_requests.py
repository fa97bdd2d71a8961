"""Requests a hostile client or web page can send to the default Phoenix (loopback, no
tokens), over real HTTP, with the audit log on SQLite and on PostgreSQL.

* One request with a method longer than the audit column (``UNSUBSCRIBE``) or a NUL in its
  path used to switch the audit log off for good on PostgreSQL: every later entry queued
  behind the refused one.
* A token in the query string was stored in the audit log's path.
* DNS rebinding (a foreign ``Host``) and cross-site forms (``x-www-form-urlencoded``, no
  preflight) reached the API.
* A string ``version`` in a playbook ``PUT`` was a confusing 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.store.conftest import postgres_schema
from tests.support import PhoenixServer, free_port, wait_until

pytestmark = pytest.mark.e2e

PLAYBOOK = {
    "name": "hostile drill",
    "service": "ledger",
    "triggers": [{"type": "manual"}],
    "steps": [{"action": "notify", "message": "drill"}],
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("hostile")
    config = root / "phoenix.yaml"
    config.write_text(
        f"""services:
  - name: ledger
    platform: external
    health: {{http: "http://127.0.0.1:{free_port()}/health", interval: 1s, timeout: 200ms}}
"""
    )
    env = {"AUTO_RECOVERY": "false", "PHOENIX_ALLOWED_HOSTS": "phoenix.internal"}
    with postgres_schema_or_none(request.param) as database_url:
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        phoenix = PhoenixServer(config, root / "var", env=env).start()
        try:
            yield phoenix
        finally:
            phoenix.close()


class postgres_schema_or_none:
    def __init__(self, backend: str) -> None:
        self._schema = postgres_schema() if backend == "postgresql" else None

    def __enter__(self) -> str | None:
        return self._schema.__enter__()[0] if self._schema is not None else None

    def __exit__(self, *exc: object) -> None:
        if self._schema is not None:
            self._schema.__exit__(*exc)


def audited(server: PhoenixServer, count: int = 200) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = server.get("/api/audit", params={"limit": count}).json()[
        "entries"
    ]
    return entries


def entry_for(server: PhoenixServer, path_start: str) -> dict[str, Any]:
    return wait_until(
        lambda: next((e for e in audited(server) if e["path"].startswith(path_start)), None),
        timeout=10,
        message=f"an audit entry for {path_start}",
    )


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


# --- the audit log cannot be switched off ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("UNSUBSCRIBE", "/anything"),
        ("POST", "/x%00"),
        ("POST", "/x%0d%0aX-Forged:%201%1b[31m"),
        ("POST", "/" + "a" * 3000),
    ],
    ids=["long-method", "nul-in-path", "control-characters", "path-over-the-column"],
)
def test_a_hostile_request_does_not_switch_the_audit_log_off(
    server: PhoenixServer, method: str, path: str
) -> None:
    hostile = server.client.request(method, path, headers={"User-Agent": b"x\xe9\xffy"})
    assert hostile.status_code in (404, 405), hostile.text
    created = server.post(
        "/api/playbooks", json={**PLAYBOOK, "name": f"after {method} {path[:20]}"}
    )
    assert created.status_code == 201, created.text
    entry_for(server, "/api/playbooks")  # the call after it is audited
    playbook_id = created.json()["playbookId"]
    assert server.client.delete(f"/api/playbooks/{playbook_id}").status_code == 200
    wait_until(
        lambda: any(e["path"] == f"/api/playbooks/{playbook_id}" for e in audited(server)),
        message="the deletion audited",
    )
    hostile_entry = next(e for e in audited(server) if e["status"] == hostile.status_code)
    assert len(hostile_entry["method"]) <= 8 and len(hostile_entry["path"]) <= 2048
    assert not any(ord(c) < 0x20 for c in hostile_entry["method"] + hostile_entry["path"])
    assert "does not answer" not in server.log()
    assert "value too long" not in server.log()


def test_a_token_in_the_query_string_is_not_stored(server: PhoenixServer) -> None:
    secret = "s3cr3t-token-value-0123456789"
    server.post(
        f"/api/playbooks/validate?token={secret}&access_token={secret}&api_key={secret}"
        f"&password={secret}&keep=visible",
        json=PLAYBOOK,
    )
    entry = entry_for(server, "/api/playbooks/validate?")
    assert secret not in entry["path"]
    assert "token=[redacted]" in entry["path"] and "keep=visible" in entry["path"]
    assert secret not in server.log()


def test_x_forwarded_for_from_an_untrusted_peer_is_not_the_remote(server: PhoenixServer) -> None:
    """Needs ``**settings.proxy_options`` in ``uvicorn.Config`` (src/phoenix_server/app.py):
    uvicorn's own default believes X-Forwarded-For from loopback."""
    server.post(
        "/api/playbooks/validate?forwarded=1", json=PLAYBOOK, headers={"X-Forwarded-For": "6.6.6.6"}
    )
    assert entry_for(server, "/api/playbooks/validate?forwarded=1")["remote"] == "127.0.0.1"


# --- DNS rebinding, cross-site forms and origins -------------------------------------------


def test_a_foreign_host_is_refused_naming_it(server: PhoenixServer) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends its Host."""
    attacker = f"rebind.attacker.example:{server.port}"
    for call in (
        lambda h: server.post("/api/playbooks", json=PLAYBOOK, headers=h),
        lambda h: server.get("/api/services", headers=h),
        lambda h: server.get("/health", headers=h),  # its fast path too: warnings name things
    ):
        error = error_of(call({"Host": attacker, "Origin": f"http://{attacker}"}), 421)
        assert "rebind.attacker.example" in error["message"]
        assert "PHOENIX_ALLOWED_HOSTS" in error["message"]
    assert not any(
        p["name"] == PLAYBOOK["name"] for p in server.get("/api/playbooks").json()["playbooks"]
    )


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "LOCALHOST",
        "phoenix.internal",
        "phoenix.internal:80",
        "10.0.0.7",  # a kubelet's probe by pod address: never a rebinding page
    ],
)
def test_loopback_and_configured_hosts_are_answered(server: PhoenixServer, host: str) -> None:
    if ":" not in host.replace("[::1]", ""):
        host = f"{host}:{server.port}"
    assert server.get("/api/services", headers={"Host": host}).status_code == 200
    assert server.get("/health", headers={"Host": host}).status_code == 200


def test_a_cross_site_form_cannot_run_a_playbook(server: PhoenixServer) -> None:
    created = server.post("/api/playbooks", json={**PLAYBOOK, "name": "form target"})
    playbook_id = created.json()["playbookId"]
    try:
        for content_type, body in [
            ("application/x-www-form-urlencoded", b""),
            ("multipart/form-data; boundary=x", b"--x--\r\n"),
            ("text/plain", b'{"reason": "no preflight for text/plain"}'),
        ]:
            response = server.post(
                f"/api/playbooks/{playbook_id}/execute",
                content=body,
                headers={"Content-Type": content_type},
            )
            error = error_of(response, 415)
            assert content_type.split(";")[0] in error["message"]
            assert "application/json" in error["message"]
        unlabelled = server.post("/api/recovery/trigger", content=b'{"service": "ledger"}')
        assert "none was given" in error_of(unlabelled, 415)["message"]
        # An optional body may be left out entirely, with no content type.
        bare = server.post(f"/api/playbooks/{playbook_id}/dry-run")
        assert bare.status_code == 200, bare.text
    finally:
        server.client.delete(f"/api/playbooks/{playbook_id}")


def test_a_page_of_another_origin_cannot_act(server: PhoenixServer) -> None:
    own = f"127.0.0.1:{server.port}"
    foreign = server.post(
        "/api/playbooks/validate", json=PLAYBOOK, headers={"Origin": "http://evil.example"}
    )
    assert "evil.example" in error_of(foreign, 403)["message"]
    assert error_of(
        server.post("/api/playbooks/validate", json=PLAYBOOK, headers={"Origin": "null"}), 403
    )
    same = server.post(
        "/api/playbooks/validate", json=PLAYBOOK, headers={"Origin": f"http://{own}"}
    )
    assert same.status_code == 200, same.text
    # Reading is not acting: the origin of a GET is not checked.
    assert server.get("/api/services", headers={"Origin": "http://evil.example"}).status_code == 200


# --- contract details ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", 0, True, 1.5, None])
def test_a_version_of_the_wrong_type_is_422_naming_it(
    server: PhoenixServer, version: object
) -> None:
    created = server.post("/api/playbooks", json={**PLAYBOOK, "name": f"versioned {version!r}"})
    playbook_id = created.json()["playbookId"]
    try:
        response = server.client.put(
            f"/api/playbooks/{playbook_id}", json={"version": version, "priority": 5}
        )
        error = error_of(response, 422)
        assert [d["path"] for d in error["details"]] == ["version"]
        stale = server.client.put(f"/api/playbooks/{playbook_id}", json={"version": 7})
        assert error_of(stale, 409)["code"] == "conflict"
    finally:
        server.client.delete(f"/api/playbooks/{playbook_id}")
