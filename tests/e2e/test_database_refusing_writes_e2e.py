"""The database refusing every write (its SQLite files made immutable, as an operator's
mistake or a full, read-only remount would): the data plane comes first. A crashed service
is still restarted, /health says since when and why writes fail, and the recovery's
records wait in memory and are written once the database takes writes again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e


def _chattr(flag: str, files: list[Path]) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, files)], capture_output=True, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def immutable(data_dir: Path) -> Iterator[None]:
    # The database and its write-ahead log. Not the WAL index (-shm): SQLite maps it into
    # memory, and an immutable one kills the process with SIGBUS inside SQLite (a known
    # limit, noted in RELIABILITY.md), which is not what this test is about.
    files = [data_dir / "phoenix.db", data_dir / "phoenix.db-wal"]
    files = [p for p in files if p.is_file()]
    if not _chattr("+i", files):
        pytest.skip("chattr +i is not possible here (needs root and ext4/xfs)")
    try:
        yield
    finally:
        _chattr("-i", files)


def test_a_crash_is_recovered_while_the_database_refuses_writes(tmp_path: Path) -> None:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    data = tmp_path / "var"
    with running_phoenix(path, data) as server:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
        pid = server.live_pid("web")
        assert pid is not None
        with immutable(data):
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: server.live_pid("web") not in (None, pid), timeout=20, message="restart"
            )
            wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
            health = server.get("/health").json()
            assert health["status"] == "degraded", health
            assert any("refused writes since" in w for w in health["warnings"]), health
            assert server.recoveries_of("web") == [], "nothing could be written yet"
        # Writable again: the journal is written, nothing acknowledged or done is lost.
        [recovery] = wait_until(lambda: server.recoveries_of("web"), timeout=60, interval=0.5)
        assert server.finished(recovery["id"], timeout=60)["status"] == "completed"
        wait_until(
            lambda: (
                not any("refused writes" in w for w in server.get("/health").json()["warnings"])
            ),
            timeout=30,
            message="the warning to clear",
        )
