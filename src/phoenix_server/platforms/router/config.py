"""What a router is told: its backends, its circuit, its fallback — and what it reports back.

Phoenix (the control plane) sends a :class:`RouterConfig` over the router's control socket;
the router keeps serving with the last one it got, and saves it to its state file so that
even a restarted router comes back with it. Plain dataclasses with JSON round trips, so
both processes agree on one definition.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class BackendState(StrEnum):
    ACTIVE = "active"
    """Receives new requests, in proportion to its weight."""
    DRAINING = "draining"
    """Finishes what it has; receives nothing new (about to be stopped)."""


class CircuitMode(StrEnum):
    CLOSED = "closed"
    """Normal: traffic flows to the active backends."""
    OPEN = "open"
    """No traffic to the service: requests wait briefly, then get the fallback."""
    HALF_OPEN = "half_open"
    """A share (``admit``) of requests goes through; the rest get the fallback."""


@dataclass(frozen=True)
class Backend:
    id: str
    port: int
    host: str = "127.0.0.1"
    weight: int = 100
    state: BackendState = BackendState.ACTIVE


@dataclass(frozen=True)
class Fallback:
    status: int = 503
    body: str = ""
    content_type: str = "text/plain"
    retry_after: int = 5
    """Seconds, sent as ``Retry-After`` with a 503."""
    upstream: str | None = None
    """``host:port`` of a fallback service that answers first; the static answer is used
    only if it cannot."""


@dataclass(frozen=True)
class RouterConfig:
    service: str
    backends: tuple[Backend, ...] = ()
    circuit: CircuitMode = CircuitMode.CLOSED
    admit: float = 1.0
    """Share of requests let through while half-open (0-1)."""
    queue_limit: int = 1000
    """Requests that may wait for a backend at once; more are answered at once."""
    queue_timeout: float = 2.0
    """Seconds a request waits for a backend (none active, or circuit open) before the
    fallback answers it: long enough to ride out a restart, short enough not to hang."""
    fallback: Fallback = field(default_factory=Fallback)
    version: int = 0
    """Incremented by Phoenix on every change, so a stale push can be recognised."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RouterConfig:
        data: dict[str, Any] = json.loads(text)
        return cls(
            service=data["service"],
            backends=tuple(
                Backend(
                    id=b["id"],
                    port=int(b["port"]),
                    host=b.get("host", "127.0.0.1"),
                    weight=int(b.get("weight", 100)),
                    state=BackendState(b.get("state", "active")),
                )
                for b in data.get("backends", [])
            ),
            circuit=CircuitMode(data.get("circuit", "closed")),
            admit=float(data.get("admit", 1.0)),
            queue_limit=int(data.get("queue_limit", 1000)),
            queue_timeout=float(data.get("queue_timeout", 2.0)),
            fallback=Fallback(**data.get("fallback", {})),
            version=int(data.get("version", 0)),
        )


@dataclass
class BackendStats:
    """Cumulative counters of one backend since the router started."""

    requests: int = 0
    """Requests sent to it."""
    errors: int = 0
    """Answers with a 5xx status."""
    broken: int = 0
    """Exchanges that broke (refused, reset) — the request may have been sent elsewhere."""
    in_flight: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    """Percentiles over its most recent answers (a bounded window)."""


@dataclass
class RouterStats:
    service: str
    started_at: float
    """The router process's start (epoch seconds): counters restart with it."""
    received: int = 0
    """Requests received from clients."""
    rejected: int = 0
    """Answered by the router itself: no backend in time, circuit open, queue full."""
    fallback_served: int = 0
    """Answered by the fallback upstream instead of the service (degraded, not lost)."""
    failed: int = 0
    """Forwarded but broke with no answer possible elsewhere (the client saw an error)."""
    queued: int = 0
    """Waiting for a backend right now."""
    reopened: int = 0
    """Times a failure while half-open sent the circuit back to open."""
    circuit: str = "closed"
    config_version: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    """Over every backend's recent answers."""
    retired_requests: int = 0
    retired_errors: int = 0
    retired_broken: int = 0
    """The counters of backends since removed (their history stays in the totals)."""
    backends: dict[str, BackendStats] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.retired_errors + sum(b.errors for b in self.backends.values())

    @property
    def lost(self) -> int:
        """Requests clients did not get a real answer for: refused by the router, broken
        after forwarding, or answered 5xx."""
        return self.rejected + self.failed + self.errors

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RouterStats:
        data: dict[str, Any] = json.loads(text)
        backends = {k: BackendStats(**v) for k, v in data.pop("backends", {}).items()}
        return cls(**data, backends=backends)
