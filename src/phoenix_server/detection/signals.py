"""Each service's recent signals: bounded time series of error rate, latency, throughput,
memory and CPU, and of metrics pushed through the API.

Sources feed it as samples arrive (the router's counters every second, the process
sampler, ``POST /api/metrics``); symptoms are read from it. Every series keeps at most
:data:`KEPT` samples and nothing older than :data:`HORIZON` seconds, whatever the rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from phoenix_server.detection.anomaly import AnomalyDetector, DetectorSettings
from phoenix_server.domain.health import TrafficCounters

KEPT = 2048
HORIZON = 900.0
"""Seconds of history a series keeps (the longest window a symptom looks at)."""
RATE_WINDOW = 5.0
"""Seconds of router counters one error-rate or throughput sample spans."""

ERROR_RATE = "error_rate"
THROUGHPUT = "throughput"
LATENCY_P50 = "latency_p50"
LATENCY_P95 = "latency_p95"
LATENCY_P99 = "latency_p99"
MEMORY = "memory_rss"
CPU = "cpu"
BUILTIN = frozenset({ERROR_RATE, THROUGHPUT, LATENCY_P50, LATENCY_P95, LATENCY_P99, MEMORY, CPU})
MAX_SERIES = 64
"""Series one service may have (pushed metrics included): memory stays bounded."""
ANOMALY_SETTINGS = DetectorSettings(memory=2048)
"""Per series: 2,048 remembered samples (about 128 KiB), half an hour at one a second.
(The NAB figures use 16,384; at 2,048 the standard score there is 70.)"""


@dataclass(frozen=True)
class Sample:
    at: float
    """Monotonic seconds."""
    value: float


class Series:
    """One metric's samples, oldest first, bounded in count and age."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=KEPT)

    def add(self, at: float, value: float) -> None:
        if self._samples and at < self._samples[-1].at:
            return  # out of order (a late push): the past is not rewritten
        self._samples.append(Sample(at, value))
        while self._samples and at - self._samples[0].at > HORIZON:
            self._samples.popleft()

    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def since(self, start: float) -> list[Sample]:
        return [s for s in self._samples if s.at >= start]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


class ServiceSignals:
    """The series of one service, and the router counters they are derived from."""

    def __init__(self, min_requests: int = 20) -> None:
        self.series: dict[str, Series] = {}
        self.anomaly: dict[str, tuple[float, float]] = {}
        """Each series' latest sample time and anomaly score (0-1, calibrated: 0.5 is a
        one-in-a-thousand sample)."""
        self._detectors: dict[str, AnomalyDetector] = {}
        self._counters: deque[tuple[float, TrafficCounters]] = deque()
        self._min_requests = min_requests

    def record(self, at: float, values: Mapping[str, float]) -> list[str]:
        """Add samples; return the names refused because the service has too many series."""
        refused = []
        for name, value in values.items():
            series = self.series.get(name)
            if series is None:
                if len(self.series) >= MAX_SERIES:
                    refused.append(name)
                    continue
                series = self.series[name] = Series()
                self._detectors[name] = AnomalyDetector(ANOMALY_SETTINGS)
            before = series.latest()
            series.add(at, value)
            if series.latest() is not before:  # taken (not a late sample)
                self.anomaly[name] = (at, self._detectors[name].score(value, at))
        return refused

    def latest(self, name: str) -> float | None:
        series = self.series.get(name)
        sample = series.latest() if series is not None else None
        return sample.value if sample is not None else None

    def record_traffic(self, at: float, counters: TrafficCounters) -> None:
        """A reading of the router's cumulative counters: rates over the last
        :data:`RATE_WINDOW` seconds (an error rate only with enough requests to mean
        something), and the router's latency percentiles."""
        if self._counters and self._counters[-1][1].epoch != counters.epoch:
            self._counters.clear()  # the router restarted: its counters began again
        self._counters.append((at, counters))
        while len(self._counters) > 1 and at - self._counters[1][0] >= RATE_WINDOW:
            self._counters.popleft()
        values: dict[str, float] = {}
        first_at, first = self._counters[0]
        received = 0
        if at > first_at:
            received = counters.received - first.received
            values[THROUGHPUT] = received / (at - first_at)
            if received >= self._min_requests:
                values[ERROR_RATE] = (counters.lost - first.lost) / received
        if received > 0:
            # The router's percentiles cover its last answers however old: they say
            # something about now only while requests are flowing.
            if counters.latency_p50_ms is not None:
                values[LATENCY_P50] = counters.latency_p50_ms
            if counters.latency_p95_ms is not None:
                values[LATENCY_P95] = counters.latency_p95_ms
            if counters.latency_p99_ms is not None:
                values[LATENCY_P99] = counters.latency_p99_ms
        self.record(at, values)
