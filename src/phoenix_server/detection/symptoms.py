"""Symptoms: failures a passing health check does not show, read from a service's signals.

- ``high_error_rate``: the error-rate rule fires while the service answers;
- ``high_load``: an instance's CPU is saturated (or throughput per replica is over its
  declared ceiling together with errors, latency or CPU) while it serves traffic;
- ``latency_degradation``: the p99 rule fires without saturation;
- ``memory_leak``: an instance's memory grows steadily over the leak window (a trend test,
  not a spike), with the projected time to the service's memory limit.

One :class:`SymptomDetector` per service holds the rules' state (see rules.py); it is fed
the signals as they arrive and says which symptoms hold now, most telling first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from phoenix_server.detection.rules import RuleState
from phoenix_server.detection.signals import (
    CPU,
    ERROR_RATE,
    LATENCY_P99,
    MEMORY,
    THROUGHPUT,
    ServiceSignals,
    Surprise,
)
from phoenix_server.detection.trends import steady_growth
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.services import ServiceSpec

LEAK_CHECK_EVERY = 5.0
"""Seconds between trend tests of memory (they cost more than a threshold)."""
ANOMALY_TYPES = {
    ERROR_RATE: FailureType.HIGH_ERROR_RATE,
    LATENCY_P99: FailureType.LATENCY_DEGRADATION,
    "latency_p50": FailureType.LATENCY_DEGRADATION,
    CPU: FailureType.HIGH_LOAD,
    THROUGHPUT: FailureType.HIGH_LOAD,
}
"""The failure an anomaly alone suggests, by metric (others: unknown)."""


@dataclass(frozen=True)
class Symptom:
    failure_type: FailureType
    summary: str
    evidence: tuple[str, ...] = ()


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):.0f} MiB"


class SymptomDetector:
    def __init__(self, spec: ServiceSpec, memory_total: int) -> None:
        policy = spec.detection
        self._policy = policy
        self._error = RuleState(policy.error_rate)
        self._latency = RuleState(policy.latency_p99)
        self._cpu = RuleState(policy.cpu)
        self._throughput = RuleState(policy.throughput) if policy.throughput else None
        self._memory_limit = policy.memory_limit or spec.resources.memory_max or memory_total
        self._seen: dict[str, float] = {}
        self._leak: Symptom | None = None
        self._leak_checked = float("-inf")
        self._anomalous: dict[str, Surprise] = {}
        """Metric -> its latest anomalous sample, held for ``anomaly_hold`` seconds."""

    def _fresh(self, signals: ServiceSignals, name: str) -> float | None:
        """The metric's newest value if it arrived since the last look (else None)."""
        series = signals.series.get(name)
        sample = series.latest() if series is not None else None
        if sample is None or sample.at <= self._seen.get(name, float("-inf")):
            return None
        self._seen[name] = sample.at
        return sample.value

    def evaluate(self, at: float, signals: ServiceSignals, replicas: int) -> tuple[Symptom, ...]:
        throughput = signals.latest(THROUGHPUT) or 0.0
        errors = self._error.update(at, self._fresh(signals, ERROR_RATE))
        slow = self._latency.update(at, self._fresh(signals, LATENCY_P99))
        busy = self._cpu.update(at, self._fresh(signals, CPU))
        crowded = False
        if self._throughput is not None:
            fresh = self._fresh(signals, THROUGHPUT)
            per_replica = fresh / max(replicas, 1) if fresh is not None else None
            crowded = self._throughput.update(at, per_replica)
        serving = throughput > 0
        anomalies = self._anomalies(at, signals)
        found: list[Symptom] = []
        leak = self._check_leak(at, signals)
        if leak is not None:
            found.append(leak)
        if serving and (busy or (crowded and (errors or slow))):
            evidence = [self._cpu.describe()] if busy else []
            if self._throughput is not None and crowded:
                evidence.append(self._throughput.describe())
            evidence += [f"throughput {throughput:.1f} req/s"]
            if errors:
                evidence.append(self._error.describe())
            if slow:
                evidence.append(self._latency.describe())
            found.append(
                Symptom(FailureType.HIGH_LOAD, "high load: " + evidence[0], tuple(evidence))
            )
        elif serving and errors:
            found.append(
                Symptom(
                    FailureType.HIGH_ERROR_RATE,
                    "high error rate: " + self._error.describe(),
                    (self._error.describe(), f"throughput {throughput:.1f} req/s"),
                )
            )
        elif serving and slow:
            found.append(
                Symptom(
                    FailureType.LATENCY_DEGRADATION,
                    "latency degraded: " + self._latency.describe(),
                    (self._latency.describe(),),
                )
            )
        if anomalies and not found and self._policy.anomaly_incidents:
            metric = max(anomalies, key=lambda name: anomalies[name].score)
            found.append(
                Symptom(
                    ANOMALY_TYPES.get(metric, FailureType.UNKNOWN),
                    f"anomalous {anomalies[metric].describe(metric)}",
                )
            )
        if anomalies:
            seen = tuple(
                f"anomaly: {surprise.describe(name)}"
                for name, surprise in sorted(anomalies.items())
            )
            found = [replace(s, evidence=(*s.evidence, *seen)) for s in found]
        return tuple(found)

    def _anomalies(self, at: float, signals: ServiceSignals) -> dict[str, Surprise]:
        """Metrics with an anomalous sample within the hold time, with that sample. Read
        from the latest surprise, not the latest score: a batch pushed at once is scored
        before this looks, and its anomalous sample need not be its last."""
        policy = self._policy
        for name, surprise in signals.surprises.items():
            if surprise.score >= policy.anomaly_threshold:
                self._anomalous[name] = surprise
        for name, surprise in list(self._anomalous.items()):
            if at - surprise.at > policy.anomaly_hold:
                del self._anomalous[name]
        return dict(self._anomalous)

    def _check_leak(self, at: float, signals: ServiceSignals) -> Symptom | None:
        if at - self._leak_checked < LEAK_CHECK_EVERY:
            return self._leak
        self._leak_checked = at
        series = signals.series.get(MEMORY)
        if series is None:
            self._leak = None
            return None
        policy = self._policy
        growth = steady_growth(
            list(series), window=policy.leak_window, min_growth=policy.leak_min_growth
        )
        if growth is None:
            self._leak = None
            return None
        remaining = growth.time_to(self._memory_limit)
        projection = (
            f"reaches its limit of {_mib(self._memory_limit)} in about {remaining:.0f}s"
            if remaining is not None
            else "not growing"
        )
        self._leak = Symptom(
            FailureType.MEMORY_LEAK,
            f"memory leak: {_mib(growth.latest)}, growing {growth.slope / 1024:.0f} KiB/s "
            f"steadily for {policy.leak_window:g}s; {projection}",
            (
                f"memory {_mib(growth.latest)} (+{growth.growth:.0%} over {policy.leak_window:g}s)",
                f"trend: {growth.slope / 1024:.0f} KiB/s, Kendall tau {growth.tau:.2f}",
                projection,
            ),
        )
        return self._leak
