"""The HTTP front door: uvicorn's httptools protocol with three guards it lacks.

- **A connection cap.** Every open connection holds a file descriptor, and so does every
  process Phoenix starts, every probe and every log file. Without a cap, a flood of idle
  sockets takes the last descriptors and recovery work fails with "Too many open
  files". Past the cap, the connection that has left its request unfinished the longest
  is closed to make room (so a liveness probe still gets in); if every connection is busy
  with a request, the new one gets a short 503.
- **A header deadline.** A request whose headers have not all arrived within
  ``header_timeout`` seconds of its first byte (or of the connection, for the first
  request) is closed: half-sent requests cannot pin connections forever. uvicorn only
  times out idle keep-alive connections, not slow ones.
- **A fast path for ``GET /health``.** Liveness is answered straight from the parser
  callback, without an ASGI task, middleware or a database: it cannot queue behind heavy
  endpoints, so a probe with a 1 s timeout never kills a healthy Phoenix under load.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from phoenix_server.api.request_checks import host_acceptable

log = logging.getLogger("phoenix.api")

REFUSAL_LOG_EVERY = 10.0
"""Seconds between log lines about refused connections (a flood must not flood the log)."""
FD_RESERVE_SHARE = 0.25
FD_RESERVE_MIN = 128
"""File descriptors kept for recovery work (processes, pipes, probes, the database)."""


@dataclass(frozen=True)
class FrontDoorLimits:
    max_connections: int
    """Open API connections at most; beyond, 503 and close."""
    header_timeout: float = 10.0
    """Seconds a request may take to send its headers."""


def default_limits(header_timeout: float = 10.0) -> FrontDoorLimits:
    """The cap leaves a reserve of the process's descriptor limit for recovery work: a
    quarter of it, at least 128 (with ``ulimit -n 1024``: 768 API connections)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65536
    reserve = max(FD_RESERVE_MIN, int(soft * FD_RESERVE_SHARE))
    return FrontDoorLimits(
        max_connections=max(16, soft - reserve),
        header_timeout=header_timeout,
    )


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what the operator allows): the
    default soft limit of 1024 is far below what a fleet needs. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_BUSY_BODY = (
    b'{"success":false,"error":{"code":"unavailable","message":"too many open connections '
    b'to Phoenix; retry shortly","details":[]}}'
)
_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


@dataclass(frozen=True)
class HealthPage:
    render: Callable[[], bytes]
    """``GET /health``'s JSON body, from memory."""


class _Refusals:
    """Counts refused connections and says so at most every ``REFUSAL_LOG_EVERY`` s."""

    def __init__(self) -> None:
        self.total = 0
        self.last_at = float("-inf")
        self.last_what = ""
        self._unlogged = 0
        self._logged_at = float("-inf")

    def note(self, what: str) -> None:
        self.last_at = time.monotonic()
        self.last_what = what
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_EVERY:
            log.warning("API: %s (%d in the last %.0fs)", what, self._unlogged, REFUSAL_LOG_EVERY)
            self._logged_at = now
            self._unlogged = 0

    def recent(self, within: float = 60.0) -> str | None:
        """What was refused in the last ``within`` seconds, for /health."""
        if time.monotonic() - self.last_at > within:
            return None
        return f"API {self.last_what} ({self.total} since start)"


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's protocol behind a cap, a header deadline and a /health fast path. Made
    concrete by :func:`guarded_protocol` (uvicorn builds protocols from a class)."""

    limits: ClassVar[FrontDoorLimits]
    health: ClassVar[HealthPage | None]
    over_cap: ClassVar[_Refusals]
    too_slow: ClassVar[_Refusals]
    waiting: ClassVar[dict[GuardedProtocol, None]]
    """Connections in the middle of sending a request's headers, oldest first."""
    accepted_hosts: ClassVar[frozenset[str] | None]
    """``Host`` names the fast path answers (None: any); others go through the app, which
    refuses them (421) like any request, so a DNS-rebinding page cannot read /health."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._fast_health: bytes | None = None
        """Set between a fast-path request's headers and its end: the method, HEAD or GET."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Make room by closing the connection that has kept its request unfinished the
            # longest (a slow or idle client): a new caller, such as a liveness probe that
            # opens a connection each time, is served. With none to close, refuse this one.
            victim = next(iter(self.waiting), None)
            if victim is None:
                self.over_cap.note(
                    f"over {self.limits.max_connections} open connections, all busy: "
                    "refusing new ones"
                )
                transport.write(_BUSY % (len(_BUSY_BODY), _BUSY_BODY))
                transport.close()
                return
            self.over_cap.note(
                f"over {self.limits.max_connections} open connections: closing the ones "
                "idle longest in the middle of a request"
            )
            victim._close_unfinished()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.limits.header_timeout, self._headers_too_slow
            )
            self.waiting[self] = None

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
            self.waiting.pop(self, None)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self.waiting.pop(self, None)
        self.too_slow.note(
            f"closing connection(s) whose request headers took over {self.limits.header_timeout:g}s"
        )
        self._close_unfinished()

    def _close_unfinished(self) -> None:
        self._disarm_header_deadline()
        if self.transport.is_closing():
            return
        message = b"request headers took too long"
        self.transport.write(_TOO_SLOW % (len(message), message))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()  # a keep-alive connection's next request starts now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # An idle keep-alive connection is uvicorn's (its keep-alive timeout); the deadline
        # starts again with the next request's first byte.
        self._disarm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        method = self.parser.get_method()
        if (
            self.health is not None
            and method in (b"GET", b"HEAD")
            and self.url.partition(b"?")[0] == b"/health"
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            and self._host_accepted()
        ):
            self._fast_health = method
            return
        super().on_headers_complete()

    def _host_accepted(self) -> bool:
        if self.accepted_hosts is None:
            return True
        host = next((value for name, value in self.headers if name == b"host"), None)
        return host is None or host_acceptable(host.decode("latin-1"), self.accepted_hosts)

    def on_body(self, body: bytes) -> None:
        if self._fast_health is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._fast_health is None:
            super().on_message_complete()
            return
        method, self._fast_health = self._fast_health, None
        self._answer_health(head=method == b"HEAD")

    def _answer_health(self, *, head: bool) -> None:
        assert self.health is not None
        try:
            body, status = self.health.render(), b"200 OK"
        except Exception:  # a bug here must not take liveness down with an unclear error
            log.exception("GET /health failed")
            body = b'{"success":false,"error":{"code":"error","message":"health report failed"}}'
            status = b"500 Internal Server Error"
        keep_alive = self.parser.should_keep_alive()
        head_lines = [b"HTTP/1.1 ", status, b"\r\n"]
        for name, value in self.server_state.default_headers:
            head_lines += [name, b": ", value, b"\r\n"]
        head_lines += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
            b"" if keep_alive else b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head_lines) + (b"" if head else body))
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()


def problems(protocol: type[GuardedProtocol]) -> list[str]:
    """What the front door refused lately (for /health's warnings)."""
    found = (protocol.over_cap.recent(), protocol.too_slow.recent())
    return [text for text in found if text is not None]


def guarded_protocol(
    limits: FrontDoorLimits,
    health_body: Callable[[], bytes] | None,
    accepted_hosts: frozenset[str] | None = None,
) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits; ``health_body``
    renders ``GET /health`` for the ``accepted_hosts`` (None: any) and the app does for the
    rest (``health_body`` None: always the app, like any route)."""
    return type(
        "PhoenixHttpProtocol",
        (GuardedProtocol,),
        {
            "limits": limits,
            "health": HealthPage(health_body) if health_body is not None else None,
            "over_cap": _Refusals(),
            "too_slow": _Refusals(),
            "waiting": {},
            "accepted_hosts": accepted_hosts,
        },
    )
