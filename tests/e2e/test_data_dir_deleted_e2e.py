"""The data directory removed under a running Phoenix (``rm -rf var/*``), then a service
killed: the real server, real SQLite, a real router.

Before: the recovery was recorded ``failed`` (the router's control socket had gone with the
directory, so traffic could not be moved) while ``/health`` said all was well, and every
record went on into a deleted file, lost at the next start. Now the router listens on its
control socket again, the SQLite file is written again from the open database, the
recovery completes with traffic on the new instance, ``/health`` says what happened, and a
restarted Phoenix still has every record."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PhoenixServer, free_port, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e


def _remove_contents(data_dir: Path, keep: Path) -> None:
    """Everything in ``data_dir`` but the test's own capture of Phoenix's output."""
    for entry in data_dir.iterdir():
        if entry == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _served(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_deleted_data_directory_is_survived_and_said(tmp_path: Path) -> None:
    port = free_port()
    path = service_file(tmp_path, web_service_yaml("web", port))
    data_dir = tmp_path / "var"
    server = PhoenixServer(path, data_dir).start()
    try:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20, message="healthy")
        _remove_contents(data_dir, keep=server.log_path)
        assert not (data_dir / "phoenix.db").exists()

        pid = server.live_pid("web")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def recovery_of_web() -> str | None:
            answer = server.get("/api/recovery/history", params={"service": "web"})
            if answer.status_code == 503:
                return None  # said while the database file is being written again
            assert answer.status_code == 200, answer.text
            return next((r["id"] for r in answer.json()["recoveries"]), None)

        recovery_id = wait_until(recovery_of_web, timeout=20, message="a recovery of web")

        def ended() -> dict[str, Any] | None:
            answer = server.get(f"/api/recovery/status/{recovery_id}")
            if answer.status_code == 503:
                return None  # the same: until the file is written again
            assert answer.status_code == 200, answer.text
            found: dict[str, Any] = answer.json()["recovery"]
            return found if found["status"] not in ("pending", "in_progress") else None

        recovery = wait_until(ended, timeout=30, message="the recovery to end")
        assert recovery["status"] == "completed", recovery
        assert all(step["status"] == "completed" for step in recovery["steps"]), recovery
        wait_until(lambda: _served(port), timeout=10, message="traffic on the new instance")

        warnings = wait_until(
            lambda: [w for w in server.get("/health").json()["warnings"] if "deleted" in w],
            timeout=15,
            message="/health saying the database file was deleted",
        )
        assert "written again" in warnings[0]
        assert (data_dir / "phoenix.db").exists()
        wait_until(
            lambda: (
                server.service("web")["status"] == "healthy"
                and any(
                    i["status"] == "resolved"
                    for i in server.get("/api/incidents", params={"service": "web"}).json()[
                        "incidents"
                    ]
                )
            ),
            timeout=30,
            message="the incident resolved once the recovery held",
        )
    finally:
        server.close()

    # Nothing recorded meanwhile was lost: the next Phoenix reads it from the new file.
    again = PhoenixServer(path, data_dir).start()
    try:
        history = again.recoveries_of("web")
        assert [r["id"] for r in history] == [recovery_id], history
        assert history[0]["status"] == "completed"
    finally:
        again.close()
