"""The router's data path: an HTTP/1.1 reverse proxy on asyncio protocols and httptools.

Requests are parsed with httptools (the parser uvicorn uses), buffered whole, and sent
rebuilt — hop-by-hop headers dropped, ``X-Forwarded-For`` added — to a backend chosen by
smooth weighted round robin among the active ones. Responses stream back as raw bytes while
a response parser finds where each one ends, so keep-alive, chunked and close-delimited
answers all pass through unchanged. An answer is held back until it is complete (up to
256 KiB, then it streams with back-pressure from slow clients), so that a backend dying in
the middle of one has sent the client nothing yet and a GET can be answered elsewhere.

What keeps requests from being lost: a backend that refuses a connection is passed over for
a moment and the request (not sent yet) goes to another; an idempotent request whose
connection broke before any answer is sent again elsewhere; a request with no backend to go
to — every instance restarting, the circuit open — waits (bounded) for one to appear. Only
then does the router answer itself, with the service's fallback (a 503 with ``Retry-After``
by default). Draining backends get no new requests. Every request and failure is counted per
backend: those counts are the service's throughput, error rate and requests lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from typing import Any, cast

import httptools

from phoenix_server.platforms.local.router.config import (
    Backend,
    BackendState,
    BackendStats,
    CircuitMode,
    RouterConfig,
    RouterStats,
)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT = 1.0
SUSPECT_FOR = 1.0
"""Seconds a backend that refused a connection is passed over (Phoenix will hear of it)."""
RETRY_PAUSE = 0.02
"""Seconds between rounds of connection attempts when every backend has refused."""
IDLE_PER_BACKEND = 64
HOLD_LIMIT = 256 * 1024
"""Bytes of an answer held back before it starts streaming to the client."""
LATENCY_WINDOW = 1024
DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"content-length",
    }
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    return f"HTTP/1.1 {status} {phrase}"


def plain_answer(status: int, text: str, *, keep_alive: bool, extra: str = "") -> bytes:
    body = text.encode()
    head = (
        f"{status_line(status)}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n"
    )
    return head.encode() + body


class Request:
    """One parsed client request, rebuilt for the backend."""

    __slots__ = ("head_only", "idempotent", "keep_alive", "raw", "received", "upgrade")

    def __init__(
        self, raw: bytes, *, method: bytes, keep_alive: bool, upgrade: bool, received: float
    ) -> None:
        self.raw = raw
        self.head_only = method == b"HEAD"
        self.idempotent = method in IDEMPOTENT
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.received = received


class Outcome:
    """How one exchange with a backend ended."""

    __slots__ = ("client_gone", "complete", "keep_alive", "started", "status", "tunnel")

    def __init__(self) -> None:
        self.status: int | None = None
        self.complete = False
        self.keep_alive = False
        self.started = False
        """Response bytes reached the client: the request cannot be sent elsewhere."""
        self.client_gone = False
        self.tunnel = False


class _Track:
    """Per-backend bookkeeping: counters, latencies, idle connections, passive health."""

    def __init__(self) -> None:
        self.stats = BackendStats()
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.idle: list[Upstream] = []
        self.suspect_until = 0.0
        self.current_weight = 0


class Router:
    """The shared state of one router: configuration, backend choice, waiters, counters."""

    def __init__(self, config: RouterConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.stats = RouterStats(service=config.service, started_at=time.time())
        self.in_flight = 0
        self.clients: set[Client] = set()
        self._tracks: dict[str, _Track] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.apply(config)

    # -- configuration ----------------------------------------------------------------------

    def apply(self, config: RouterConfig) -> None:
        """Take a new configuration; waiting requests look again at once."""
        self.config = config
        self.stats.config_version = config.version
        self.stats.circuit = config.circuit.value
        known = {b.id for b in config.backends}
        for backend_id in list(self._tracks):
            if backend_id not in known:
                for connection in self._tracks.pop(backend_id).idle:
                    connection.close()
        for backend in config.backends:
            self._tracks.setdefault(backend.id, _Track())
            if backend.state is not BackendState.ACTIVE:
                for connection in self._tracks[backend.id].idle:
                    connection.close()
                self._tracks[backend.id].idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- choosing a backend -----------------------------------------------------------------

    def choose(self, exclude: frozenset[str] = frozenset()) -> Backend | None:
        """Smooth weighted round robin over active backends, passing over suspects unless
        nothing else is left."""
        now = self.loop.time()
        candidates = [
            b
            for b in self.config.backends
            if b.state is BackendState.ACTIVE and b.weight > 0 and b.id not in exclude
        ]
        pool = [b for b in candidates if self._tracks[b.id].suspect_until <= now] or candidates
        if not pool:
            return None
        total = 0
        best: Backend | None = None
        best_weight = 0
        for backend in pool:
            track = self._tracks[backend.id]
            track.current_weight += backend.weight
            total += backend.weight
            if best is None or track.current_weight > best_weight:
                best, best_weight = backend, track.current_weight
        assert best is not None
        self._tracks[best.id].current_weight -= total
        return best

    def any_left(self, exclude: frozenset[str]) -> bool:
        """Whether an active backend remains that has not been tried for this request."""
        return any(
            b.state is BackendState.ACTIVE and b.weight > 0 and b.id not in exclude
            for b in self.config.backends
        )

    def admitted(self) -> bool:
        """Whether the circuit lets this request try the service at all."""
        mode = self.config.circuit
        if mode is CircuitMode.HALF_OPEN:
            return random.random() < self.config.admit
        return True  # closed; or open, where the request waits for the circuit to close

    async def wait_for_backend(
        self, deadline: float, exclude: frozenset[str] = frozenset()
    ) -> Backend | None:
        """A backend to use, waiting (bounded) while there is none or the circuit is open."""
        while True:
            if self.config.circuit is not CircuitMode.OPEN:
                backend = self.choose(exclude)
                if backend is not None:
                    return backend
            remaining = deadline - self.loop.time()
            if remaining <= 0 or len(self._waiters) >= self.config.queue_limit:
                return None
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._waiters.append(waiter)
            self.stats.queued += 1
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return None
            finally:
                self.stats.queued -= 1
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    # -- connections to backends ------------------------------------------------------------

    def idle_connection(self, backend: Backend) -> Upstream | None:
        """A kept-alive connection to ``backend``, if one is waiting."""
        track = self._tracks.get(backend.id)
        while track is not None and track.idle:
            connection = track.idle.pop()
            if connection.usable:
                return connection
        return None

    async def connect(self, backend: Backend) -> Upstream:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, protocol = await self.loop.create_connection(
                lambda: Upstream(self), backend.host, backend.port
            )
        return protocol

    def release(self, backend: Backend, connection: Upstream) -> None:
        track = self._tracks.get(backend.id)
        current = next((b for b in self.config.backends if b.id == backend.id), None)
        if (
            track is None
            or current is None
            or current.state is not BackendState.ACTIVE
            or not connection.usable
            or len(track.idle) >= IDLE_PER_BACKEND
        ):
            connection.close()
            return
        track.idle.append(connection)

    def mark_suspect(self, backend: Backend) -> None:
        track = self._tracks.get(backend.id)
        if track is not None:
            track.suspect_until = self.loop.time() + SUSPECT_FOR

    # -- accounting -------------------------------------------------------------------------

    def started(self, backend: Backend) -> _Track | None:
        track = self._tracks.get(backend.id)
        if track is not None:
            track.stats.requests += 1
            track.stats.in_flight += 1
        return track

    def finished(self, track: _Track | None, outcome: Outcome, latency: float) -> None:
        if track is None:
            return
        track.stats.in_flight -= 1
        if outcome.client_gone:
            return  # the client left: no verdict on the backend
        failed = False
        if outcome.status is not None and outcome.status >= 500:
            track.stats.errors += 1
            failed = True
        if not outcome.complete:
            track.stats.broken += 1
            failed = True
        else:
            track.latencies.append(latency * 1000)
        if failed:
            if self.config.circuit is CircuitMode.HALF_OPEN:
                # Any failure while the service is being tried again closes the door at once.
                self.apply(replace(self.config, circuit=CircuitMode.OPEN))
                self.stats.reopened += 1

    def snapshot(self) -> RouterStats:
        self.stats.backends = {}
        everything: list[float] = []
        for backend_id, track in self._tracks.items():
            ordered = sorted(track.latencies)
            everything.extend(ordered)
            stats = track.stats
            stats.latency_p50_ms, stats.latency_p95_ms, stats.latency_p99_ms = _percentiles(ordered)
            self.stats.backends[backend_id] = stats
        everything.sort()
        (
            self.stats.latency_p50_ms,
            self.stats.latency_p95_ms,
            self.stats.latency_p99_ms,
        ) = _percentiles(everything)
        return self.stats

    def fallback_bytes(self, keep_alive: bool) -> bytes:
        fallback = self.config.fallback
        body = fallback.body.encode()
        lines = [
            status_line(fallback.status),
            f"Content-Type: {fallback.content_type}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close",
            "X-Phoenix-Router: fallback",
        ]
        if fallback.status == 503:
            lines.append(f"Retry-After: {fallback.retry_after}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _percentiles(ordered: list[float]) -> tuple[float | None, float | None, float | None]:
    if not ordered:
        return None, None, None
    last = len(ordered) - 1

    def at(share: float) -> float:
        return round(ordered[min(last, int(len(ordered) * share))], 3)

    return at(0.5), at(0.95), at(0.99)


class Client(asyncio.Protocol):
    """One client connection: parse requests, serve them one at a time, in order."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.parser = httptools.HttpRequestParser(self)
        self.requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.tunnel: Upstream | None = None
        self.tunnel_head = b""
        self.paused_upstream: Upstream | None = None
        self.writable = True
        self.busy = False
        self._upgrade_queued = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.size = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b""
        self.router.clients.add(self)
        self.worker = self.router.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        self.size += len(data)
        if self.size > MAX_REQUEST_BYTES:
            self._refuse(413, "request too large for the router")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not self._upgrade_queued:
                self.on_message_complete()
            self.tunnel_head = data[upgrade.args[0] :]
        except httptools.HttpParserError:
            self._refuse(400, "malformed request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.router.clients.discard(self)
        self.requests.put_nowait(None)
        if self.tunnel is not None:
            self.tunnel.close()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.paused_upstream is not None:
            self.paused_upstream.resume()
            self.paused_upstream = None

    # -- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        upgrade = self.parser.should_upgrade()
        self._upgrade_queued = upgrade
        method = self.parser.get_method()
        lines = [method + b" " + self.url + b" HTTP/1.1"]
        for name, value in self.headers:
            lowered = name.lower()
            kept_for_upgrade = upgrade and lowered in (b"upgrade", b"connection")
            if lowered not in DROPPED_REQUEST_HEADERS or kept_for_upgrade:
                lines.append(name + b": " + value)
        if self.body or method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: " + str(len(self.body)).encode())
        lines.append(b"X-Forwarded-For: " + self.peer)
        self.requests.put_nowait(
            Request(
                b"\r\n".join(lines) + b"\r\n\r\n" + bytes(self.body),
                method=method,
                keep_alive=self.parser.should_keep_alive() and not upgrade,
                upgrade=upgrade,
                received=self.router.loop.time(),
            )
        )
        self.router.stats.received += 1
        self._reset()

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            request = await self.requests.get()
            if request is None or self.transport is None or self.transport.is_closing():
                return
            self.busy = True
            self.router.in_flight += 1
            try:
                keep = await self._forward(request)
            finally:
                self.router.in_flight -= 1
                self.busy = False
            if not keep:
                self.close()
                return

    async def _forward(self, request: Request) -> bool:
        """Serve one request; whether the client connection stays open."""
        router = self.router
        if not router.admitted():
            return self._fallback(request)
        deadline = request.received + router.config.queue_timeout
        tried: frozenset[str] = frozenset()
        while True:
            # The common case costs no awaits: a backend at hand and an idle connection to it.
            backend = router.choose(tried) if router.config.circuit is CircuitMode.CLOSED else None
            if backend is None:
                backend = await router.wait_for_backend(deadline, tried)
                if backend is None:
                    return self._fallback(request)
            try:
                connection = router.idle_connection(backend) or await router.connect(backend)
            except (OSError, TimeoutError):
                # Nothing was sent: another backend may take it, or this one once it is up.
                router.mark_suspect(backend)
                tried = await self._next_try(tried | {backend.id}, deadline)
                continue
            track = router.started(backend)
            began = router.loop.time()
            outcome = await connection.exchange(request, self)
            router.finished(track, outcome, router.loop.time() - began)
            if outcome.tunnel:
                self.tunnel = connection
                if self.tunnel_head:
                    connection.write(self.tunnel_head)
                return True
            if outcome.complete:
                if outcome.keep_alive:
                    router.release(backend, connection)
                else:
                    connection.close()
                return request.keep_alive and outcome.keep_alive
            connection.close()
            if outcome.client_gone:
                return False
            if outcome.started or not request.idempotent:
                router.stats.failed += 1
                if outcome.started:
                    return False  # half an answer has gone out: only closing can say so
                self.write(plain_answer(502, "the backend broke off the request", keep_alive=False))
                return False
            router.mark_suspect(backend)  # broke before answering: safe to send again
            tried = await self._next_try(tried | {backend.id}, deadline)

    async def _next_try(self, tried: frozenset[str], deadline: float) -> frozenset[str]:
        """Prefer backends not tried yet; when all have been, pause and start over (a backend
        coming back up, or a connection queue draining), until the deadline."""
        if self.router.any_left(tried) or self.router.loop.time() >= deadline:
            return tried
        await asyncio.sleep(RETRY_PAUSE)
        return frozenset()

    def _fallback(self, request: Request) -> bool:
        self.router.stats.rejected += 1
        self.write(self.router.fallback_bytes(request.keep_alive))
        return request.keep_alive

    def _refuse(self, status: int, text: str) -> None:
        self.router.stats.rejected += 1
        self.write(plain_answer(status, text, keep_alive=False))
        self.close()

    def write(self, data: bytes) -> bool:
        """Send response bytes to the client; False if the client is gone."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Upstream(asyncio.Protocol):
    """One connection to a backend, carrying one exchange at a time."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.usable = False
        self.client: Client | None = None
        self.outcome: Outcome | None = None
        self.done: asyncio.Future[Outcome] | None = None
        self.parser: Any = None
        self.head_only = False
        self.framed = False
        """The current response declares its length (Content-Length or chunked)."""
        self.tunnel_client: Client | None = None
        """After a 101 Switching Protocols: bytes flow both ways unparsed."""
        self.held = bytearray()
        """The answer so far, held back until it is complete (or too big to hold): if the
        backend dies mid-answer, nothing has reached the client and a GET can go elsewhere."""
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.usable = True

    async def exchange(self, request: Request, client: Client) -> Outcome:
        self.client = client
        self.outcome = Outcome()
        self.done = self.router.loop.create_future()
        if self.transport is None or self.transport.is_closing() or not self.usable:
            self._finish(complete=False)  # closed while it sat in the pool: nothing was sent
        else:
            self.head_only = request.head_only
            self.framed = False
            self.streaming = False
            self.held.clear()
            self.parser = httptools.HttpResponseParser(self)
            self.transport.write(request.raw)
        return await self.done

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.tunnel_client is not None:
            self.tunnel_client.write(data)
            return
        client, outcome = self.client, self.outcome
        if client is None or outcome is None:
            self.usable = False  # bytes nobody asked for: never reuse this connection
            return
        if self.streaming:
            if not client.write(data):
                outcome.client_gone = True
                self._finish(complete=False)
                return
            if not client.writable and self.transport is not None:
                self.transport.pause_reading()
                client.paused_upstream = self
        else:
            self.held += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._flush():
                outcome.tunnel = True
                self.tunnel_client = client
                self.usable = False
                self._finish(complete=True)
            return
        except httptools.HttpParserError:
            self._finish(complete=False)
            return
        if not self.streaming and self.outcome is not None and len(self.held) > HOLD_LIMIT:
            self.streaming = self._flush()  # too big to hold: from now on it streams

    def _flush(self) -> bool:
        """Send what is held to the client; False (and the exchange over) if it has gone."""
        client, outcome = self.client, self.outcome
        if client is None or outcome is None:
            return False
        if self.held:
            if not client.write(bytes(self.held)):
                self.held.clear()
                outcome.client_gone = True
                self._finish(complete=False)
                return False
            self.held.clear()
        outcome.started = True
        return True

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        assert self.outcome is not None
        self.outcome.status = self.parser.get_status_code()
        if self.head_only:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        if self.outcome is None:
            return
        self.outcome.keep_alive = self.parser.should_keep_alive()
        if self._flush():
            self._finish(complete=True)

    def _finish(self, *, complete: bool) -> None:
        outcome, done = self.outcome, self.done
        if outcome is None or done is None or done.done():
            return
        outcome.complete = complete
        self.client, self.outcome = None, None
        done.set_result(outcome)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.tunnel_client is not None:
            self.tunnel_client.close()
            return
        outcome = self.outcome
        if outcome is not None and outcome.status is not None and not self.framed:
            outcome.keep_alive = False  # a response without a length ends with its connection
            if self._flush():
                self._finish(complete=True)
            return
        self.held.clear()
        self._finish(complete=False)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


def client_factory(router: Router) -> Callable[[], Client]:
    return lambda: Client(router)
