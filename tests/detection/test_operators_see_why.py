"""What a person reads to see why a series was news: the sample, its score, the series' usual
range, and its scores over the last quarter of an hour (signals.py, score_trail.py)."""

from __future__ import annotations

import random
from dataclasses import replace

from phoenix_server.detection.anomaly import AnomalyDetector
from phoenix_server.detection.score_trail import STEP, STEPS, ScoreTrail
from phoenix_server.detection.signals import ServiceSignals, Surprise
from phoenix_server.detection.symptoms import SymptomDetector
from tests.detection.test_rules_and_trends import FAST


def test_the_usual_range_is_the_middle_98_percent_of_the_values_remembered() -> None:
    detector = AnomalyDetector()
    assert detector.usual_range() is None
    for value in range(1, 10):
        detector.score(float(value))
    assert detector.usual_range() is None, "nine values are too few to say what is usual"
    for value in range(10, 1001):
        detector.score(float(value))
    assert detector.usual_range() == (10.0, 990.0), "the 10th from either end"
    for value in range(1001, 5001):  # only the last 2,048 are remembered
        detector.score(float(value))
    assert detector.usual_range() == (2953.0 + 20.0, 5000.0 - 20.0), "2,953 to 5,000"


def test_the_trail_keeps_each_half_minutes_peak_for_a_quarter_of_an_hour() -> None:
    trail = ScoreTrail()
    assert trail.points(1000.0) is None, "nothing was news"
    trail.add(0.0, 0.2)
    trail.add(10.0, 0.7)  # the same half minute: its peak
    trail.add(20.0, 0.1)
    trail.add(STEP * 3, 0.0)  # nothing new: costs nothing, shows 0
    trail.add(STEP * 4 + 1, 0.456)
    now = STEP * 5
    assert (trail.points(now) or [])[-6:] == [0.7, 0.0, 0.0, 0.0, 0.46, 0.0]
    assert sum(trail.points(now) or []) == 0.7 + 0.46
    # A quarter of an hour on, the first half minute leaves the trail, then the others.
    assert (trail.points(STEP * (STEPS - 1)) or [])[0] == 0.7
    assert sum(trail.points(STEP * STEPS) or []) == 0.46
    assert trail.points(STEP * (STEPS + 5)) is None, "quiet throughout"


def test_the_trail_stays_small_whatever_the_rate() -> None:
    trail = ScoreTrail()
    rng = random.Random(1)
    for step in range(100_000):
        trail.add(step * 0.1, rng.random())
    assert len(trail._peaks) == STEPS


def test_an_anomaly_inside_a_batch_is_named_with_its_sample_and_usual_range() -> None:
    # A batch is scored before the symptoms look: its anomalous sample need not be its last.
    rng = random.Random(4)
    asked = replace(FAST, detection=replace(FAST.detection, anomaly_incidents=True))
    detector, signals = SymptomDetector(asked, 8 << 30), ServiceSignals()
    for at in range(1000):
        signals.record(float(at), {"queue_depth": rng.gauss(50.0, 5.0)})
    signals.record(1000.0, {"queue_depth": 900.0})
    signals.record(1000.0, {"queue_depth": 51.0})  # pushed in the same batch, after it
    assert signals.anomaly["queue_depth"][1] == 0.0, "the latest sample is no news"
    found = detector.evaluate(1000.0, signals, replicas=1)
    assert len(found) == 1
    surprise = signals.surprises["queue_depth"]
    assert (surprise.at, surprise.value, surprise.score) == (1000.0, 900.0, 1.0)
    assert surprise.usual is not None
    low, high = surprise.usual
    assert 36.0 < low < 40.0 and 60.0 < high < 64.0, "50 +- 2.33 sd"
    assert found[0].summary == f"anomalous {surprise.describe('queue_depth')}"
    assert found[0].summary.startswith("anomalous queue_depth = 900 scored 1.00 (usually ")


def test_a_surprise_reads_as_a_sentence() -> None:
    assert (
        Surprise(1.0, 812.44, 0.6234, (95.12, 140.0)).describe("latency_p99")
        == "latency_p99 = 812 scored 0.62 (usually 95.1 to 140)"
    )
    assert (
        Surprise(1.0, 2_500_000.0, 1.0, None).describe("memory_rss")
        == "memory_rss = 2,500,000 scored 1.00 (too few samples yet to say what is usual)"
    )
    assert Surprise(1.0, -1.5e308, 1.0, (0.0, 2e-9)).describe("q") == (
        "q = -1.5e+308 scored 1.00 (usually 0 to 2e-09)"
    )
