"""detection/anomaly.py: the streaming detector's promises, on synthetic streams."""

from __future__ import annotations

import math
import random
import tracemalloc

import pytest

from phoenix_server.detection.anomaly import (
    AnomalyDetector,
    DetectorSettings,
    _Tail,
    make_detector,
)

ALARM = 0.3  # about where the best NAB threshold lies (see bench/detect.py)


def noise(count: int, seed: int, mean: float = 10.0, spread: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, spread) for _ in range(count)]


def scores(values: list[float], settings: DetectorSettings | None = None) -> list[float]:
    detector = make_detector(settings) if settings else make_detector()
    return [detector.score(value) for value in values]


def test_scores_stay_between_0_and_1_whatever_the_input() -> None:
    values = noise(500, 1) + [1.7e308, -1.7e308, 0.0, 5e-324, 42.0] * 20 + [7.0] * 300
    values += [math.nan, math.inf, -math.inf, *noise(200, 2, mean=1e9, spread=1e8)]
    assert all(0.0 <= score <= 1.0 for score in scores(values))


def test_a_score_depends_only_on_the_samples_before_it() -> None:
    values = noise(3000, 3)
    values[2000] = 100.0
    whole = scores(values)
    assert scores(values[:1500]) == whole[:1500]
    assert scores(values[:2001]) == whole[:2001]


def test_memory_stays_bounded_however_long_the_stream() -> None:
    rng = random.Random(4)
    detector = AnomalyDetector(DetectorSettings(memory=256, window=8, quiet_after=20))
    for _ in range(3000):
        detector.score(rng.gauss(0.0, 1.0))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(30_000):
            detector.score(rng.gauss(0.0, 1.0))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Keeping every sample would take at least 30,000 x 8 bytes; a fixed memory takes ~0.
    assert grown < 16 * 1024


def test_a_stationary_noisy_stream_stays_quiet() -> None:
    for seed in range(3):
        quiet = scores(noise(5000, seed))[500:]
        assert max(quiet) < 0.6
        assert sum(score >= ALARM for score in quiet) <= 5


@pytest.mark.parametrize("height", [20.0, -20.0])
def test_a_spike_far_outside_the_noise_scores_high(height: float) -> None:
    values = noise(2000, 5)
    values[1500] = 10.0 + 2.0 * height
    result = scores(values)
    assert result[1500] >= 0.9
    assert result[1500] > max(result[500:1500]) + 0.4


def test_a_level_shift_raises_one_alarm_not_hundreds() -> None:
    values = noise(1500, 6) + [value + 16.0 for value in noise(500, 7)]
    result = scores(values)
    assert max(result[1500:1505]) >= 0.9
    assert sum(score >= ALARM for score in result[1505:]) <= 3


def test_a_change_of_rhythm_is_seen_by_the_mean_view() -> None:
    # Spikes every 50 samples, then every 5: no single value is new, but their mean is.
    rng = random.Random(8)
    values = [20.0 if i % 50 == 0 else rng.uniform(0.0, 1.0) for i in range(3000)]
    values += [20.0 if i % 5 == 0 else rng.uniform(0.0, 1.0) for i in range(300)]
    result = scores(values)
    assert max(result[3000:]) >= 0.9
    assert max(result[600:3000]) < ALARM
    assert max(scores(values, DetectorSettings(window=1))[3000:]) < ALARM


def test_scores_do_not_depend_on_the_units() -> None:
    values = noise(2000, 9)
    values[1200] = 40.0
    scaled = [value * 1000.0 + 5e6 for value in values]
    assert scores(scaled) == pytest.approx(scores(values), abs=1e-6)


def test_a_flat_stream_that_moves_at_last_is_news() -> None:
    result = scores([45.0] * 1000 + [46.0])
    assert max(result[:1000]) == 0.0
    # Never seen in 1,000 samples: p = 2/1001, -log10(p)/6 = 0.45.
    assert result[1000] == pytest.approx(0.45, abs=0.01)


def test_a_value_that_is_not_a_number_is_a_gap_not_a_reading() -> None:
    values = noise(800, 10)
    with_gap = [*values[:400], math.nan, *values[400:]]
    result = scores(with_gap)
    assert result[400] == 0.0
    assert result[:400] + result[401:] == scores(values)


def test_timestamps_are_accepted_and_do_not_change_the_scores() -> None:
    values = noise(600, 11)
    detector = make_detector()
    timed = [detector.score(value, 1.4e9 + 300.0 * index) for index, value in enumerate(values)]
    assert timed == scores(values)


@pytest.mark.parametrize(
    "changes",
    [
        {"memory": 19},
        {"window": 0},
        {"quiet_after": -1},
        {"tail_from": 1.0},
        {"decades": 0.0},
        {"memory": 4096, "half_life": 2048},
    ],
)
def test_settings_out_of_range_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DetectorSettings(**changes)  # type: ignore[arg-type]


def uniform(count: int, low: float, high: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(count)]


def test_the_largest_distance_ever_seen_is_never_forgotten() -> None:
    tail = _Tail(64, 0.98, half_life=10**9)
    tail.p_then_add(1000.0)
    for distance in uniform(20_000, 0.0, 1.0, 5):  # hundreds of halvings of 64 numbers
        tail.p_then_add(distance)
    assert tail.weight > 100
    # Remembered, it makes the tail heavy: seen again, it is rare, not unheard of. Forgotten,
    # the tail is fitted to distances below 1 and 1,000 would be p ~ 0.
    assert tail.p_then_add(1000.0) > 1e-4


def test_every_remembered_distance_stands_for_as_many_as_any_other() -> None:
    tail = _Tail(256, 0.98, half_life=10**9)
    for distance in uniform(5000, 0.0, 1.0, 6) + uniform(5000, 1.0, 2.0, 7):
        tail.p_then_add(distance)
    # Over the whole life, half the distances were at least 1; the last 256 alone say all.
    assert tail.p_then_add(1.0) == pytest.approx(0.5, abs=0.05)


def test_past_the_half_life_the_old_distances_count_less_and_less() -> None:
    tail = _Tail(64, 0.98, half_life=640)
    for distance in uniform(5000, 0.0, 1.0, 8) + uniform(20_000, 1.0, 2.0, 9):
        tail.p_then_add(distance)
    # The first 5,000 have halved in say more than 25 times: the series changed for good.
    assert tail.p_then_add(1.0) > 0.95
