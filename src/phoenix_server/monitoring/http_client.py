"""A minimal keep-alive HTTP/1.1 client for health probes: asyncio.Protocol + httptools.

Probing is Phoenix's hot path, and a probe needs only a status code: bench/probe_clients
measured this client at several times aiohttp's probes per CPU-second (BENCHMARKS.md), most
of aiohttp's cost being machinery a probe does not use. What it does: one request at a time
per connection, idle connections reused per scheme/host/port (a bounded number, dropped
after :data:`IDLE_TTL`), Content-Length, chunked and read-until-close bodies (drained after
the status is known, up to :data:`MAX_BODY`), TLS with certificate checks through asyncio's
ssl, and one deadline per request that covers connecting, sending and the response head.
What it does not: redirects (a probe reports them as the status they are), proxies, cookies,
compression, request bodies, HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools
import yarl

USER_AGENT = "phoenix-probe"
MAX_HEAD = 64 * 1024
"""Bytes of status line and headers read before the response is called garbage."""
MAX_BODY = 1024 * 1024
"""Body bytes drained for keep-alive; a longer body closes the connection instead."""
IDLE_TTL = 15.0
"""Seconds an idle connection is kept (servers drop idle ones after 5-75 s)."""
MAX_IDLE_PER_HOST = 256
"""Idle connections kept per scheme/host/port: the most probes in flight at once."""


class HttpError(Exception):
    """A request that got no usable answer."""


class ConnectError(HttpError):
    """The connection could not be opened (refused, unreachable, TLS handshake failed)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class ServerDisconnected(HttpError):
    """The server closed the connection before the response head arrived."""


class BadResponse(HttpError):
    """The server answered something that is not an HTTP/1.x response (or too much of it)."""


@dataclass(frozen=True)
class Endpoint:
    """A URL taken apart once, with the request bytes ready to send."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    request: bytes
    head_only: bool = False

    @classmethod
    def parse(cls, url: str, method: str = "GET") -> Endpoint:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parsed.port
        assert port is not None  # yarl fills in the scheme's default
        lines = [
            f"{method} {parsed.raw_path_qs or '/'} HTTP/1.1",
            f"Host: {parsed.host_port_subcomponent}",
            f"User-Agent: {USER_AGENT}",
            "Accept: */*",
        ]
        if method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        host = parsed.raw_host
        tls = parsed.scheme == "https"
        return cls((parsed.scheme, host, port), host, port, tls, request, method == "HEAD")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self, client: HttpClient, key: tuple[str, str, int]) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None
        self._head_only = False
        self._busy = False
        self._status = 0
        self._head_bytes = 0
        self._body_bytes = 0
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._busy = False
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._resolve_error(ServerDisconnected("server closed the connection without answering"))

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Bytes nobody asked for: the next response would be misread, so stop here.
            self.abort()
            return
        if self._status == 0:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._resolve(self._parser.get_status_code())
            self.abort()  # a protocol switch: nothing more of HTTP/1.1 to read here
            return
        except httptools.HttpParserError as exc:
            self._resolve_error(BadResponse(f"malformed response: {exc}"))
            self.abort()
            return
        if self._status == 0 and self._head_bytes > MAX_HEAD:
            self._resolve_error(BadResponse(f"response head longer than {MAX_HEAD} bytes"))
            self.abort()
        elif self._body_bytes > MAX_BODY:
            self.abort()  # the status is known; only keep-alive is given up

    def eof_received(self) -> bool | None:
        return False  # close the transport: half-open is of no use to a client

    # -- httptools callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._status = status
        self._resolve(status)
        if self._head_only:
            # A HEAD response announces a body it does not send, which the parser cannot
            # know: it is complete now, and a fresh parser reads the next one.
            self._parser = httptools.HttpResponseParser(self)
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self._status == 0:
            return  # the end of an interim answer
        if not self._parser.should_keep_alive():
            self.abort()
            return
        self._finish()

    # -- the client's side ------------------------------------------------------------------

    def send(self, endpoint: Endpoint, waiter: asyncio.Future[int]) -> None:
        self._waiter = waiter
        self._head_only = endpoint.head_only
        self._busy = True
        self._status = self._head_bytes = self._body_bytes = 0
        if self.closed or self.transport is None:
            # Closed between connecting and sending: no answer would ever come.
            self._resolve_error(ServerDisconnected("server closed the connection"))
            return
        self.transport.write(endpoint.request)

    def drain_then_release(self, timeout: float) -> None:
        """The status is known but the body is still coming: keep reading it (up to
        :data:`MAX_BODY`, within ``timeout``), then return the connection to the pool."""
        if not self._busy:
            self._client._release(self)
        elif not self.closed:
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(timeout, self.abort)

    def usable(self) -> bool:
        return (
            not self.closed
            and not self._busy
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def abort(self) -> None:
        self.closed = True
        self._busy = False
        if self.transport is not None:
            self.transport.abort()

    def _finish(self) -> None:
        self._busy = False
        self._waiter = None
        if self._drain_timer is not None:
            # The body arrived after the status was handed over: back into the pool now.
            self._drain_timer.cancel()
            self._drain_timer = None
            self._client._release(self)

    def _resolve(self, status: int) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _resolve_error(self, error: HttpError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class HttpClient:
    """Sends requests and returns status codes, reusing keep-alive connections.

    Every failure is one of :class:`HttpError`'s kinds or :class:`TimeoutError`."""

    def __init__(
        self,
        *,
        max_idle_per_host: int = MAX_IDLE_PER_HOST,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._max_idle_per_host = max_idle_per_host
        self._ssl = ssl_context
        self._swept = time.monotonic()
        self._closed = False

    async def request(self, endpoint: Endpoint, timeout: float) -> int:
        """The response's status; :class:`TimeoutError` when no response head arrives within
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connection = self._acquire(endpoint.key)
        if connection is None:
            connection = await self._connect(endpoint, deadline)
        waiter: asyncio.Future[int] = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        connection.send(endpoint, waiter)
        try:
            status = await waiter
        except BaseException:
            # Timed out, cancelled or broken mid-response: the connection's state is unknown.
            connection.abort()
            raise
        finally:
            timer.cancel()
        connection.drain_then_release(max(0.0, deadline - loop.time()) + timeout)
        return status

    def idle_connections(self) -> int:
        """Connections kept open for reuse, over all hosts."""
        return sum(len(pool) for pool in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            for connection in pool:
                connection.abort()
        self._idle.clear()

    def _acquire(self, key: tuple[str, str, int]) -> _Connection | None:
        now = time.monotonic()
        if now - self._swept > IDLE_TTL:
            self._sweep(now)
        pool = self._idle.get(key)
        while pool:
            # Most recently used first: the likeliest to be alive on the server's side too.
            connection = pool.pop()
            if connection.usable() and now - connection.idle_since < IDLE_TTL:
                return connection
            connection.abort()
        return None

    def _release(self, connection: _Connection) -> None:
        if self._closed or not connection.usable():
            connection.abort()
            return
        pool = self._idle.setdefault(connection.key, deque())
        if len(pool) >= self._max_idle_per_host:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        pool.append(connection)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key, pool in list(self._idle.items()):
            kept: deque[_Connection] = deque()
            for connection in pool:
                if connection.usable() and now - connection.idle_since < IDLE_TTL:
                    kept.append(connection)
                else:
                    connection.abort()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    async def _connect(self, endpoint: Endpoint, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if endpoint.tls else None
        try:
            async with asyncio.timeout_at(deadline):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, endpoint.key),
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.host if context else None,
                )
        except TimeoutError:
            raise  # the deadline passed while connecting: a timeout, not a refusal
        except OSError as exc:  # (TimeoutError is an OSError too: caught above)
            raise ConnectError(exc) from exc
        return protocol

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Built once, when first needed: loading the system's certificates costs
            # milliseconds.
            self._ssl = ssl.create_default_context()
        return self._ssl


def _expire(waiter: asyncio.Future[int]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
