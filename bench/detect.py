"""Anomaly detection quality and speed on labelled NAB streams (``--data DIR``, or
``PHOENIX_NAB_DATA``; by default the development set kept beside this checkout).

``python -m bench.detect [--data DIR] [--quick]``. Prints, for Phoenix's detector and for
the baselines it was chosen against, NAB's three normalised scores (each profile at its own
best corpus-wide threshold) and the detector's points per second; then how much the score
moves when each of the detector's constants moves (a reader can judge overfitting from
that); then a two-fold check of how a threshold chosen on half the files does on the other
half, which is what the held-out set will do. Issue targets: standard score >= 70 on the
held-out set at the development set's thresholds, >= 100,000 points/s on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from phoenix_server.detection import anomaly, nab

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PHOENIX_NAB_DATA", ROOT.parent / "shared" / "data" / "nab-dev"))
TARGET_SCORE = 70.0
TARGET_SPEED = 100_000


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


def phoenix(**changes: float) -> Callable[[], anomaly.Scorer]:
    settings = dataclasses.replace(anomaly.DEFAULT_SETTINGS, **changes)
    return lambda: anomaly.AnomalyDetector(settings)


CANDIDATES: list[tuple[str, Callable[[], anomaly.Scorer]]] = [
    ("windowed Gaussian (6,400 values)", WindowedGaussian),
    ("EWMA z-score (alpha 0.01), tail in decades", EwmaZScore),
    ("Phoenix, value view only (window=1)", phoenix(window=1)),
    ("Phoenix, no quiet period (quiet_after=0)", phoenix(quiet_after=0)),
    ("Phoenix (the defaults)", anomaly.AnomalyDetector),
]

SWEEP: dict[str, list[float]] = {
    "memory": [2048, 4096, 8192],
    "window": [8, 12, 16, 32, 48],
    "tail_from": [0.95, 0.99],
    "quiet_after": [50, 200, 400],
}


@dataclasses.dataclass(frozen=True)
class Measured:
    scores: dict[str, float]
    thresholds: dict[str, float]
    points_per_second: float


def measure(
    streams: list[nab.Stream],
    windows: dict[str, list[nab.Window]],
    make: Callable[[], anomaly.Scorer],
) -> tuple[Measured, nab.Run]:
    run = nab.run(streams, make)
    best = nab.best_thresholds([(run.scores[s.name], windows[s.name]) for s in streams])
    return (
        Measured(
            {name: b.tally.normalised(b.profile) for name, b in best.items()},
            {name: b.threshold for name, b in best.items()},
            run.points_per_second,
        ),
        run,
    )


def line(label: str, measured: Measured) -> str:
    scores = "  ".join(f"{measured.scores[p.name]:5.1f}" for p in nab.PROFILES)
    return f"{label:<46} {scores}  {measured.points_per_second:>10,.0f}"


def two_fold(
    streams: list[nab.Stream], windows: dict[str, list[nab.Window]], run: nab.Run
) -> list[str]:
    """Choose the standard threshold on every other file, score the rest at it, and back."""
    halves = [streams[0::2], streams[1::2]]
    lines = []
    for tuned, held in (halves, halves[::-1]):
        tuned_best = nab.best_thresholds(
            [(run.scores[s.name], windows[s.name]) for s in tuned], [nab.STANDARD]
        )["standard"]
        held_scored = [(run.scores[s.name], windows[s.name]) for s in held]
        at_tuned = nab.at_threshold(held_scored, tuned_best.threshold, [nab.STANDARD])
        own_best = nab.best_thresholds(held_scored, [nab.STANDARD])["standard"]
        lines.append(
            f"threshold {tuned_best.threshold:.4f} from {len(tuned)} files -> the other "
            f"{len(held)} score {at_tuned['standard'].tally.normalised(nab.STANDARD):.1f} "
            f"(their own best: {own_best.tally.normalised(nab.STANDARD):.1f} "
            f"at {own_best.threshold:.4f})"
        )
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="skip the sweep")
    args = parser.parse_args(argv)
    labels = args.data / "labels.json"
    if not labels.is_file():
        print(f"skipped: no labelled data at {args.data} (expected labels.json and CSV files)")
        return
    streams = nab.read_corpus(args.data)
    windows = nab.labelled_windows(streams, nab.read_labels(labels))
    total = sum(len(found) for found in windows.values())
    points = sum(len(s.values) for s in streams)
    print(f"{args.data}: {len(streams)} files, {points:,} points, {total} windows")
    profiles = "  ".join(f"{short:>5}" for short in ("std", "lowFP", "lowFN"))
    print(f"{'detector':<46} {profiles}  {'points/s':>10}")
    chosen: tuple[Measured, nab.Run] | None = None
    for label, make in CANDIDATES:
        measured, run = measure(streams, windows, make)
        print(line(label, measured), flush=True)
        if make is anomaly.AnomalyDetector:
            chosen = (measured, run)
    assert chosen is not None
    measured, run = chosen
    thresholds = ", ".join(f"{name} {t:.4f}" for name, t in measured.thresholds.items())
    print(f"Phoenix's best thresholds here: {thresholds}")
    print(
        f"targets: standard {measured.scores['standard']:.1f} (>= {TARGET_SCORE:.0f}), "
        f"{measured.points_per_second:,.0f} points/s (>= {TARGET_SPEED:,})"
    )
    for text in two_fold(streams, windows, run):
        print(f"two-fold: {text}")
    if args.quick:
        return
    print("sensitivity: each constant moved alone, the others at their defaults")
    for name, values in SWEEP.items():
        for value in values:
            cast = int(value) if name != "tail_from" else value
            moved, _ = measure(streams, windows, phoenix(**{name: cast}))
            print(line(f"  {name}={cast}", moved), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
