"""Phoenix's own dependencies failing: its database locked by someone else (briefly, then
for longer than it waits) and its alert webhook hanging. Monitoring and recovery go on,
API writes that cannot be stored answer 503 with the reason, and nothing acknowledged is
lost."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e


@contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process's write transaction on Phoenix's SQLite file (readers still read)."""
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_a_briefly_locked_database_delays_nothing_that_matters(tmp_path: Path) -> None:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
        pid = server.live_pid("web")
        assert pid is not None
        with locked(tmp_path / "var" / "phoenix.db"):
            os.kill(pid, signal.SIGKILL)
            # Reads go on while the lock holds (WAL): Phoenix still reports what it sees.
            wait_until(lambda: server.status_of("web") == "unhealthy", timeout=5)
            time.sleep(2.0)  # the "brief" outage being simulated, not a wait for a result
        [recovery] = wait_until(lambda: server.recoveries_of("web"), timeout=20)
        assert server.finished(recovery["id"])["status"] == "completed"
        wait_until(lambda: server.status_of("web") == "healthy", timeout=10)


def test_writes_during_a_long_lock_answer_503_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    with running_phoenix(path, tmp_path / "var") as server:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
        with locked(tmp_path / "var" / "phoenix.db"):
            answer = server.client.post(
                "/api/recovery/trigger",
                json={"service": "web", "strategy": "restart"},
                timeout=30,
            )
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "unavailable" and "database" in error["message"]
            assert answer.headers["retry-after"]
            assert server.get("/health").status_code == 200, "liveness does not need the database"
        acknowledged = server.post(
            "/api/recovery/trigger", json={"service": "web", "strategy": "restart"}
        )
        assert acknowledged.status_code == 202
        recovery = server.finished(acknowledged.json()["recoveryId"])
        assert recovery["status"] == "completed"
        assert [r["id"] for r in server.recoveries_of("web")] == [recovery["id"]]


class HangingWebhook:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.held:
            connection.close()
        self.sock.close()


def test_a_hanging_alert_webhook_never_delays_a_recovery(tmp_path: Path) -> None:
    hook = HangingWebhook()
    # Its check looks at a port nothing listens on: every attempt fails, each alerting.
    broken = f"""
  - name: web
    command: ["{{python}}", "-c", "import time; time.sleep(600)"]
    health: {{tcp: "127.0.0.1:{free_port()}", interval: 300ms, timeout: 200ms,
             failure_threshold: 1, startup_timeout: 1s}}
    stop: {{grace: 1s}}
    recovery: {{backoff: {{initial: 200ms}}}}
"""
    path = service_file(tmp_path, broken)
    env = {"ALERT_WEBHOOK": hook.url, "MAX_RECOVERY_ATTEMPTS": "2"}
    try:
        with running_phoenix(path, tmp_path / "var", env=env) as server:
            recoveries = wait_until(
                lambda: (
                    [r for r in server.recoveries_of("web") if r["status"] == "failed"][:2]
                    if len(server.recoveries_of("web")) >= 2
                    else None
                ),
                timeout=60,
                message="two failed attempts",
            )
            for recovery in recoveries:
                detail = server.get(f"/api/recovery/status/{recovery['id']}").json()["recovery"]
                assert detail["duration"] < 15, "no attempt waited on the webhook"
            assert hook.held, "the webhook was called"
    finally:
        hook.close()
