"""A service's port held by another process, end to end: the real server, a real holder
(``python -m http.server``, as an operator would hit it), real HTTP. Phoenix starts anyway,
says so once naming the holder, shows the service unhealthy for that reason, warns on
``/health``, tries again with a growing backoff, and serves the port once it is free."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

PROBLEM_LINE = re.compile(r"service held: its router cannot serve .*\(try (\d+); next in")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Another program on the port the service declares."""
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(port), timeout=10, message="the http.server holding the port")
        yield port, holder
    finally:
        holder.kill()
        holder.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def problem_tries(log: str) -> list[int]:
    return [int(m.group(1)) for m in PROBLEM_LINE.finditer(log)]


def test_a_held_service_port_is_reported_unhealthy_warned_and_healed(
    tmp_path: Path, http_server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, holder = http_server
    other = free_port()
    path = service_file(tmp_path, web_service_yaml("held", port), web_service_yaml("other", other))
    with running_phoenix(path, tmp_path / "var") as server:
        # The other services are supervised as ever.
        wait_until(lambda: server.status_of("other") == "healthy", timeout=20)

        # Unhealthy for its port, although its own instance passes its checks.
        health = wait_until(
            lambda: (h := server.health_of("held"))["status"] == "unhealthy" and h,
            timeout=20,
            message="held unhealthy",
        )
        assert f"port {port} on 127.0.0.1 is held by pid {holder.pid}" in health["reason"]
        assert "http.server" in health["reason"]
        warnings = server.get("/health").json()["warnings"]
        assert any(f"pid {holder.pid}" in w and "held" in w for w in warnings), warnings

        # One line at start naming service, port and holder; then one per backoff step.
        log = server.log()
        [first] = [line for line in log.splitlines() if "(try 1;" in line]
        for named in ("service held", f"127.0.0.1:{port}", f"held by pid {holder.pid}"):
            assert named in first, first
        wait_until(lambda: len(problem_tries(server.log())) >= 3, timeout=15, message="3 tries")
        tries = problem_tries(server.log())
        assert tries == list(range(1, len(tries) + 1)), "one line per try, never a burst"
        assert len(tries) <= 4, f"tries every 1, 2, 4 s: {tries}"

        holder.send_signal(signal.SIGTERM)
        holder.wait(10)
        wait_until(lambda: server.status_of("held") == "healthy", timeout=30, message="healed")
        answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert answer.status_code == 200 and "held" in answer.text
        warnings = server.get("/health").json()["warnings"]
        assert not any(f"pid {holder.pid}" in w for w in warnings), warnings
        assert f"service held: port {port} is served again" in server.log()
