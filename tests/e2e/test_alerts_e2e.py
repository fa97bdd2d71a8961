"""Alerts end to end: a real webhook receiver on loopback that fails, then recovers, with a
Phoenix killed and restarted in between: each alert arrives exactly once, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support import LoopbackHTTPServer, PhoenixServer, free_port, service_file, wait_until

pytestmark = pytest.mark.e2e

SECRET = "s3cret-for-tests"


class Receiver(LoopbackHTTPServer):
    """A webhook receiver: answers 500 until told to accept, records every delivery."""

    def __init__(self) -> None:
        self.accepting = False
        self.tries: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                entry = {
                    "id": self.headers["X-Phoenix-Alert"],
                    "signature": self.headers.get("X-Phoenix-Signature"),
                    "body": body,
                }
                receiver.tries.append(entry)
                status = 200 if receiver.accepting else 500
                if status == 200:
                    receiver.accepted.append(entry)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)
        self.url += "/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


BROKEN = """
  - name: billing
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    health: {tcp: "127.0.0.1:%d", interval: 300ms, timeout: 200ms, failure_threshold: 1,
             startup_timeout: 1s}
    stop: {grace: 1s}
    recovery: {backoff: {initial: 200ms}}
"""


def test_alerts_survive_a_failing_webhook_and_a_phoenix_restart_and_arrive_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = {
        "ALERT_WEBHOOK": receiver.url,
        "ALERT_WEBHOOK_SECRET": SECRET,
        "MAX_RECOVERY_ATTEMPTS": "2",
    }
    path = service_file(tmp_path, BROKEN % free_port())  # nothing ever listens there
    first = PhoenixServer(path, tmp_path / "var", env=env).start()
    try:
        # Two failed attempts and the give-up: three alerts, each tried and refused.
        wait_until(
            lambda: (
                {json.loads(t["body"])["kind"] for t in receiver.tries}
                >= {"recovery_failed", "attempts_exhausted"}
            ),
            timeout=60,
            message="alerts tried",
        )
        assert receiver.accepted == []
        warned = wait_until(
            lambda: [w for w in first.get("/health").json()["warnings"] if "ALERT_WEBHOOK" in w],
            timeout=10,
            message="/health warns of undelivered alerts",
        )
        assert "not delivered" in warned[0] and "answered 500" in warned[0], warned
        assert receiver.url not in warned[0]
    finally:
        first.stop(signal.SIGKILL)
        first.close()
    receiver.accepting = True
    second = PhoenixServer(path, tmp_path / "var", env=env).start()
    try:
        delivered = wait_until(
            lambda: (
                (kinds := sorted(json.loads(a["body"])["kind"] for a in receiver.accepted))
                and len(kinds) >= 3
                and kinds
            ),
            timeout=60,
            message="the queued alerts delivered after the restart",
        )
        assert delivered == ["attempts_exhausted", "recovery_failed", "recovery_failed"]
        ids = [a["id"] for a in receiver.accepted]
        assert len(ids) == len(set(ids)), "each alert arrives exactly once"
        for alert in receiver.accepted:
            expected = (
                "sha256=" + hmac.new(SECRET.encode(), alert["body"], hashlib.sha256).hexdigest()
            )
            assert alert["signature"] == expected
            payload = json.loads(alert["body"])
            assert payload["id"] == alert["id"] and payload["service"] == "billing"
            assert payload["text"].startswith("[phoenix] billing: ")
            assert payload["statusPath"] == f"/api/recovery/status/{payload['recoveryId']}"
        exhausted = next(
            json.loads(a["body"]) for a in receiver.accepted if b"attempts_exhausted" in a["body"]
        )
        assert exhausted["tried"] == ["restart"] and "a person must act" in exhausted["text"]
        # Every alert about the incident agrees on what was tried (each strategy once).
        assert {tuple(json.loads(a["body"])["tried"]) for a in receiver.accepted} == {("restart",)}
        # Nothing new happens to the given-up service after the restart: no more alerts.
        assert len(receiver.accepted) == 3
        assert not [w for w in second.get("/health").json()["warnings"] if "ALERT_WEBHOOK" in w]
    finally:
        second.close()
