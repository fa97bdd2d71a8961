"""Health vocabulary: what a probe saw, and how a service's status changed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class ServiceStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    """Serving, but not fully: some instances are down."""
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    """Not yet observed (or no longer observable)."""

    @property
    def serving(self) -> bool:
        """Whether clients are being served: counts as up for uptime."""
        return self in (ServiceStatus.HEALTHY, ServiceStatus.DEGRADED)


class ObservationKind(StrEnum):
    PROBE = "probe"
    EXIT = "exit"
    """The process ended: a certain signal, needing no confirmation."""
    STARTED = "started"
    ADOPTED = "adopted"
    """A running instance taken over after Phoenix restarted: no start-up grace."""
    PROMOTED = "promoted"
    """A standby now serves: it counts for the service's status from here on."""
    REMOVED = "removed"
    """The target was deliberately taken away (stopped by Phoenix)."""
    VERDICT = "verdict"
    """The platform's own health check (Docker's HEALTHCHECK) says unhealthy (``ok``
    False), which holds whatever Phoenix's probes see until it says healthy again."""


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency: float
    """Seconds the probe took."""
    detail: str = ""
    status_code: int | None = None


@dataclass(frozen=True)
class Observation:
    """One signal about one target (an instance, or an external service itself)."""

    service: str
    target: str
    kind: ObservationKind
    at: datetime
    ok: bool
    detail: str = ""
    latency: float | None = None
    standby: bool = False
    """A standby target: probed, but not part of the service's status until promoted."""


@dataclass(frozen=True)
class HealthTransition:
    """A service's status changed; ``evidence`` is what made it change."""

    service: str
    previous: ServiceStatus
    current: ServiceStatus
    at: datetime
    reason: str
    evidence: tuple[str, ...] = ()
    certain: bool = False
    """True when caused by a process exit (skips any confirmation window)."""


@dataclass(frozen=True)
class Verification:
    """Whether fresh instances passed their health check, and what was seen."""

    ok: bool
    detail: str
    timed_out: bool = False
    """Failed because the deadline passed (as opposed to a definite failure)."""


@dataclass(frozen=True)
class TrafficCounters:
    """Cumulative request counts of a routed service since its router (re)started."""

    epoch: float
    """When the router started counting (a new epoch means the counters restarted)."""
    received: int
    """Requests clients sent."""
    errors: int
    """Answered 5xx by an instance."""
    lost: int
    """Not really answered: rejected by the router, broken after forwarding, or 5xx."""
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p95_ms: float | None = None
    circuit: str = "closed"
    """The router's circuit: ``closed``, ``open`` or ``half_open``."""
    reopened: int = 0
    """Times a failure while half-open sent the circuit back to open (this epoch)."""

    def lost_since(self, earlier: TrafficCounters | None) -> int:
        """Requests lost since ``earlier`` (all of them if the router restarted between)."""
        if earlier is None or earlier.epoch != self.epoch:
            return self.lost
        return max(0, self.lost - earlier.lost)


FIRST_DAY_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class UptimeBaseline:
    """A service's uptime over Phoenix's first day managing it: what today's is compared
    with."""

    service: str
    managed_since: datetime
    first_day_uptime: float | None
    complete: bool = False
    """The first day is over: ``first_day_uptime`` no longer changes."""

    def advanced(self, now: datetime, uptime: float | None) -> UptimeBaseline:
        """After a look at ``now`` with the service's current uptime (whose 24 h window
        still lies within the first day while the first day lasts)."""
        if self.complete:
            return self
        if (now - self.managed_since).total_seconds() >= FIRST_DAY_SECONDS:
            return replace(self, complete=True)  # the last look within the first day stands
        if uptime is None:
            return self
        return replace(self, first_day_uptime=uptime)

    def change(self, uptime: float | None) -> float | None:
        """Percentage points gained since the first day (None until it is over)."""
        if not self.complete or uptime is None or self.first_day_uptime is None:
            return None
        return round(uptime - self.first_day_uptime, 3)
