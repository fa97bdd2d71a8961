"""Threshold rules with duration and hysteresis (rules.py), the memory trend test
(trends.py), the signal series (signals.py) and symptoms from them (symptoms.py)."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.detection.rules import RuleState
from phoenix_server.detection.signals import (
    CPU,
    ERROR_RATE,
    HORIZON,
    KEPT,
    MEMORY,
    THROUGHPUT,
    Sample,
    Series,
    ServiceSignals,
)
from phoenix_server.detection.symptoms import SymptomDetector
from phoenix_server.detection.trends import kendall_tau, steady_growth
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.services import ServiceSpec, ThresholdRule

RULE = ThresholdRule("error_rate", above=0.1, duration=10.0, hysteresis=0.2)


def feed(state: RuleState, values: list[float], start: float = 0.0) -> list[bool]:
    """One value a second; the firing state after each."""
    return [state.update(start + i, v) for i, v in enumerate(values)]


# --- rules -------------------------------------------------------------------------------------


def test_a_rule_fires_only_after_its_duration() -> None:
    state = RuleState(RULE)
    fired = feed(state, [0.5] * 12)
    assert fired.index(True) == 10, "above for 10 s: fires at the 10th second"


def test_a_dip_restarts_the_duration() -> None:
    state = RuleState(RULE)
    fired = feed(state, [0.5] * 8 + [0.05] + [0.5] * 9)
    assert not any(fired)


def test_hysteresis_keeps_it_firing_between_the_levels_and_clears_below() -> None:
    state = RuleState(RULE)
    feed(state, [0.5] * 11)
    assert state.firing
    # 0.09 is under the threshold but above the clear level (0.08): still firing.
    assert all(feed(state, [0.09] * 30, start=20))
    cleared = feed(state, [0.05] * 12, start=60)
    assert cleared.index(False) == 10


def test_a_short_gap_keeps_the_state_and_a_long_silence_clears_it() -> None:
    state = RuleState(RULE)
    feed(state, [0.5] * 11)  # samples at 0..10 s
    assert state.update(15.0, None) is True, "5 s without a sample: still firing"
    assert "error_rate 0.5 above 0.1 for 10s" == state.describe()
    assert state.update(20.0, None) is False, "nothing shows the failure for 10 s: cleared"


# --- trends -----------------------------------------------------------------------------------


def samples(values: list[float], every: float = 1.0) -> list[Sample]:
    return [Sample(i * every, v) for i, v in enumerate(values)]


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3, 4]) == 1.0
    assert kendall_tau([4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 1, 1]) == 0.0


def test_steady_growth_is_a_leak_with_its_slope() -> None:
    rng = random.Random(7)
    values = [100e6 + 2e6 * i + rng.uniform(-1e6, 1e6) for i in range(61)]
    growth = steady_growth(samples(values), window=60, min_growth=0.1)
    assert growth is not None
    assert growth.slope == pytest.approx(2e6, rel=0.05)
    assert growth.tau > 0.9
    assert growth.time_to(1e9) == pytest.approx((1e9 - values[-1]) / growth.slope, rel=0.05)


@pytest.mark.parametrize(
    "values",
    [
        [100e6] * 30 + [300e6] + [100e6] * 30,  # one spike
        [100e6 + (i % 10) * 5e6 for i in range(61)],  # a garbage collector's sawtooth
        [100e6 + 0.05e6 * i for i in range(61)],  # grows, but by 3%: below min_growth
    ],
)
def test_spikes_sawtooth_and_small_growth_are_no_leak(values: list[float]) -> None:
    assert steady_growth(samples(values), window=60, min_growth=0.1) is None


def test_growth_needs_samples_covering_the_window() -> None:
    values = [100e6 + 5e6 * i for i in range(10)]
    assert steady_growth(samples(values), window=60, min_growth=0.1) is None


# --- signals ----------------------------------------------------------------------------------


def test_a_series_is_bounded_in_count_and_age() -> None:
    series = Series()
    for i in range(KEPT + 100):
        series.add(float(i) * 0.01, float(i))
    assert len(series) == KEPT
    series.add(10_000.0, 1.0)
    assert [s.at for s in series] == [10_000.0], f"older than {HORIZON}s is dropped"
    series.add(5.0, 2.0)
    assert len(series) == 1, "a late sample does not rewrite the past"


def counters(received: int, lost: int, epoch: float = 1.0) -> TrafficCounters:
    return TrafficCounters(epoch=epoch, received=received, errors=lost, lost=lost)


def test_error_rate_and_throughput_come_from_counter_deltas() -> None:
    signals = ServiceSignals(min_requests=20)
    signals.record_traffic(0.0, counters(0, 0))
    signals.record_traffic(1.0, counters(100, 30))
    assert signals.latest(THROUGHPUT) == 100.0
    assert signals.latest(ERROR_RATE) == pytest.approx(0.3)
    signals.record_traffic(2.0, counters(105, 30))
    assert signals.latest(ERROR_RATE) == pytest.approx(30 / 105), "over the rate window"
    # The router restarted: a new epoch, counted afresh.
    signals.record_traffic(3.0, counters(5, 5, epoch=2.0))
    signals.record_traffic(4.0, counters(10, 10, epoch=2.0))
    assert signals.latest(THROUGHPUT) == 5.0
    assert signals.latest(ERROR_RATE) == pytest.approx(30 / 105), "5 requests: too few"


# --- symptoms ---------------------------------------------------------------------------------


def spec(detection: str = "") -> ServiceSpec:
    text = f"services:\n  - name: api\n    command: [run]\n    port: 8080\n{detection}"
    return parse_service_file(text, source="s", base_dir=Path("/srv"), default_interval=1.0).get(
        "api"
    )


FAST = spec(
    "    detection: {error_rate: {above: 0.2, for: 2s}, cpu: {above: 80, for: 2s},"
    " latency_p99: {above: 100ms, for: 2s}, memory: {leak_window: 10s, limit: 1GiB}}\n"
)


def run(detector: SymptomDetector, signals: ServiceSignals, seconds: int, **metrics: float) -> list:
    found = ()
    for t in range(seconds):
        signals.record(float(t), metrics)
        found = detector.evaluate(float(t), signals, replicas=1)
    return [s.failure_type for s in found]


def test_errors_while_serving_are_a_high_error_rate() -> None:
    detector, signals = SymptomDetector(FAST, 8 << 30), ServiceSignals()
    found = run(detector, signals, 4, **{ERROR_RATE: 0.5, THROUGHPUT: 50.0, CPU: 10.0})
    assert found == [FailureType.HIGH_ERROR_RATE]


def test_errors_with_a_saturated_cpu_are_high_load() -> None:
    detector, signals = SymptomDetector(FAST, 8 << 30), ServiceSignals()
    found = run(detector, signals, 4, **{ERROR_RATE: 0.5, THROUGHPUT: 50.0, CPU: 99.0})
    assert found == [FailureType.HIGH_LOAD]


def test_no_traffic_no_load_or_error_symptom() -> None:
    detector, signals = SymptomDetector(FAST, 8 << 30), ServiceSignals()
    assert run(detector, signals, 4, **{CPU: 99.0, THROUGHPUT: 0.0}) == []


def test_slow_answers_without_saturation_are_latency_degradation() -> None:
    detector, signals = SymptomDetector(FAST, 8 << 30), ServiceSignals()
    found = run(detector, signals, 4, latency_p99=500.0, **{THROUGHPUT: 5.0, CPU: 5.0})
    assert found == [FailureType.LATENCY_DEGRADATION]


def test_steadily_growing_memory_is_a_leak_projected_to_its_limit() -> None:
    detector, signals = SymptomDetector(FAST, 8 << 30), ServiceSignals()
    found = ()
    for t in range(12):
        signals.record(float(t), {MEMORY: 100e6 + 20e6 * t})
        found = detector.evaluate(float(t), signals, replicas=1)
    [leak] = found
    assert leak.failure_type is FailureType.MEMORY_LEAK
    assert "reaches its limit of 1024 MiB in about" in leak.summary


def test_the_memory_limit_defaults_to_the_declared_resources_then_the_machine() -> None:
    limited = spec("    resources: {memory_max: 512MiB}\n")
    detector, signals = SymptomDetector(limited, 8 << 30), ServiceSignals()
    leaked = replace(limited, detection=replace(limited.detection, leak_window=10.0))
    detector = SymptomDetector(leaked, 8 << 30)
    found = ()
    for t in range(12):
        signals.record(float(t), {MEMORY: 100e6 + 20e6 * t})
        found = detector.evaluate(float(t), signals, replicas=1)
    assert "limit of 512 MiB" in found[0].summary


def test_an_anomaly_alone_opens_an_incident_only_when_asked_and_is_held_then_dropped() -> None:
    rng = random.Random(5)
    asked = replace(FAST, detection=replace(FAST.detection, anomaly_incidents=True))
    for policy, expected in ((FAST, []), (asked, [FailureType.HIGH_LOAD])):
        detector, signals = SymptomDetector(policy, 8 << 30), ServiceSignals()
        for t in range(1000):
            signals.record(float(t), {CPU: rng.gauss(20, 1)})
            detector.evaluate(float(t), signals, replicas=1)
        signals.record(1000.0, {CPU: 75.0})
        found = detector.evaluate(1000.0, signals, replicas=1)
        assert [s.failure_type for s in found] == expected
        if expected:
            # The sample that broke it, its score, and what the series usually shows.
            summary = re.fullmatch(
                r"anomalous cpu = 75 scored (\S+) \(usually (\S+) to (\S+)\)", found[0].summary
            )
            assert summary is not None, found[0].summary
            score, low, high = map(float, summary.groups())
            assert score >= 0.5 and 17.0 < low < 19.0 and 21.0 < high < 23.0  # 20 +- 2.3 sd
            assert f"anomaly: {found[0].summary.removeprefix('anomalous ')}" in found[0].evidence
            signals.record(1031.0, {CPU: 20.0})
            assert detector.evaluate(1031.0, signals, replicas=1) == (), "held 30 s, then gone"


def test_latency_is_only_sampled_while_requests_flow() -> None:
    signals = ServiceSignals()
    busy = TrafficCounters(epoch=1.0, received=0, errors=0, lost=0, latency_p99_ms=900.0)
    signals.record_traffic(0.0, busy)
    assert signals.latest("latency_p99") is None, "no request yet"
    signals.record_traffic(1.0, replace(busy, received=50))
    assert signals.latest("latency_p99") == 900.0
    for t in range(2, 20):
        signals.record_traffic(float(t), replace(busy, received=50, latency_p99_ms=950.0))
    last = signals.series["latency_p99"].latest()
    assert last is not None and last.at <= 1.0 + 5.0, "idle past the rate window: not sampled"
