"""Several real Phoenix processes on one PostgreSQL schema, and the external services they
watch: a small HTTP server whose services fail and come back as a test tells them, and
which records every recovery call it receives (who called, when)."""

from __future__ import annotations

import contextlib
import http.server
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.store.conftest import postgres_schema
from tests.support import PhoenixServer, free_port, wait_until

LEASE = 2.0
"""Seconds: short, so that tests of takeover take seconds (the default is 10)."""


@dataclass
class Call:
    service: str
    at: float
    """``time.monotonic()`` when it arrived."""


@dataclass
class FakeServices:
    """External services on one loopback HTTP server: ``GET /health/<name>`` answers 200
    while the service is up, 503 while it is down; ``POST /revive/<name>`` (what each
    service's playbook calls) brings it back unless it is ``stuck``, and is recorded."""

    port: int = field(default_factory=free_port)
    down: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, name: str, *, stuck: bool = False) -> None:
        with self.lock:
            self.down.add(name)
            if stuck:
                self.stuck.add(name)

    def unstick(self, name: str) -> None:
        with self.lock:
            self.stuck.discard(name)

    def revivals(self, name: str, *, after: float = 0.0) -> list[float]:
        with self.lock:
            return [c.at for c in self.calls if c.service == name and c.at > after]

    @contextlib.contextmanager
    def serving(self) -> Iterator[FakeServices]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                name = self.path.removeprefix("/health/")
                with fake.lock:
                    up = name not in fake.down
                self._answer(200 if up else 503)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                name = self.path.removeprefix("/revive/")
                with fake.lock:
                    fake.calls.append(Call(name, time.monotonic()))
                    if name not in fake.stuck:
                        fake.down.discard(name)
                self._answer(200)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def service_file(tmp_path: Path, fake: FakeServices, names: list[str]) -> Path:
    """``names`` as external services of ``fake``, probed every 0.25 s."""
    entries = "".join(
        f"""
  - name: {name}
    platform: external
    port: {fake.port}
    health:
      http: "http://127.0.0.1:{fake.port}/health/{name}"
      interval: 0.25s
      timeout: 0.5s
      failure_threshold: 2
    recovery:
      stabilisation: 1s
      budget: {{attempts: 1000, window: 1h}}
"""
        for name in names
    )
    path = tmp_path / "phoenix.yaml"
    path.write_text("services:" + entries)
    return path


def playbook(fake: FakeServices, name: str) -> dict[str, Any]:
    """The playbook that recovers ``name``: call its revive endpoint, then verify."""
    return {
        "name": f"revive-{name}",
        "service": name,
        "triggers": [{"type": "failure_type", "failureType": "service_down"}],
        "steps": [
            {
                "action": "http_request",
                "url": f"http://127.0.0.1:{fake.port}/revive/{name}",
                "method": "POST",
                "timeout": 5,
            }
        ],
    }


class Replicas:
    """N Phoenix processes sharing one database schema, each its own data directory."""

    def __init__(self, tmp_path: Path, config: Path, database_url: str, count: int) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.database_url = database_url
        self.servers: dict[str, PhoenixServer] = {}
        self.names = [f"replica-{n}" for n in range(1, count + 1)]

    def start(
        self, name: str, *, wait: bool = True, database_url: str | None = None
    ) -> PhoenixServer:
        server = PhoenixServer(
            self.config,
            self.tmp_path / name,
            env={
                "DATABASE_URL": database_url or self.database_url,
                "PHOENIX_CLUSTER": "1",
                "PHOENIX_LEASE_SECONDS": str(LEASE),
                "PHOENIX_INSTALLATION_ID": name,
            },
        )
        self.servers[name] = server
        return server.start(wait=wait)

    def start_all(self) -> None:
        for name in self.names:
            self.start(name, wait=False)
        for name in self.names:
            wait_until(self.servers[name]._ready, timeout=60, message=f"{name} ready")

    def any(self, *, besides: str | None = None) -> PhoenixServer:
        return next(
            server
            for name, server in self.servers.items()
            if name != besides and server.process is not None and server.process.poll() is None
        )

    def cluster(self, *, besides: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = self.any(besides=besides).get("/api/cluster").json()
        return body

    def owner_of(self, service: str, *, besides: str | None = None) -> str | None:
        leases = self.cluster(besides=besides)["leases"]
        return next((lease["owner"] for lease in leases if lease["service"] == service), None)

    def all_owned(self, services: list[str], *, by: set[str] | None = None) -> bool:
        """Every service has a live owner (among ``by``, if given)."""
        leases = {lease["service"]: lease["owner"] for lease in self.cluster()["leases"]}
        return all(leases.get(s) is not None and (by is None or leases[s] in by) for s in services)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        server = self.servers[name]
        assert server.process is not None
        server.process.send_signal(sig)
        if sig == signal.SIGKILL:
            server.process.wait(10)

    def close(self) -> None:
        for server in self.servers.values():
            if server.process is not None and server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    server.process.send_signal(signal.SIGCONT)
            server.close()


@contextlib.contextmanager
def replicas(
    tmp_path: Path, fake: FakeServices, services: list[str], count: int
) -> Iterator[Replicas]:
    """``count`` replicas on a fresh schema watching ``services`` of ``fake``, each with
    its playbook, all started and every service owned."""
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, service_file(tmp_path, fake, services), url, count)
        try:
            group.start_all()
            first = group.any()
            for name in services:
                answer = first.post("/api/playbooks", json=playbook(fake, name))
                assert answer.status_code == 201, answer.text
            for server in group.servers.values():  # each reloads playbooks every 5 s
                wait_until(
                    lambda server=server: (
                        server.get("/health").json()["playbooksActive"] == len(services)
                    ),
                    timeout=20,
                    message="every replica knowing the playbooks",
                )
            wait_until(lambda: group.all_owned(services), timeout=30, message="every lease held")
            yield group
        finally:
            group.close()


class DatabaseProxy:
    """A TCP relay between one replica and PostgreSQL that a test can black-hole: while
    ``cut``, bytes stop flowing both ways but every connection stays open (a partition,
    not a refusal: the nastier case, where nothing fails fast)."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._open.clear()

    def mend(self) -> None:
        self._open.set()

    def url(self, database_url: str) -> str:
        return database_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}", 1)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if not self._open.is_set():
                    time.sleep(0.05)  # black-holed: nothing read, nothing sent
                    continue
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while not self._open.is_set() and not self._stop.is_set():
                    time.sleep(0.05)  # cut mid-message: held, not delivered
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
