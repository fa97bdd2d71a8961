"""Anomaly detection quality and speed on labelled NAB streams (``--data DIR``, or
``PHOENIX_NAB_DATA``; by default the development set kept beside this checkout).

``python -m bench.detect [--data DIR] [--quick]``. Prints, for Phoenix's detector (as the
engine runs it, and with its defaults) and for the baselines it was chosen against, NAB's
three normalised scores cross-validated (leave one file out: each file scored at the
threshold chosen on the others, the detector's quality), the in-sample standard score and its
gap above the cross-validated one (more than 4 points flags overfitting), and points per
second; then the same held out one folder at a time, the engine configuration's speed (best
of three runs), and how much the score moves when each of the detector's constants moves.
Issue targets: cross-validated standard score >= 72 with the in-sample one at most 4 points
above it, >= 100,000 points/s on one core for the detector the engine runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phoenix_server.detection import anomaly, crossval, nab, signals

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PHOENIX_NAB_DATA", ROOT.parent / "shared" / "data" / "nab-dev"))
TARGET_SCORE = 72.0
TARGET_GAP = crossval.OVERFIT_GAP
TARGET_SPEED = 100_000
SPEED_RUNS = 3


class WindowedGaussian:
    """NAB's baseline: the tail probability of a value under the last 6,400 values' Gaussian."""

    def __init__(self, size: int = 6400) -> None:
        self._size = size
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._squares = 0.0

    def score(self, value: float, timestamp: float | None = None) -> float:
        count = len(self._values)
        result = 0.0
        if count >= 2:
            mean = self._sum / count
            spread = math.sqrt(max(self._squares / count - mean * mean, 0.0))
            if spread > 0:
                result = 1.0 - 0.5 * math.erfc(abs(value - mean) / spread / math.sqrt(2.0))
            else:
                result = 0.0 if value == mean else 1.0
        self._values.append(value)
        self._sum += value
        self._squares += value * value
        if count + 1 > self._size:
            oldest = self._values.popleft()
            self._sum -= oldest
            self._squares -= oldest * oldest
        return result


class EwmaZScore:
    """An exponentially weighted mean and variance; score ``-log10`` of the two-sided tail."""

    def __init__(self, alpha: float = 0.01) -> None:
        self._alpha = alpha
        self._mean: float | None = None
        self._variance = 0.0

    def score(self, value: float, timestamp: float | None = None) -> float:
        if self._mean is None:
            self._mean = value
            return 0.0
        gap = value - self._mean
        spread = math.sqrt(self._variance)
        z = abs(gap) / spread if spread > 0 else (0.0 if gap == 0 else 40.0)
        self._mean += self._alpha * gap
        self._variance = (1 - self._alpha) * (self._variance + self._alpha * gap * gap)
        tail = max(math.erfc(z / math.sqrt(2.0)), 1e-300)
        return min(1.0, -math.log10(tail) / 6.0)


def phoenix(**changes: Any) -> Callable[[], anomaly.Scorer]:
    settings = dataclasses.replace(anomaly.DEFAULT_SETTINGS, **changes)
    return lambda: anomaly.AnomalyDetector(settings)


def as_the_engine_runs_it() -> anomaly.Scorer:
    return anomaly.AnomalyDetector(signals.ANOMALY_SETTINGS)


ENGINE = "Phoenix as the engine runs it (its defaults)"
LONG_MEMORY = "Phoenix, memory 16,384 (seldom full on NAB)"
CANDIDATES: list[tuple[str, Callable[[], anomaly.Scorer]]] = [
    ("windowed Gaussian (6,400 values)", WindowedGaussian),
    ("EWMA z-score (alpha 0.01), tail in decades", EwmaZScore),
    ("Phoenix, value view only (window=1)", phoenix(window=1)),
    ("Phoenix, no quiet period (quiet_after=0)", phoenix(quiet_after=0)),
    (LONG_MEMORY, phoenix(memory=16384, half_life=16384)),
    (ENGINE, as_the_engine_runs_it),
]

SWEEP: dict[str, list[float]] = {
    "memory": [1024, 4096, 16384],
    "half_life": [4096, 16384],
    "window": [8, 12, 16, 32, 48],
    "tail_from": [0.95, 0.99],
    "quiet_after": [50, 200, 400],
}


@dataclasses.dataclass(frozen=True)
class Measured:
    by_file: crossval.CrossValidation
    by_folder: crossval.CrossValidation
    points_per_second: float


def measure(
    streams: list[nab.Stream],
    windows: dict[str, list[nab.Window]],
    make: Callable[[], anomaly.Scorer],
) -> Measured:
    """Run the detector once over every file; cross-validate by re-thresholding its scores."""
    run = nab.run(streams, make)
    parts = {s.name: nab.steps(run.scores[s.name], windows[s.name]) for s in streams}
    return Measured(
        crossval.cross_validate(parts, crossval.by_file),
        crossval.cross_validate(parts, crossval.by_folder),
        run.points_per_second,
    )


def line(label: str, result: crossval.CrossValidation, points_per_second: float) -> str:
    held = "  ".join(f"{result.score(p):5.1f}" for p in nab.PROFILES)
    standard = nab.STANDARD
    flag = " overfit" if result.overfit(standard) else ""
    return (
        f"{label:<50} {held}  {result.in_sample_score(standard):5.1f} "
        f"{result.gap(standard):+5.1f}  {points_per_second:>10,.0f}{flag}"
    )


def folds(result: crossval.CrossValidation) -> list[str]:
    """Each held-out folder: the standard threshold chosen without it and its score there."""
    lines = []
    for fold in result.folds:
        chosen = fold.chosen[nab.STANDARD.name]
        scored = fold.scored[nab.STANDARD.name]
        folder = crossval.by_folder(fold.held_out[0])
        lines.append(
            f"{folder} ({len(fold.held_out)} files, {scored.windows} windows) at "
            f"{chosen.threshold:.4f} chosen on the rest: found {scored.windows - scored.missed}"
            f"/{scored.windows}, {scored.alarms} false alarms"
        )
    return lines


def speed(streams: list[nab.Stream], make: Callable[[], anomaly.Scorer]) -> float:
    """Points per second of the detector alone, the best of :data:`SPEED_RUNS` runs (the
    least disturbed by whatever else the machine runs)."""
    return max(nab.run(streams, make).points_per_second for _ in range(SPEED_RUNS))


ALARM_THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.8]
"""Thresholds whose false-alarm rate is reported: the NAB optimum, the engine's default
alarm threshold (0.5, ``anomaly: {threshold}``), and around them."""
CADENCES = [("1 s", 1.0), ("15 s", 15.0), ("5 min", 300.0)]


def print_alarm_rates(
    streams: list[nab.Stream], windows: dict[str, list[nab.Window]], points: int
) -> None:
    """What a threshold means in alarms: windows found, and false alarms per 10,000 samples
    and per series per day at common sampling intervals (the engine's router series are
    sampled every second, Prometheus scrapes every 15 s, NAB's streams every 5 minutes)."""
    run = nab.run(streams, as_the_engine_runs_it)
    scored = [(run.scores[s.name], windows[s.name]) for s in streams]
    per_day = "  ".join(f"{label:>6}" for label, _ in CADENCES)
    print(
        "alarms by threshold, as the engine runs it: found, false, per 10k samples; "
        f"per day at {per_day}"
    )
    for threshold in ALARM_THRESHOLDS:
        tally = nab.at_threshold(scored, threshold)[nab.STANDARD.name].tally
        rate = tally.alarms / points
        days = "  ".join(f"{rate * 86400.0 / every:6.2f}" for _, every in CADENCES)
        print(
            f"  {threshold:.1f}: standard {tally.normalised(nab.STANDARD):5.1f}, found "
            f"{tally.windows - tally.missed}/{tally.windows}, {tally.alarms} false "
            f"({rate * 10_000:.2f} per 10k samples); per day {days}"
        )


HELD_BY_FILE = "scores held out one file at a time (std, lowFP, lowFN); in-sample std and its gap"
HELD_BY_FOLDER = "held out one folder at a time (std, lowFP, lowFN); in-sample std and its gap"
HEADER = (
    f"{'detector':<50} {'std':>5}  {'lowFP':>5}  {'lowFN':>5}  {'in':>5} {'gap':>5}  "
    f"{'points/s':>10}"
)


def read_labelled(
    data: Path,
) -> tuple[list[nab.Stream], dict[str, list[nab.Window]], int] | None:
    """The labelled corpus at ``data`` (streams, their windows, points in all), said in one
    line; None, said, when there is none."""
    labels = data / "labels.json"
    if not labels.is_file():
        print(f"skipped: no labelled data at {data} (expected labels.json and CSV files)")
        return None
    streams = nab.read_corpus(data)
    windows = nab.labelled_windows(streams, nab.read_labels(labels))
    total = sum(len(found) for found in windows.values())
    points = sum(len(s.values) for s in streams)
    print(f"{data}: {len(streams)} files, {points:,} points, {total} windows")
    return streams, windows, points


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="skip the sweep")
    args = parser.parse_args(argv)
    corpus = read_labelled(args.data)
    if corpus is None:
        return
    streams, windows, points = corpus
    print(HELD_BY_FILE)
    print(HEADER)
    measured: dict[str, Measured] = {}
    for label, make in CANDIDATES:
        found = measured[label] = measure(streams, windows, make)
        print(line(label, found.by_file, found.points_per_second), flush=True)
    engine = measured[ENGINE]
    print(HELD_BY_FOLDER)
    for label in (LONG_MEMORY, ENGINE):
        found = measured[label]
        print(line(label, found.by_folder, found.points_per_second))
        for text in folds(found.by_folder):
            print(f"  {text}")
    engine_speed = speed(streams, as_the_engine_runs_it)
    result = engine.by_file
    print(
        f"targets, as the engine runs it: standard {result.score(nab.STANDARD):.1f} held out "
        f"(>= {TARGET_SCORE:.0f}), in-sample {result.gap(nab.STANDARD):+.1f} above it "
        f"(<= {TARGET_GAP:.0f}), {engine_speed:,.0f} points/s, best of {SPEED_RUNS} "
        f"(>= {TARGET_SPEED:,})"
    )
    thresholds = ", ".join(
        f"{name} {best.threshold:.4f}" for name, best in result.in_sample.items()
    )
    print(f"thresholds to apply to other files, as the engine runs it: {thresholds}")
    print_alarm_rates(streams, windows, points)
    if args.quick:
        return
    print("sensitivity: each constant of the defaults moved alone, the others unchanged")
    for name, values in SWEEP.items():
        for value in values:
            cast = value if name == "tail_from" else int(value)
            moved = measure(streams, windows, phoenix(**{name: cast}))
            print(line(f"  {name}={cast}", moved.by_file, moved.points_per_second), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
