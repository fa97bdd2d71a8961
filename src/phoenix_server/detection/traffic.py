"""A service's traffic over time, from its router's cumulative counters.

Throughput is requests per second over the last :data:`RATE_SPAN` seconds; the error rate
is the share of requests not really answered (5xx, broken, rejected) over the last
:data:`ERROR_SPAN`. Counters restart with the router (a new epoch): a window never spans
two epochs. Memory is bounded by the spans.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from phoenix_server.domain.health import TrafficCounters

RATE_SPAN = 10.0
ERROR_SPAN = 60.0


@dataclass(frozen=True)
class TrafficView:
    throughput: float | None
    """Requests per second."""
    error_rate: float | None
    """Fraction of requests not really answered (0-1)."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    circuit: str | None = None
    """The router's circuit (None without a router)."""


class TrafficWindow:
    def __init__(self) -> None:
        self._samples: deque[tuple[float, TrafficCounters]] = deque()

    def record(self, at: float, counters: TrafficCounters) -> None:
        """A sample at monotonic time ``at``."""
        if self._samples and self._samples[-1][1].epoch != counters.epoch:
            self._samples.clear()  # the router restarted: its counters began again
        self._samples.append((at, counters))
        while len(self._samples) > 2 and at - self._samples[1][0] >= ERROR_SPAN:
            self._samples.popleft()

    def view(self) -> TrafficView:
        if not self._samples:
            return TrafficView(None, None, None, None, None)
        at, latest = self._samples[-1]
        throughput = error_rate = None
        recent = self._oldest_within(at, RATE_SPAN)
        if recent is not None and at > recent[0]:
            throughput = round((latest.received - recent[1].received) / (at - recent[0]), 3)
        oldest = self._oldest_within(at, ERROR_SPAN)
        if oldest is not None:
            received = latest.received - oldest[1].received
            lost = latest.lost - oldest[1].lost
            error_rate = round(lost / received, 4) if received > 0 else 0.0
        return TrafficView(
            throughput, error_rate, latest.latency_p50_ms, latest.latency_p99_ms, latest.circuit
        )

    def _oldest_within(self, now: float, span: float) -> tuple[float, TrafficCounters] | None:
        for sample in self._samples:
            if now - sample[0] <= span and sample is not self._samples[-1]:
                return sample
        return None
