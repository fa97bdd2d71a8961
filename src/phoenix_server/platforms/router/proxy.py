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

from phoenix_server.platforms.router.config import (
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


FALLBACK_ID = "fallback-upstream"
"""The fallback upstream's id: it is no backend of the service, so it has no counters."""


class Request:
    """One parsed client request, rebuilt for the backend."""

    __slots__ = (
        "fell_back",
        "head_only",
        "idempotent",
        "keep_alive",
        "raw",
        "received",
        "upgrade",
    )

    def __init__(
        self, raw: bytes, *, method: bytes, keep_alive: bool, upgrade: bool, received: float
    ) -> None:
        self.raw = raw
        self.head_only = method == b"HEAD"
        self.idempotent = method in IDEMPOTENT
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.received = received
        self.fell_back = False
        """Sent to the fallback upstream already: if that fails too, the static answer."""


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
        self.fallback_upstream: Backend | None = None
        self.apply(config)

    # -- configuration ----------------------------------------------------------------------

    def apply(self, config: RouterConfig) -> None:
        """Take a new configuration; waiting requests look again at once."""
        self.config = config
        self.stats.config_version = config.version
        self.stats.circuit = config.circuit.value
        self.fallback_upstream = None
        if config.fallback.upstream:
            host, _, port = config.fallback.upstream.rpartition(":")
            self.fallback_upstream = Backend(id=FALLBACK_ID, port=int(port), host=host)
        known = {b.id for b in config.backends}
        for backend_id in list(self._tracks):
            if backend_id not in known:
                track = self._tracks.pop(backend_id)
                # Its history stays in the totals: losses must not vanish with a backend.
                self.stats.retired_requests += track.stats.requests
                self.stats.retired_errors += track.stats.errors
                self.stats.retired_broken += track.stats.broken
                for connection in track.idle:
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

    async def wait_for_change(self, timeout: float) -> None:
        """Until the configuration changes, or ``timeout`` seconds."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

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

    def refused(self, backend: Backend) -> None:
        """A connection to ``backend`` failed: pass it over for a while, and count it."""
        track = self._tracks.get(backend.id)
        if track is not None:
            track.stats.broken += 1
        self.mark_suspect(backend)

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
        self.pending: collections.deque[Request] = collections.deque()
        self.slow: asyncio.Task[None] | None = None
        self.tunnel: Upstream | None = None
        self.tunnel_head = b""
        self.paused_upstream: Upstream | None = None
        self.exchanging: Upstream | None = None
        """The backend connection carrying this client's current request."""
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
        self.pending.clear()
        if self.exchanging is not None:
            self.exchanging.client_left()  # e.g. paused by back-pressure: it would wait forever
        if self.slow is not None and not self.slow.done():
            self.slow.cancel()  # it was waiting for a backend: nothing is in flight upstream
            if self.busy:
                self.busy = False
                self.router.in_flight -= 1
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
        dropped = set(DROPPED_REQUEST_HEADERS)
        for name, value in self.headers:
            if name.lower() == b"connection":
                # Headers the client names in Connection are for this hop only (RFC 9110).
                dropped.update(token.strip().lower() for token in value.split(b","))
        for name, value in self.headers:
            lowered = name.lower()
            kept_for_upgrade = upgrade and lowered in (b"upgrade", b"connection")
            if lowered not in dropped or kept_for_upgrade:
                lines.append(name + b": " + value)
        if self.body or method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: " + str(len(self.body)).encode())
        lines.append(b"X-Forwarded-For: " + self.peer)
        self.pending.append(
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
        self._next()

    # -- serving ----------------------------------------------------------------------------
    #
    # The common case runs on callbacks alone: a backend at hand and an idle connection to
    # it, the answer handed back by the connection. Waiting (for a backend, a connection, a
    # retry) happens in a task, only when needed.

    def _next(self) -> None:
        """Serve the next request, if none is being served (answers keep their order)."""
        if self.busy or not self.pending or self.transport is None or self.transport.is_closing():
            return
        request = self.pending.popleft()
        self.busy = True
        router = self.router
        router.in_flight += 1
        if not router.admitted():
            self._answer_instead(request)
            return
        backend = router.choose() if router.config.circuit is CircuitMode.CLOSED else None
        connection = router.idle_connection(backend) if backend is not None else None
        if backend is not None and connection is not None:
            self._send(request, backend, connection, frozenset())
        else:
            # The choice stands (the rotation must not skip a backend for want of an open
            # connection); connecting, or waiting for a backend, happens in a task.
            self.slow = router.loop.create_task(self._find_backend(request, frozenset(), backend))

    async def _find_backend(
        self, request: Request, tried: frozenset[str], chosen: Backend | None = None
    ) -> None:
        router = self.router
        deadline = request.received + router.config.queue_timeout
        if tried:
            tried = await self._next_try(tried, deadline)
        while True:
            backend = chosen or await router.wait_for_backend(deadline, tried)
            chosen = None
            if backend is None:
                self._answer_instead(request)
                return
            try:
                connection = router.idle_connection(backend) or await router.connect(backend)
            except (OSError, TimeoutError):
                # Nothing was sent: another backend may take it, or this one once it is up.
                router.refused(backend)
                tried = await self._next_try(tried | {backend.id}, deadline)
                continue
            self._send(request, backend, connection, tried)
            return

    async def _next_try(self, tried: frozenset[str], deadline: float) -> frozenset[str]:
        """Prefer backends not tried yet; when all have been, pause and start over (a backend
        coming back up, or a connection queue draining), until the deadline — or at once
        when Phoenix changes the backends."""
        if self.router.any_left(tried) or self.router.loop.time() >= deadline:
            return tried
        await self.router.wait_for_change(RETRY_PAUSE)
        return frozenset()

    def _send(
        self, request: Request, backend: Backend, connection: Upstream, tried: frozenset[str]
    ) -> None:
        track = self.router.started(backend)
        began = self.router.loop.time()

        def answered(outcome: Outcome) -> None:
            self.exchanging = None
            self.router.finished(track, outcome, self.router.loop.time() - began)
            self._answered(request, backend, connection, tried, outcome)

        self.exchanging = connection
        connection.begin(request, self, answered)

    def _answered(
        self,
        request: Request,
        backend: Backend,
        connection: Upstream,
        tried: frozenset[str],
        outcome: Outcome,
    ) -> None:
        router = self.router
        if outcome.tunnel:
            self.tunnel = connection
            if self.tunnel_head:
                connection.write(self.tunnel_head)
            self._done(True)
            return
        if outcome.complete:
            if outcome.keep_alive:
                router.release(backend, connection)
            else:
                connection.close()
            self._done(request.keep_alive and outcome.keep_alive)
            return
        connection.close()
        if outcome.client_gone:
            self._done(False)
        elif outcome.started or not request.idempotent:
            router.stats.failed += 1
            if not outcome.started:  # half an answer has gone out: only closing can say so
                self.write(plain_answer(502, "the backend broke off the request", keep_alive=False))
            self._done(False)
        else:
            router.mark_suspect(backend)  # broke before answering: safe to send again
            self.slow = router.loop.create_task(self._find_backend(request, tried | {backend.id}))

    def _done(self, keep: bool) -> None:
        """One request served: the next one, or close if the connection must end."""
        self.router.in_flight -= 1
        self.busy = False
        if keep:
            self._next()
        else:
            self.close()

    def _answer_instead(self, request: Request) -> None:
        """No instance can take ``request``: the fallback upstream, else the static answer."""
        upstream = self.router.fallback_upstream
        if upstream is None or request.fell_back:
            self._done(self._fallback(request))
            return
        request.fell_back = True
        self.slow = self.router.loop.create_task(self._via_fallback(request, upstream))

    async def _via_fallback(self, request: Request, upstream: Backend) -> None:
        try:
            connection = await self.router.connect(upstream)
        except (OSError, TimeoutError):
            self._done(self._fallback(request))
            return
        self.router.stats.fallback_served += 1
        self._send(request, upstream, connection, frozenset({upstream.id}))

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
        self.on_done: Callable[[Outcome], None] | None = None
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

    def begin(self, request: Request, client: Client, on_done: Callable[[Outcome], None]) -> None:
        """Send ``request``; ``on_done`` gets the outcome (on a later turn of the loop)."""
        self.client = client
        self.outcome = Outcome()
        self.on_done = on_done
        if self.transport is None or self.transport.is_closing() or not self.usable:
            self._finish(complete=False)  # closed while it sat in the pool: nothing was sent
            return
        self.head_only = request.head_only
        self.framed = False
        self.streaming = False
        self.held.clear()
        self.parser = httptools.HttpResponseParser(self)
        self.transport.write(request.raw)

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
            # Normally the 101 has ended the exchange already (on_message_complete); if the
            # parser only signalled the upgrade, do the same here. Either way everything
            # received, head and any bytes after it, has gone or goes to the client.
            if self.tunnel_client is None and self.outcome is not None:
                self.outcome.status = self.outcome.status or 101
                self.on_message_complete()
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

    def client_left(self) -> None:
        """The client hung up mid-exchange: end it, and the connection with it (half an
        answer would be left in it)."""
        if self.outcome is not None:
            self.outcome.client_gone = True
            self.held.clear()
            self._finish(complete=False)
        self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        assert self.outcome is not None
        self.outcome.status = self.parser.get_status_code()
        if self.head_only and self.outcome.status >= 200:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        outcome = self.outcome
        if outcome is None:
            return
        status = outcome.status or 0
        if status == 101:
            # Switching protocols: from here on bytes flow both ways unparsed.
            if self._flush():
                outcome.tunnel = True
                self.tunnel_client = self.client
                self.usable = False
                self._finish(complete=True)
            return
        if 100 <= status < 200:
            # Informational (100 Continue, 103 Early Hints): the real answer follows.
            outcome.status = None
            self.framed = False
            return
        outcome.keep_alive = self.parser.should_keep_alive()
        if self._flush():
            self._finish(complete=True)

    def _finish(self, *, complete: bool) -> None:
        outcome, on_done = self.outcome, self.on_done
        if outcome is None or on_done is None:
            return
        outcome.complete = complete
        self.client, self.outcome, self.on_done = None, None, None
        # Deferred: the callback may hand this connection a new request, which must not
        # happen while its parser is still inside feed_data.
        self.router.loop.call_soon(on_done, outcome)

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
