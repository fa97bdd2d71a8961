"""Messy streams (issue 19, item 4): each kind of untidy sample meets one deliberate rule where
samples enter the detector (detection/signals.py), and the detector's scale floor
(detection/anomaly.py). docs/anomaly-detection.md, "Messy streams", gives the reasons."""

from __future__ import annotations

import math
import random

import pytest

from phoenix_server.detection.anomaly import AnomalyDetector
from phoenix_server.detection.signals import (
    ANOMALY_SETTINGS,
    HORIZON,
    LATE,
    NOT_FINITE,
    REPEATED,
    ServiceSignals,
)

ALARM = 0.3  # about where the best NAB threshold lies


def fed(values: list[float], start: float = 0.0, step: float = 1.0) -> ServiceSignals:
    signals = ServiceSignals()
    for index, value in enumerate(values):
        signals.record(start + step * index, {"q": value})
    return signals


def noise(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(10.0, 2.0) for _ in range(count)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_a_finite_number_is_refused_and_counted(bad: float) -> None:
    signals = fed([1.0, 2.0])
    signals.record(2.0, {"q": bad})
    signals.record(3.0, {"q": 3.0})
    assert [s.value for s in signals.series["q"]] == [1.0, 2.0, 3.0], "never in the series"
    assert signals.latest("q") == 3.0
    assert signals.dropped() == {"q": {NOT_FINITE: 1}}
    assert signals.anomaly["q"][0] == 3.0, "the score is the last real sample's"


def test_a_refused_value_leaves_the_detectors_state_as_it_was() -> None:
    values = noise(600, 1)
    clean = fed(values)
    dirty = ServiceSignals()
    for index, value in enumerate(values):
        if index % 50 == 0:
            dirty.record(index - 0.5, {"q": math.nan})
        dirty.record(float(index), {"q": value})
    assert dirty.anomaly == clean.anomaly
    assert dirty.dropped() == {"q": {NOT_FINITE: 12}}


def test_a_series_that_only_ever_sent_nan_exists_empty_with_its_count() -> None:
    signals = ServiceSignals()
    signals.record(1.0, {"gauge": math.nan})
    assert len(signals.series["gauge"]) == 0 and signals.latest("gauge") is None
    assert signals.dropped() == {"gauge": {NOT_FINITE: 1}}
    assert "gauge" not in signals.anomaly


def test_a_time_that_is_not_finite_is_refused_too() -> None:
    signals = fed([1.0, 2.0])
    signals.record(math.nan, {"q": 5.0})
    signals.record(2.0, {"q": 3.0})
    assert [s.value for s in signals.series["q"]] == [1.0, 2.0, 3.0]
    assert signals.dropped() == {"q": {NOT_FINITE: 1}}


def test_a_late_sample_is_neither_kept_nor_scored_but_counted() -> None:
    signals = fed([1.0, 2.0, 3.0])
    scored = signals.anomaly["q"]
    signals.record(1.5, {"q": 1000.0})
    assert [s.value for s in signals.series["q"]] == [1.0, 2.0, 3.0]
    assert signals.anomaly["q"] == scored
    assert signals.dropped() == {"q": {LATE: 1}}


def test_a_repeated_sample_keeps_the_first_and_another_value_at_that_instant_is_kept() -> None:
    signals = fed([1.0, 2.0])
    scored = signals.anomaly["q"]
    signals.record(1.0, {"q": 2.0})  # a retried push: the same instant and value
    signals.record(1.0, {"q": 2.0})
    assert [s.value for s in signals.series["q"]] == [1.0, 2.0]
    assert signals.anomaly["q"] == scored
    assert signals.dropped() == {"q": {REPEATED: 2}}
    # A batch pushed without times: its samples share the instant they arrived at.
    signals.record(1.0, {"q": 7.0})
    assert [s.value for s in signals.series["q"]] == [1.0, 2.0, 7.0]
    assert signals.dropped() == {"q": {REPEATED: 2}}, "the second observation is no repeat"


def test_instants_less_than_a_millisecond_apart_are_the_same_instant() -> None:
    # A pushed timestamp moved onto the monotonic clock lands a few microseconds off from
    # one request to the next: a retry is still a repeat, not a late sample or a new one.
    signals = fed([1.0, 2.0])
    signals.record(1.0 - 3e-6, {"q": 2.0})
    signals.record(1.0 + 3e-6, {"q": 2.0})
    assert signals.dropped() == {"q": {REPEATED: 2}}
    signals.record(1.0 - 3e-6, {"q": 9.0})  # another value at that instant: kept, in order
    assert [(s.at, s.value) for s in signals.series["q"]] == [(0.0, 1.0), (1.0, 2.0), (1.0, 9.0)]
    signals.record(1.0 - 2e-3, {"q": 9.0})
    signals.record(1.0 + 2e-3, {"q": 9.0})
    assert signals.dropped() == {"q": {REPEATED: 2, LATE: 1}}, "2 ms apart: other instants"
    assert len(signals.series["q"]) == 4


def test_counts_are_per_series_and_only_for_series_that_refused_some() -> None:
    signals = ServiceSignals()
    signals.record(1.0, {"a": 1.0, "b": 1.0})
    signals.record(0.5, {"a": 1.0, "b": math.nan})
    signals.record(2.0, {"a": 1.0, "b": 1.0})
    assert signals.dropped() == {"a": {LATE: 1}, "b": {NOT_FINITE: 1}}
    assert fed([1.0, 2.0]).dropped() == {}


def test_a_long_gap_does_not_make_the_next_usual_sample_news() -> None:
    values = noise(3000, 2)
    signals = fed(values)
    last = 2999.0
    for hours, value in ((1, 10.0), (24, 11.0), (24 * 30, 9.5)):
        last += hours * 3600.0
        signals.record(last, {"q": value})
        assert signals.anomaly["q"] == (last, 0.0), f"after {hours} h"
    assert len(signals.series["q"]) == 1, f"the series itself keeps {HORIZON:g} s"


def test_a_long_gap_does_not_restart_warm_up_what_was_learned_still_counts() -> None:
    signals = fed(noise(3000, 3))
    signals.record(3000.0 + 86_400.0, {"q": 60.0})
    assert signals.anomaly["q"][1] >= 0.9, "judged at once against the memory before the gap"


def test_timestamps_with_gaps_score_exactly_as_without() -> None:
    values = noise(1500, 4)
    times = [index + (7200.0 if index >= 700 else 0.0) for index in range(1500)]
    gapped = ServiceSignals()
    for at, value in zip(times, values, strict=True):
        gapped.record(at, {"q": value})
    detector = AnomalyDetector(ANOMALY_SETTINGS)
    expected = [detector.score(value) for value in values]
    assert gapped.anomaly["q"] == (times[-1], expected[-1])
    assert gapped.dropped() == {}


@pytest.mark.parametrize("level", [0.1, 1 / 3, 2.675, 45.0, 1e5 + 0.1, 7e9])
def test_rounding_after_a_constant_stretch_is_no_change(level: float) -> None:
    detector = AnomalyDetector(ANOMALY_SETTINGS)
    assert max(detector.score(level) for _ in range(5000)) == 0.0
    # The same level summed in another order: off by a few parts in 1e16.
    jittered = [level * (1.0 + 1e-15 * (index % 3)) for index in range(200)]
    assert max(detector.score(value) for value in jittered) == 0.0


def test_a_real_change_after_a_constant_stretch_is_news_but_bounded() -> None:
    detector = AnomalyDetector(ANOMALY_SETTINGS)
    for _ in range(5000):
        detector.score(45.0)
    tiny_but_real = detector.score(45.0 * (1.0 + 1e-6))
    # A distance beyond every one remembered: 5,000 were seen, halved twice (at 2,048
    # remembered each time), one in four remembered since, so 1,250 remain: p = 1/1,251,
    # doubled for the two views: a bounded 0.47, however small the change.
    assert tiny_but_real == pytest.approx(-math.log10(2 / 1251) / 6, abs=0.001)


def test_a_series_at_zero_still_sees_its_first_nonzero_value() -> None:
    detector = AnomalyDetector(ANOMALY_SETTINGS)
    for _ in range(3000):
        detector.score(0.0)
    assert detector.score(0.01) >= ALARM, "the first error after thousands of clean samples"
