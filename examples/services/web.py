"""A fault-injectable HTTP service that Phoenix supervises in its demo, tests and benchmarks.

Every failure Phoenix must recognise (crash, hang, error burst, slow answers, memory leak, failing
health probe) can be switched on from the command line or at run time through /admin endpoints, so
detection and recovery are exercised against a real process rather than a mock. Only the standard
library is imported, which keeps start-up (and so every measured recovery time) short.

Run from the repository root: ``python -m examples.services.web --port 8081 --name azora-auth``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import NamedTuple, NoReturn
from urllib.parse import urlsplit

MB = 1024 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_LATENCY_MS = 600_000.0
MAX_LEAK_MB_PER_S = 4096.0
PROG = "python -m examples.services.web"

# Never set: waiting on it is how a "hung" request blocks forever without burning CPU.
_NEVER = threading.Event()


# --- shared with the worker -------------------------------------------------------------------


class ShutdownRequested(Exception):
    """Raised in the main thread by SIGTERM/SIGINT so the process unwinds and exits 0 at once.

    An exception is used instead of setting an Event from the handler, because the handler runs
    in the main thread and could deadlock on a lock that the interrupted code already holds.
    """


def _raise_shutdown(signum: int, frame: FrameType | None) -> NoReturn:
    raise ShutdownRequested(signal.Signals(signum).name)


def install_shutdown_handlers(ignore_sigterm: bool = False) -> None:
    """Make SIGTERM and SIGINT end the process cleanly; optionally ignore SIGTERM.

    Ignoring SIGTERM lets tests check that the supervisor escalates to SIGKILL.
    """
    signal.signal(signal.SIGINT, _raise_shutdown)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_sigterm else _raise_shutdown)


def exit_now(code: int, reason: str) -> NoReturn:
    """Exit immediately, skipping clean-up, the way a real crash looks to a supervisor."""
    print(f"exiting with code {code}: {reason}", file=sys.stderr, flush=True)
    os._exit(code)


def _burn(seconds: float) -> None:
    """Compute (not sleep) for ``seconds`` of wall time."""
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += sum(range(200))


def schedule(seconds: float, action: Callable[[], object]) -> None:
    """Run ``action`` once after ``seconds`` on a daemon timer that never delays shutdown."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def _touched_block(size: int) -> bytearray:
    # Repeating a one-byte array writes every byte, so the pages are resident and RSS really grows
    # (a zero-filled allocation could stay virtual and go unseen by memory-based detectors).
    return bytearray(b"\xa5") * size


class MemoryLeak:
    """Keeps allocating memory at a set rate and holds on to it, like a real leak.

    A daemon thread is started on first use only, so a service that never leaks pays nothing.
    """

    TICK_S = 0.1

    def __init__(self, mb_per_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._rate = 0.0
        self._blocks: list[bytearray] = []
        self._leaked = 0
        self._owed = 0.0
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None
        self.set_rate(mb_per_s)

    @property
    def leaked_mb(self) -> float:
        """Memory held so far, in MB."""
        return round(self._leaked / MB, 3)

    def set_rate(self, mb_per_s: float) -> None:
        """Change the rate; 0 stops leaking but keeps what was already leaked."""
        with self._lock:
            self._rate = mb_per_s
            self._owed = 0.0
            self._last = time.monotonic()
            if mb_per_s > 0 and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="leak", daemon=True)
                self._thread.start()

    def release(self) -> None:
        """Drop the leaked memory, so a reset service starts from a clean slate."""
        with self._lock:
            self._blocks.clear()
            self._leaked = 0

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._owed += self._rate * MB * (now - self._last)
            self._last = now
            size = int(self._owed)
            if size <= 0:
                return
            self._owed -= size
            self._blocks.append(_touched_block(size))
            self._leaked += size


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad command line as a single stderr line, which is all a supervisor log needs."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not low <= value <= high:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text!r}")
    return value


def fraction(text: str) -> float:
    """argparse type for a probability in [0, 1]."""
    return _number(text, 0.0, 1.0)


def seconds(text: str) -> float:
    """argparse type for a non-negative, finite duration in seconds."""
    return _number(text, 0.0, 1e9)


def leak_rate(text: str) -> float:
    """argparse type for a leak rate in MB/s."""
    return _number(text, 0.0, MAX_LEAK_MB_PER_S)


def milliseconds(text: str) -> float:
    """argparse type for an added latency in milliseconds."""
    return _number(text, 0.0, MAX_LATENCY_MS)


def port_number(text: str) -> int:
    """argparse type for a TCP port; 0 asks the OS for a free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {text!r}")
    return value


# --- service state ----------------------------------------------------------------------------


class Switches(NamedTuple):
    """The injectable faults; kept apart from counters so /admin/reset can restore them whole.

    Immutable, so a request reads one consistent set without taking the lock.
    (NamedTuple rather than a dataclass: importing dataclasses costs ~15 ms of start-up.)
    """

    error_rate: float = 0.0
    latency_ms: float = 0.0
    leak_mb_per_s: float = 0.0
    fail_health: bool = False
    hanging: bool = False
    cpu_ms: float = 0.0


class Counters:
    """What the service has done; survives /admin/reset so tests can still count."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.health_checks = 0
        self.pool_restarts = 0

    def as_dict(self) -> dict[str, object]:
        """The counters as reported by /admin/state."""
        return dict(vars(self))


class Reply(NamedTuple):
    """An HTTP answer, plus what to do once it has been sent (e.g. crash)."""

    status: int
    payload: dict[str, object]
    after: Callable[[], None] | None = None


class BadRequest(Exception):
    """A client error whose message is returned in a 400 answer."""


class ServiceState:
    """Everything the request handlers share; all changes go through the lock."""

    def __init__(
        self,
        name: str,
        version: str,
        defaults: Switches,
        crash_after: float | None = None,
        hang_after: float | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.defaults = defaults
        self.crash_after = crash_after
        self.hang_after = hang_after
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.counters = Counters()
        self.switches = defaults
        self.leak = MemoryLeak(defaults.leak_mb_per_s)

    def identity(self) -> dict[str, object]:
        """The fields every answer carries, so a prober can tell which process replied."""
        return {"name": self.name, "version": self.version, "pid": os.getpid()}

    def uptime(self) -> float:
        """Seconds since start-up; a reset uptime shows a supervisor that a restart happened."""
        return round(time.monotonic() - self.started, 3)

    def change(self, update: Callable[[Switches], Switches]) -> Switches:
        """Apply ``update`` to the switches atomically and return the new set."""
        with self.lock:
            before, self.switches = self.switches, update(self.switches)
            if self.switches.leak_mb_per_s != before.leak_mb_per_s:
                self.leak.set_rate(self.switches.leak_mb_per_s)
            return self.switches

    def snapshot(self) -> dict[str, object]:
        """All switches and counters, as /admin/state reports them."""
        with self.lock:
            switches = self.switches._asdict()
            counters = self.counters.as_dict()
        return {
            **self.identity(),
            **switches,
            **counters,
            "leaked_mb": self.leak.leaked_mb,
            "uptime": self.uptime(),
            "crash_after": self.crash_after,
            "hang_after": self.hang_after,
        }

    def block_if_hanging(self) -> None:
        """Block the calling request forever once the service hangs (socket stays open)."""
        if self.switches.hanging:
            _NEVER.wait()

    def health(self) -> Reply:
        """The probe answer: ignores error rate and latency, so it tells 'down' from 'flaky'."""
        with self.lock:
            self.counters.health_checks += 1
            failing = self.switches.fail_health
        payload: dict[str, object] = {"status": "failing" if failing else "ok"}
        payload.update(self.identity(), uptime=self.uptime())
        return Reply(503 if failing else 200, payload)

    def work(self) -> Reply:
        """An ordinary request: delayed by the latency, failed with the error rate."""
        switches = self.switches
        if switches.latency_ms > 0:
            time.sleep(switches.latency_ms / 1000)
        if switches.cpu_ms > 0:
            _burn(switches.cpu_ms / 1000)
        failed = random.random() < switches.error_rate
        with self.lock:
            self.counters.requests += 1
            self.counters.errors += int(failed)
        if failed:
            return Reply(500, {"error": "injected", **self.identity()})
        return Reply(200, {"ok": True, **self.identity()})

    def restart_pool(self) -> int:
        """Simulate restarting a DB connection pool: the errors it caused go away."""
        with self.lock:
            self.counters.pool_restarts += 1
            self.switches = self.switches._replace(error_rate=0.0)
            return self.counters.pool_restarts

    def reset(self) -> None:
        """Restore the start-up switches and drop leaked memory; counters are kept."""
        with self.lock:
            self.switches = self.defaults
            self.leak.set_rate(self.defaults.leak_mb_per_s)
            self.leak.release()


# --- admin actions ----------------------------------------------------------------------------

Body = dict[str, object]
Action = Callable[[ServiceState, Body], Reply]


def _field_number(body: Body, key: str, high: float) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"body needs {key!r} as a number")
    if not 0 <= value <= high:
        raise BadRequest(f"{key!r} must be between 0 and {high:g}, got {value!r}")
    return float(value)


def _field_bool(body: Body, key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool):
        raise BadRequest(f"body needs {key!r} as true or false")
    return value


def _ok(**payload: object) -> Reply:
    return Reply(200, dict(payload))


def admin_state(state: ServiceState, body: Body) -> Reply:
    """GET /admin/state: everything a test or the demo UI may want to check."""
    return Reply(200, state.snapshot())


def admin_crash(state: ServiceState, body: Body) -> Reply:
    """POST /admin/crash {"code": n}: answer first, then die, so the caller sees it was accepted."""
    code = int(_field_number(body, "code", 255)) if "code" in body else 1
    return Reply(200, {"crashing": True, "code": code}, lambda: exit_now(code, "admin/crash"))


def admin_hang(state: ServiceState, body: Body) -> Reply:
    """POST /admin/hang: every later request, /health included, blocks forever."""
    state.change(lambda s: s._replace(hanging=True))
    return _ok(hanging=True)


def admin_errors(state: ServiceState, body: Body) -> Reply:
    """POST /admin/errors {"rate": r}: fraction of ordinary requests answered 500."""
    rate = _field_number(body, "rate", 1.0)
    return _ok(error_rate=state.change(lambda s: s._replace(error_rate=rate)).error_rate)


def admin_latency(state: ServiceState, body: Body) -> Reply:
    """POST /admin/latency {"ms": n}: delay added to ordinary requests."""
    ms = _field_number(body, "ms", MAX_LATENCY_MS)
    return _ok(latency_ms=state.change(lambda s: s._replace(latency_ms=ms)).latency_ms)


def admin_cpu(state: ServiceState, body: Body) -> Reply:
    """POST /admin/cpu {"ms": n}: CPU time each ordinary request spends (a load spike
    saturates the process: the GIL lets one request compute at a time)."""
    ms = _field_number(body, "ms", MAX_LATENCY_MS)
    return _ok(cpu_ms=state.change(lambda s: s._replace(cpu_ms=ms)).cpu_ms)


def admin_leak(state: ServiceState, body: Body) -> Reply:
    """POST /admin/leak {"mb_per_s": r}: start (or, with 0, stop) leaking memory."""
    rate = _field_number(body, "mb_per_s", MAX_LEAK_MB_PER_S)
    switches = state.change(lambda s: s._replace(leak_mb_per_s=rate))
    return _ok(leak_mb_per_s=switches.leak_mb_per_s)


def admin_health(state: ServiceState, body: Body) -> Reply:
    """POST /admin/health {"fail": b}: make the probe answer 503 (or 200 again)."""
    fail = _field_bool(body, "fail")
    return _ok(fail_health=state.change(lambda s: s._replace(fail_health=fail)).fail_health)


def admin_pool_restart(state: ServiceState, body: Body) -> Reply:
    """POST /admin/pool/restart: target of a playbook's `restart_connection_pool` action."""
    return _ok(restarted=True, count=state.restart_pool())


def admin_reset(state: ServiceState, body: Body) -> Reply:
    """POST /admin/reset: back to the start-up switches, so tests can reuse one process."""
    state.reset()
    return Reply(200, {"reset": True, **state.snapshot()})


ADMIN_ROUTES: dict[str, tuple[str, Action]] = {
    "/admin/state": ("GET", admin_state),
    "/admin/crash": ("POST", admin_crash),
    "/admin/hang": ("POST", admin_hang),
    "/admin/errors": ("POST", admin_errors),
    "/admin/latency": ("POST", admin_latency),
    "/admin/leak": ("POST", admin_leak),
    "/admin/cpu": ("POST", admin_cpu),
    "/admin/health": ("POST", admin_health),
    "/admin/pool/restart": ("POST", admin_pool_restart),
    "/admin/reset": ("POST", admin_reset),
}


# --- HTTP plumbing ----------------------------------------------------------------------------


class ServiceHandler(BaseHTTPRequestHandler):
    """Routes requests to the shared ServiceState and writes JSON answers."""

    server_version = "phoenix-example-web/1"
    protocol_version = "HTTP/1.1"  # keep-alive, like the services Phoenix fronts in practice
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

    def do_GET(self) -> None:
        """Serve /health, /admin/state and ordinary work."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Serve the admin switches."""
        self._dispatch("POST")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Stay silent per request: benchmarks send thousands and logs must stay small."""

    @property
    def state(self) -> ServiceState:
        """The state of the server this handler belongs to."""
        assert isinstance(self.server, ServiceServer)
        return self.server.state

    def _dispatch(self, method: str) -> None:
        self.state.block_if_hanging()
        try:
            reply = self._route(method, urlsplit(self.path).path)
        except BadRequest as exc:
            reply = Reply(400, {"error": str(exc)})
        self._send(reply)
        if reply.after is not None:
            reply.after()

    def _route(self, method: str, path: str) -> Reply:
        if path == "/admin" or path.startswith("/admin/"):
            return self._admin(method, path)
        if method != "GET":
            return Reply(404, {"error": "not found", "path": path})
        if path == "/health":
            return self.state.health()
        return self.state.work()

    def _admin(self, method: str, path: str) -> Reply:
        route = ADMIN_ROUTES.get(path)
        if route is None:
            return Reply(404, {"error": "not found", "path": path})
        expected, action = route
        if method != expected:
            return Reply(405, {"error": f"use {expected} for {path}"})
        body = self._read_body() if method == "POST" else {}
        return action(self.state, body)

    def _read_body(self) -> Body:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(f"body must be 0..{MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.payload).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class ServiceServer(ThreadingHTTPServer):
    """Threaded so a hung or slow request never stops the others from being accepted."""

    daemon_threads = True  # hung handler threads must not keep the process alive on SIGTERM
    allow_reuse_address = True  # a restarted service rebinds its port at once
    request_queue_size = 1024  # the default of 5 drops connections under any real load

    def __init__(self, address: tuple[str, int], state: ServiceState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        super().__init__(address, ServiceHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the host, which can stall start-up."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log one line, not a traceback: clients giving up on slow answers are routine here."""
        error = sys.exc_info()[1]
        print(f"request from {client_address} failed: {error!r}", file=sys.stderr, flush=True)


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line; every fault can also be switched on at start-up."""
    parser = OneLineErrorParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else "")
    add = parser.add_argument
    add("--port", type=port_number, required=True, help="TCP port to listen on (0: any free)")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--name", default="web", help="service name reported in every answer")
    add("--version", default=os.environ.get("SERVICE_VERSION", "v1"), help="reported version")
    add("--error-rate", type=fraction, default=0.0, help="fraction of requests answered 500")
    add("--latency-ms", type=milliseconds, default=0.0, help="delay added to ordinary requests")
    add("--leak-mb-per-s", type=leak_rate, default=0.0, help="leak memory at this rate")
    add("--crash-after", type=seconds, help="exit with code 1 after this many seconds")
    add("--hang-after", type=seconds, help="stop answering after this many seconds")
    add("--fail-health", action="store_true", help="answer /health with 503")
    add("--ignore-sigterm", action="store_true", help="ignore SIGTERM (to test forced kills)")
    return parser


def state_from(options: argparse.Namespace) -> ServiceState:
    """Turn parsed options into the start-up state that /admin/reset will return to."""
    defaults = Switches(
        error_rate=options.error_rate,
        latency_ms=options.latency_ms,
        leak_mb_per_s=options.leak_mb_per_s,
        fail_health=options.fail_health,
    )
    return ServiceState(
        name=options.name,
        version=options.version,
        defaults=defaults,
        crash_after=options.crash_after,
        hang_after=options.hang_after,
    )


def schedule_faults(state: ServiceState) -> None:
    """Arm the timed faults given on the command line."""
    if state.crash_after is not None:
        schedule(state.crash_after, lambda: exit_now(1, "crash-after"))
    if state.hang_after is not None:
        schedule(state.hang_after, lambda: state.change(lambda s: s._replace(hanging=True)))


def serve(options: argparse.Namespace) -> int:
    """Bind, announce, and serve until a shutdown signal unwinds us."""
    state = state_from(options)
    try:
        server = ServiceServer((options.host, options.port), state)
    except OSError as exc:
        print(f"{PROG}: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr)
        return 1
    with server:
        where = f"{server.server_name}:{server.server_port}"
        print(
            f"web {state.name} {state.version} listening on {where} pid {os.getpid()}", flush=True
        )
        schedule_faults(state)
        server.serve_forever(poll_interval=0.05)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 after SIGTERM/SIGINT)."""
    install_shutdown_handlers()
    try:
        options = build_parser().parse_args(argv)
        install_shutdown_handlers(ignore_sigterm=options.ignore_sigterm)
        return serve(options)
    except ShutdownRequested:
        return 0


if __name__ == "__main__":
    sys.exit(main())
