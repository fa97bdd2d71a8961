"""Each service's recent signals: bounded time series of error rate, latency, throughput,
memory and CPU, and of metrics pushed through the API.

Sources feed it as samples arrive (the router's counters every second, the process
sampler, ``POST /api/metrics``); symptoms are read from it. Every series keeps at most
:data:`KEPT` samples and nothing older than :data:`HORIZON` seconds, whatever the rate.

The one thing to know: this is where samples enter the anomaly detector, and a sample the
detector cannot judge in time order is refused here and counted by reason
(:attr:`Series.dropped`), never silently lost and never scored: a value that is not a
finite number (:data:`NOT_FINITE`), a sample older than the series' latest (:data:`LATE`),
the latest sample again, same instant and value (:data:`REPEATED`). A gap needs no rule:
the detector judges values, not the time between them (docs/anomaly-detection.md, "Messy streams").
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from phoenix_server.detection.anomaly import DEFAULT_SETTINGS, AnomalyDetector
from phoenix_server.detection.score_trail import ScoreTrail
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
ANOMALY_SETTINGS = DEFAULT_SETTINGS
"""The detector's defaults, exactly as benchmarked: per series 2,048 remembered values (half
an hour at one a second) and 2,048 distances standing for its whole life, about 96 KiB."""

NEWS_KEPT = 256
"""Scores above 0 each series keeps (news is rare: a quarter hour of it at most, in
practice), so a rule asking "did it score this high lately?" sees a peak that a calmer
sample in the same push came after."""

SAME_INSTANT = 0.001
"""Seconds within which two samples are at the same instant. A pushed timestamp (wall clock)
is moved onto Phoenix's monotonic clock by reading both, which shifts it by microseconds
from one request to the next: a retried push must still be seen as the same instant."""
NOT_FINITE = "not_finite"
"""Refused: the value (or its time) is NaN or infinite — a gauge with nothing to report, or
a broken exporter. Kept out of the series too, so no rule averages a NaN."""
LATE = "late"
"""Refused: older than the series' latest sample. The detector has already moved past that
time; holding every sample back to reorder late ones would delay every alarm instead."""
REPEATED = "repeated"
"""Refused: the same value at the same instant as the series' latest sample (a retried
push). The first was scored and reported; it stands. Another value at that instant is a
second observation (samples pushed in one batch without times share the instant of
arrival) and is kept, in the order it came."""


@dataclass(frozen=True, slots=True)
class Surprise:
    """A sample the detector found news (scored above 0): what a person reads to see why."""

    at: float
    """Monotonic seconds."""
    value: float
    score: float
    usual: tuple[float, float] | None
    """The middle 98 % of the values the series showed before it (None: too few yet)."""

    def describe(self, metric: str) -> str:
        """``latency_p99 = 812 scored 0.62 (usually 95.1 to 140)``."""
        if self.usual is None:
            usual = "too few samples yet to say what is usual"
        else:
            usual = f"usually {_number(self.usual[0])} to {_number(self.usual[1])}"
        return f"{metric} = {_number(self.value)} scored {self.score:.2f} ({usual})"


def _number(value: float) -> str:
    """Three significant digits, or a whole number with thousands marked (a byte count),
    or an exponent beyond a million billion (never a 300-digit number in an incident)."""
    return f"{value:,.0f}" if 1000 <= abs(value) < 1e15 else f"{value:.3g}"


@dataclass(frozen=True)
class Sample:
    at: float
    """Monotonic seconds."""
    value: float


class Series:
    """One metric's samples, oldest first, bounded in count and age."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=KEPT)
        self.dropped: Counter[str] = Counter()
        """Samples refused, by reason (:data:`NOT_FINITE`, :data:`LATE`, :data:`REPEATED`)."""

    def add(self, at: float, value: float) -> bool:
        """Keep the sample unless a rule refuses it (then count it); whether it was kept."""
        if not (math.isfinite(value) and math.isfinite(at)):
            reason = NOT_FINITE
        else:
            latest = self._samples[-1] if self._samples else None
            if latest is None or at >= latest.at + SAME_INSTANT:
                return self._keep(at, value)
            if at > latest.at - SAME_INSTANT:  # the same instant
                if value != latest.value:
                    # Another value then: a second observation made at that instant (a batch
                    # pushed without times is all one instant), kept in the order it came,
                    # never before the latest.
                    return self._keep(max(at, latest.at), value)
                reason = REPEATED
            else:
                reason = LATE
        self.dropped[reason] += 1
        return False

    def _keep(self, at: float, value: float) -> bool:
        self._samples.append(Sample(at, value))
        while at - self._samples[0].at > HORIZON:
            self._samples.popleft()
        return True

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
        self.surprises: dict[str, Surprise] = {}
        """Each series' latest sample that scored above 0, with its usual range."""
        self.trails: dict[str, ScoreTrail] = {}
        """Each series' peak score per half minute over the last quarter of an hour."""
        self._news: dict[str, deque[tuple[float, float]]] = {}
        """Each series' last :data:`NEWS_KEPT` samples that scored above 0: (time, score)."""
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
                self.trails[name] = ScoreTrail()
            if series.add(at, value):  # only what the series takes is scored
                detector = self._detectors[name]
                score = detector.score(value, at)
                self.anomaly[name] = (at, score)
                self.trails[name].add(at, score)
                if score > 0.0:  # news is rare (docs/anomaly-detection.md): kept with its why
                    self.surprises[name] = Surprise(at, value, score, detector.usual_range())
                    news = self._news.setdefault(name, deque(maxlen=NEWS_KEPT))
                    news.append((at, score))
        return refused

    def scored(self, threshold: float, since: float) -> bool:
        """Some series scored ``threshold`` or more at ``since`` or later (monotonic)."""
        for news in self._news.values():
            for at, score in reversed(news):
                if at < since:
                    break
                if score >= threshold:
                    return True
        return False

    def dropped(self) -> dict[str, dict[str, int]]:
        """Samples refused so far, by series and reason (only series that refused some)."""
        return {name: dict(s.dropped) for name, s in self.series.items() if s.dropped}

    def latest(self, name: str) -> float | None:
        series = self.series.get(name)
        sample = series.latest() if series is not None else None
        return sample.value if sample is not None else None

    def record_traffic(self, at: float, counters: TrafficCounters) -> None:
        """A reading of the router's cumulative counters: rates over the last
        :data:`RATE_WINDOW` seconds (an error rate only with enough requests to mean
        something), and the router's latency percentiles."""
        if self._counters and _restarted(self._counters[-1][1], counters):
            self._counters.clear()  # its counters began again: no rate until the next reading
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


def _restarted(before: TrafficCounters, now: TrafficCounters) -> bool:
    """The router's counters began again: a new epoch, or (whatever the epoch says) a count
    that went down, which a cumulative counter never does — a negative rate is no reading."""
    return now.epoch != before.epoch or now.received < before.received or now.lost < before.lost
