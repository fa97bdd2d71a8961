"""The API's front door under a flood of idle connections (issue: with ``ulimit -n 1024``,
1,100 sockets that never finish their request took every file descriptor; a service that
crashed meanwhile could not be restarted, "Too many open files", and stayed down).

Phoenix caps API connections below its descriptor limit, closes requests whose headers do
not arrive in time, keeps answering ``GET /health`` and keeps healing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

LIMIT = 1024
FLOOD = 1100
HALF_A_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n"


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send half a request and then say nothing."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            with contextlib.suppress(OSError):
                sock.sendall(HALF_A_REQUEST)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed this connection (EOF, possibly after a short answer)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_flood_of_idle_connections_neither_silences_health_nor_stops_recovery(
    tmp_path: Path,
) -> None:
    path = service_file(tmp_path, web_service_yaml("web", free_port()))
    with running_phoenix(path, tmp_path / "var", open_files=LIMIT) as server:
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20)
        pid = server.live_pid("web")
        assert pid is not None
        with idle_sockets(server.port, FLOOD) as flood:
            # A liveness probe opens a new connection each time: it is answered, quickly.
            began = time.monotonic()
            answer = httpx.get(f"{server.url}/health", timeout=2)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - began < 1.0
            refused = [sock for sock in flood if closed_by_server(sock)]
            assert refused, "no connection beyond the cap was refused"

            os.kill(pid, signal.SIGKILL)
            # Recovery needs descriptors (pipes, log files, sockets): they were kept free.
            [recovery] = wait_until(lambda: server.recoveries_of("web"), timeout=10)
            assert server.finished(recovery["id"], timeout=10)["status"] == "completed"
            wait_until(lambda: server.status_of("web") == "healthy", timeout=10)

            # Half-sent requests are closed once their headers are overdue (10 s).
            wait_until(
                lambda: all(closed_by_server(sock) for sock in flood),
                timeout=20,
                interval=0.5,
                message="the idle connections to be closed by Phoenix",
            )
        assert "Too many open files" not in server.log()
        health = server.get("/health").json()
        assert any("open connections" in w for w in health["warnings"]), health
