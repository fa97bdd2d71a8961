"""Helpers shared by the tests: free ports, waiting on conditions with deadlines, the
PostgreSQL switch, and a real Phoenix server in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


_HANDED_OUT: set[int] = set()
"""Ports :func:`free_port` gave this test process already."""


def free_port() -> int:
    """A loopback port nothing listens on now, and never one handed out before in this test
    process: the kernel may give the same free port to two binds in a row once the first is
    closed, and two replicas started together were given one port (the second could not
    listen, and the first answered for both)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


async def eventually(
    predicate: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Async :func:`wait_until`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last) or isinstance(last, Awaitable):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def postgres_url() -> str:
    """The PostgreSQL test database, or skip (fail in CI) with the reason."""
    url = os.environ.get("PHOENIX_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    import psycopg

    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL unreachable at {url}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("PHOENIX_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (PHOENIX_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return url


PROMETHEUS_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}


def prometheus_program(name: str) -> str:
    """The path of one of the Prometheus programs from Debian, or skip (fail in CI, where
    ``PHOENIX_REQUIRE_PROMETHEUS=1``) naming the package that has it."""
    found = shutil.which(name)
    if found is None:
        reason = f"no {name} on PATH (Debian package {PROMETHEUS_PACKAGES[name]})"
        if os.environ.get("PHOENIX_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason} (PHOENIX_REQUIRE_PROMETHEUS=1)")
        pytest.skip(reason)
    return found


def write_service_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class PhoenixServer:
    """``phoenix serve`` as a real child process with its own data directory and port."""

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> None:
        self.open_files = open_files
        """Run Phoenix with this descriptor limit (soft and hard), as ``ulimit -n`` does."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.data_dir = data_dir
        self.log_path = data_dir / "phoenix.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def start(self, *, wait: bool = True) -> PhoenixServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PORT": str(self.port),
            "PHOENIX_DATA_DIR": str(self.data_dir),
            "PHOENIX_LOG_LEVEL": "debug",
            **self.extra_env,
        }
        if "DATABASE_URL" not in self.extra_env:
            env.pop("DATABASE_URL", None)  # the default: SQLite in the data directory
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "phoenix_server", "serve", "--config", str(self.config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_files if self.open_files is not None else None,
            )
        if wait:
            wait_until(self._ready, timeout=30, message=f"Phoenix on {self.url}")
        return self

    def _limit_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Phoenix exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def service(self, name: str) -> dict[str, Any]:
        response = self.get(f"/api/services/{name}")
        assert response.status_code == 200, response.text
        service: dict[str, Any] = response.json()["service"]
        return service

    def health_of(self, name: str) -> dict[str, Any]:
        """The service's entry in ``/api/health/services``."""
        body = self.get("/api/health/services").json()
        assert "services" in body, body
        services = body["services"]
        found: dict[str, Any] = next(s for s in services if s["name"] == name)
        return found

    def instance_port(self, name: str) -> int:
        """The port of the service's one running instance (behind its router); waits for it
        while an instance is still starting (healthy can be reported a moment earlier)."""
        [instance] = wait_until(
            lambda: [i for i in self.service(name)["instances"] if i["state"] == "running"],
            timeout=10,
            message=f"a running instance of {name}",
        )
        return int(instance["port"])

    def status_of(self, name: str) -> str:
        body = self.get("/api/health/services").json()
        assert "services" in body, body
        services = body["services"]
        return str(next(s for s in services if s["name"] == name)["status"])

    def live_pid(self, name: str) -> int | None:
        for instance in self.service(name)["instances"]:
            if instance["state"] in ("starting", "running"):
                return int(instance["pid"])
        return None

    def finished(self, recovery_id: str, timeout: float = 30) -> dict[str, Any]:
        """The recovery once it has ended (any terminal status)."""

        def ended() -> dict[str, Any] | None:
            recovery: dict[str, Any] = self.get(f"/api/recovery/status/{recovery_id}").json()[
                "recovery"
            ]
            return recovery if recovery["status"] not in ("pending", "in_progress") else None

        return wait_until(ended, timeout=timeout, interval=0.05, message=f"{recovery_id} to end")

    def recoveries_of(self, service: str) -> list[dict[str, Any]]:
        body = self.get("/api/recovery/history", params={"service": service}).json()
        return list(body["recoveries"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        if self.process is not None:
            self.stop()
        self.client.close()


@contextlib.contextmanager
def running_phoenix(
    config: Path,
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    open_files: int | None = None,
) -> Iterator[PhoenixServer]:
    server = PhoenixServer(config, data_dir, env=env, open_files=open_files).start()
    try:
        yield server
    finally:
        server.close()


def service_file(tmp_path: Path, *entries: str) -> Path:
    """A service file of ``entries`` (each from :func:`web_service_yaml` or written out)."""
    path = tmp_path / "phoenix.yaml"
    path.write_text("services:" + "".join(entries))
    return path


def web_service_yaml(name: str, port: int, *, extra: str = "", interval: str = "0.5s") -> str:
    """A service-file entry for the example web service on ``port``."""
    return f"""
  - name: {name}
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}", "--name", "{{name}}"]
    cwd: {REPO}
    port: {port}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: {interval}
      timeout: 0.5s
      failure_threshold: 2
    stop: {{grace: 2s}}
{extra}"""


class LoadGenerator:
    """Real client traffic: ``concurrency`` threads sending GETs over keep-alive connections
    until stopped, counting answers by status and connection failures."""

    def __init__(self, port: int, *, concurrency: int = 4, path: str = "/") -> None:
        import threading

        self.port = port
        self.path = path
        self.ok = 0
        self.bad: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, daemon=True) for _ in range(concurrency)
        ]

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    @property
    def failed(self) -> int:
        return sum(self.bad.values())

    def _count(self, outcome: str | None) -> None:
        with self._lock:
            if outcome is None:
                self.ok += 1
            else:
                self.bad[outcome] = self.bad.get(outcome, 0) + 1

    def _loop(self) -> None:
        import http.client

        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", self.path)
                answer = connection.getresponse()
                answer.read()
                self._count(None if answer.status == 200 else f"HTTP {answer.status}")
                if answer.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._count(exc.__class__.__name__)
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()


class LoopbackHTTPServer:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread, for tests that need a peer
    Phoenix calls: ``with`` starts and stops it; ``url`` is its root."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def envelope_error(status: int, body: Any) -> dict[str, Any]:
    """The ``error`` of a 4xx body, once it is checked to be the envelope."""
    assert isinstance(body, dict) and body.get("success") is False, f"not the envelope: {body}"
    error = body.get("error")
    assert isinstance(error, dict) and set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str) and error["code"], f"no error code: {body}"
    assert isinstance(error["message"], str) and error["message"].strip(), f"no message: {body}"
    assert isinstance(error["details"], list), body
    for detail in error["details"]:
        assert isinstance(detail, dict) and set(detail) == {"path", "message"}, body
        assert isinstance(detail["path"], str), body
        assert isinstance(detail["message"], str) and detail["message"].strip(), body
    if status == 422:
        assert error["details"], f"a 422 lists its problems in details: {body}"
    return error
