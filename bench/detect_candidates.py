"""Streaming anomaly detectors from maintained libraries, measured beside Phoenix's, one run.

``python -m bench.detect_candidates [--data DIR] [--only TEXT]``. For Phoenix's detector
(:class:`~phoenix_server.detection.anomaly.AnomalyDetector` with its defaults, first, for
comparison) and for each candidate whose library is importable, prints the same row as
``python -m bench.detect``: NAB's standard, reward-low-FP and reward-low-FN scores held out
one file at a time (each file scored at the threshold chosen on the others), the in-sample
standard score and its gap above the held-out one, and points per second; then the same held
out one folder at a time (``--only`` keeps the rows whose label has that text, and Phoenix's).
It takes about 17 minutes on one core, most of it in the two random cut forests. A candidate
whose library is missing prints ``skipped: <name> (<library> not installed)``; ``pip install
river==0.26.1 pysad==0.7.0 stumpy==1.14.1 rrcf==0.4.4`` brings the versions measured in
BENCHMARKS.md (none is a dependency of Phoenix: they pull numpy, scipy, scikit-learn and
numba, for detectors that all scored well below Phoenix's).

Every candidate is wrapped as a scorer, ``score(value, timestamp=None) -> float`` in [0, 1],
fed one sample at a time and scored before it learns the sample. Rules kept by every wrapper:

* Only online information: a value is normalised with the running mean and standard
  deviation (``z``) or the running minimum and maximum (``unit``) of the values *before* it,
  never with anything later. A non-finite value scores 0 and is not learnt.
* Bounded cost per sample: each model keeps a fixed-size window, sample or sketch.
* Finite scores in [0, 1] by a strictly increasing map of the library's own score, stated in
  each wrapper. NAB's threshold is chosen by sweeping every distinct score, so such a map does
  not move the figures; what matters is only that it saturates as little as possible.
  ``tail decades`` means ``d / (d + 3)`` with ``d = -log10(p)`` of a tail probability ``p``
  (0.5 is a one-in-a-thousand sample, as for Phoenix, but nothing saturates at 1).
* Library defaults where the library has them; a window of the last 4 values (a *shingle*) as
  the features of the multivariate methods; no constant was tuned on these files.

A candidate that would take more than :data:`BUDGET_SECONDS` over the corpus, judged on a
probe of :data:`PROBE_POINTS` samples after its warm-up, is skipped with the reason printed;
no sample is ever left out. To stay within it, the random cut forests have :data:`TREES`
trees (not 40 to 200) and river's LOF searches :data:`LOF_WINDOW` points (not 1,000): said in
their labels.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.detect import DATA, HEADER, HELD_BY_FILE, HELD_BY_FOLDER, line, measure, read_labelled
from phoenix_server.detection import anomaly, nab

BUDGET_SECONDS = 300.0
"""A candidate projected to take longer than this over the corpus is skipped."""
PROBE_WARMUP = 1000
PROBE_POINTS = 1000
"""Samples timed, after :data:`PROBE_WARMUP` untimed ones, to project a candidate's run."""
SHINGLE = 4
"""Consecutive (normalised) values that make the features of the multivariate methods."""
SEED = 42
_SMALLEST_P = 1e-300


def _module(name: str) -> Any:
    """Import a candidate's library only when its row runs (untyped to the type checker)."""
    return importlib.import_module(name)


def squash(x: float, half: float) -> float:
    """``x / (x + half)`` for ``x >= 0``: strictly increasing, ``half`` -> 0.5, never 1."""
    if math.isnan(x) or x <= 0.0:
        return 0.0
    if math.isinf(x):
        return 1.0
    return x / (x + half)


def logistic(x: float) -> float:
    """``1 / (1 + e^-x)`` for any real ``x``, finite: for scores that can be negative."""
    if math.isnan(x):
        return 0.0
    return 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, x))))


def tail_decades(p: float) -> float:
    """A tail probability as a score: ``d / (d + 3)`` with ``d = -log10(p)``."""
    return squash(-math.log10(min(1.0, max(p, _SMALLEST_P))), 3.0)


class Running:
    """Mean, standard deviation, minimum and maximum of the values seen so far (O(1))."""

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._squares = 0.0
        self._low = math.inf
        self._high = -math.inf

    def z(self, value: float) -> float:
        """``value`` in standard deviations from the mean so far (0 before two values; a
        change after a constant stretch is ``±1e6``, as far as a change can be)."""
        if self.count < 2:
            return 0.0
        spread = math.sqrt(self._squares / self.count)
        gap = value - self._mean
        if spread <= 1e-12 * max(1.0, abs(self._mean)):
            return 0.0 if gap == 0 else math.copysign(1e6, gap)
        return max(-1e6, min(1e6, gap / spread))

    def unit(self, value: float) -> float:
        """``value`` on the range so far, 0 at the minimum and 1 at the maximum (0.5 before
        there is a range; a value outside it lies outside [0, 1])."""
        if self.count == 0:
            return 0.5
        span = self._high - self._low
        if span <= 0.0:
            return 0.5 if value == self._low else (1.5 if value > self._low else -0.5)
        return (value - self._low) / span

    def update(self, value: float) -> None:
        self.count += 1
        gap = value - self._mean
        self._mean += gap / self.count
        self._squares += gap * (value - self._mean)
        self._low = min(self._low, value)
        self._high = max(self._high, value)


class Shingled:
    """The base of most wrappers: normalise each value online, keep the last ``size`` of
    them, and hand the window to :meth:`raw` (the library's score, before it learns)."""

    def __init__(self, size: int = SHINGLE, scale: str = "z") -> None:
        self._running = Running()
        self._size = size
        self._window: deque[float] = deque(maxlen=size)
        self._scale = scale

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        scale = self._running.z if self._scale == "z" else self._running.unit
        self._window.append(scale(value))
        self._running.update(value)
        if len(self._window) < self._size:
            return 0.0
        result = self.raw(list(self._window))
        return result if math.isfinite(result) else (1.0 if result > 0 else 0.0)

    def raw(self, features: list[float]) -> float:
        raise NotImplementedError


# -- river -------------------------------------------------------------------------------------


class RiverUnsupervised(Shingled):
    """A ``river.anomaly`` detector on the shingle as a dict ``{0: x_t-3, ..., 3: x_t}``."""

    def __init__(
        self, model: Any, mapping: Callable[[float], float], size: int = SHINGLE, scale: str = "z"
    ) -> None:
        super().__init__(size, scale)
        self._model = model
        self._mapping = mapping

    def raw(self, features: list[float]) -> float:
        x = dict(enumerate(features))
        result = self._mapping(float(self._model.score_one(x)))
        self._model.learn_one(x)
        return result


def river_hst() -> anomaly.Scorer:
    """river's HalfSpaceTrees (10 trees, height 8, window 250: its defaults) on a shingle of
    values on the running range, the [0, 1] it expects. Its score is already in [0, 1]."""
    river_anomaly = _module("river.anomaly")

    model = river_anomaly.HalfSpaceTrees(seed=SEED)
    return RiverUnsupervised(model, lambda s: s, scale="unit")


def river_loda() -> anomaly.Scorer:
    """river's LODA (100 projections, 10 bins) on a z-normalised shingle; its score, a mean
    negative log density that can be negative, through :func:`logistic`."""
    river_anomaly = _module("river.anomaly")

    return RiverUnsupervised(river_anomaly.LODA(seed=SEED), logistic)


LOF_WINDOW = 500
"""Points river's LOF searches for neighbours: half its default 1,000, which would take about
6 minutes over the corpus (its cost per sample grows with the window)."""


def river_lof() -> anomaly.Scorer:
    """river's incremental LOF (10 neighbours, its default, among the last :data:`LOF_WINDOW`
    points) on a z-normalised shingle; its score (a ratio, 1 is normal) through
    ``squash(s, 1)``."""
    river_anomaly, neighbors = _module("river.anomaly"), _module("river.neighbors")
    # river's own default distance, which its LOF runs on a compiled fast path.
    euclidean = _module("river.utils.math")._euclidean_distance
    search = neighbors.LazySearch(window_size=LOF_WINDOW, dist_func=euclidean)
    model = river_anomaly.LocalOutlierFactor(engine=search)
    return RiverUnsupervised(model, lambda s: squash(s, 1.0))


def river_svm() -> anomaly.Scorer:
    """river's online one-class SVM (nu 0.1, SGD: its defaults) on a z-normalised shingle;
    its decision value, which can be negative, through :func:`logistic`."""
    river_anomaly = _module("river.anomaly")

    return RiverUnsupervised(river_anomaly.OneClassSVM(), logistic)


class RiverGaussian:
    """river's GaussianScorer (every value so far, 100 before it scores: its defaults). Its
    score is ``2·|cdf(y) - 0.5|``, one minus the two-sided tail ``p``; as tail decades. On a
    constant stream (variance 0) river scores every value 1, the most anomalous."""

    def __init__(self) -> None:
        river_anomaly = _module("river.anomaly")

        self._model = river_anomaly.GaussianScorer()

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        result = float(self._model.score_one(None, value))
        self._model.learn_one(None, value)
        return tail_decades(1.0 - result)


class RiverPredictive:
    """river's PredictiveAnomalyDetection around its documented forecaster (SNARIMAX p=12,
    d=1, q=12 on a standard-scaled linear regression, SGD 0.005; no seasonal part, as the
    streams' periods differ), fed values z-normalised online. Its score is the squared error
    over ``mean + 3.5 std`` of past squared errors, 1 at or above that (its own saturation)."""

    def __init__(self) -> None:
        river_anomaly = _module("river.anomaly")
        linear_model, optim = _module("river.linear_model"), _module("river.optim")
        preprocessing, time_series = _module("river.preprocessing"), _module("river.time_series")

        forecaster = time_series.SNARIMAX(
            p=12,
            d=1,
            q=12,
            regressor=preprocessing.StandardScaler()
            | linear_model.LinearRegression(optimizer=optim.SGD(0.005)),
        )
        self._model = river_anomaly.PredictiveAnomalyDetection(
            forecaster, horizon=1, n_std=3.5, warmup_period=100
        )
        self._running = Running()

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        y = self._running.z(value)
        self._running.update(value)
        result = float(self._model.score_one(None, y))
        self._model.learn_one(None, y)
        return max(0.0, min(1.0, result)) if math.isfinite(result) else 0.0


# -- pysad -------------------------------------------------------------------------------------


class Likelihood:
    """pysad's GaussianTailProbabilityCalibrator: NAB's anomaly likelihood (the tail of the
    mean of the last 10 raw scores under the last 8,000 raw scores' Gaussian), ``L = 1 - Q``;
    as tail decades of ``1 - L`` (which saturates where ``Q`` < 1e-16, as NAB's does)."""

    def __init__(self) -> None:
        calibration = _module("pysad.transform.probability_calibration")
        self._calibrator = calibration.GaussianTailProbabilityCalibrator()

    def __call__(self, raw: float) -> float:
        likelihood = float(self._calibrator.fit_transform_partial(raw))
        return tail_decades(1.0 - likelihood)


class Pysad(Shingled):
    """A ``pysad`` model scored then fitted on a z-normalised shingle (a NumPy array); its
    raw score through ``mapping``, or through NAB's likelihood if ``calibrate``."""

    def __init__(
        self, model: Any, mapping: Callable[[float], float], calibrate: bool = False
    ) -> None:
        import numpy as np

        super().__init__()
        self._np = np
        self._model = model
        self._mapping: Callable[[float], float] = Likelihood() if calibrate else mapping

    def raw(self, features: list[float]) -> float:
        x = self._np.asarray(features, dtype=float)
        result = float(self._model.score_partial(x))
        self._model.fit_partial(x)
        return self._mapping(result if math.isfinite(result) else 0.0)


TREES = 16
"""Trees of each robust random cut forest: 40 would take about 7 (pysad) and 10 (rrcf) minutes
over the corpus; the papers use 100 to 200."""


def pysad_rrcf(calibrate: bool = False) -> Callable[[], anomaly.Scorer]:
    """pysad's RobustRandomCutForest (16 trees of 256 points, a uniform sample of the stream);
    its collusive displacement (0 up to about the tree size) through ``squash(s, 10)``."""

    def make() -> anomaly.Scorer:
        models = _module("pysad.models")
        model = models.RobustRandomCutForest(num_trees=TREES, tree_size=256, random_state=SEED)
        return Pysad(model, lambda s: squash(s, 10.0), calibrate)

    return make


def pysad_xstream(calibrate: bool = False) -> Callable[[], anomaly.Scorer]:
    """pysad's xStream (100 projections, 100 chains of depth 15, window 256: its defaults);
    its score, a negative log count that can be negative, through :func:`logistic`."""

    def make() -> anomaly.Scorer:
        models = _module("pysad.models")
        return Pysad(models.xStream(random_state=SEED), logistic, calibrate)

    return make


def pysad_loda(calibrate: bool = False) -> Callable[[], anomaly.Scorer]:
    """pysad's LODA (100 projections, 10 bins: its defaults); its mean negative log density,
    which can be negative, through :func:`logistic`."""

    def make() -> anomaly.Scorer:
        models = _module("pysad.models")
        return Pysad(models.LODA(random_state=SEED), logistic, calibrate)

    return make


KNNCAD_PROBATION = 600
"""kNN-CAD's training length: NAB's probation (15% of a file) for the 4,032-row files, fixed
since a scorer does not know its stream's length."""


class KnnCad:
    """pysad's KNNCAD, NAB's kNN-CAD (Burnaev & Ishimtsev): the sum of the 27 smallest
    Mahalanobis-like distances of the last 19 raw values to the training windows, ranked
    among the calibration windows'; after an alarm (>= 0.9965) it returns 0.5 for 120 samples,
    as in NAB. Its score is already in [0, 1] (a fraction, so many ties). What it prints (a
    singular matrix, on a constant stream) is dropped."""

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._model = _module("pysad.models").KNNCAD(KNNCAD_PROBATION)

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        with contextlib.redirect_stdout(None):
            result = float(self._model.fit_score_partial(self._np.array([value])))
        return result if math.isfinite(result) else 0.0


class RelativeEntropy:
    """pysad's RelativeEntropy, NAB's relative-entropy detector (Wang et al.): 1 when the
    histogram (5 bins) of the last 52 values matches none of the histograms learnt so far,
    else 0. It needs the stream's range up front (NAB hands it the whole file's, a look-ahead);
    here it gets [0, 1] and the values on the running range (:meth:`Running.unit`), the ones
    outside clipped by the model. Its score is 0 or 1: one threshold only."""

    def __init__(self) -> None:
        self._model = _module("pysad.models").RelativeEntropy(0.0, 1.0)
        self._running = Running()

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        unit = self._running.unit(value)
        self._running.update(value)
        return float(self._model.fit_score_partial(unit))


# -- rrcf --------------------------------------------------------------------------------------


class RrcfForest(Shingled):
    """The rrcf library's streaming recipe: 16 trees, each holding the last 256 z-normalised
    shingles (the oldest forgotten); the mean collusive displacement of the new shingle,
    taken as it is inserted, through ``squash(s, 10)``."""

    def __init__(self, trees: int = TREES, size: int = 256) -> None:
        import numpy as np

        rrcf = _module("rrcf")

        super().__init__()
        np.random.seed(SEED)
        self._np = np
        self._forest = [rrcf.RCTree() for _ in range(trees)]
        self._tree_size = size
        self._index = 0

    def raw(self, features: list[float]) -> float:
        point = self._np.asarray(features, dtype=float)
        total = 0.0
        for tree in self._forest:
            if len(tree.leaves) >= self._tree_size:
                tree.forget_point(self._index - self._tree_size)
            tree.insert_point(point, index=self._index)
            total += tree.codisp(self._index)
        self._index += 1
        return squash(total / len(self._forest), 10.0)


# -- stumpy ------------------------------------------------------------------------------------


_STUMPY_READY: set[bool] = set()
"""The ``normalize`` settings whose kernels numba has compiled in this process."""


class Discord:
    """stumpy's incremental matrix profile (``stumpi``): the distance from the last ``m``
    values to their nearest earlier subsequence among the last ``keep`` values (the left
    matrix profile), the subsequences z-normalised (``normalize``, the classic discord) or not
    (then the values are taken in the running standard deviations of :class:`Running`). It
    starts once ``keep`` values are seen: a stream's first ``keep`` samples score 0 (NAB does
    not score its first 15%, up to 750 rows, either). Score: ``squash(d / sqrt(m), 1)``."""

    def __init__(self, m: int = 24, keep: int = 600, normalize: bool = True) -> None:
        import numpy as np

        stumpy = _module("stumpy")
        self._np = np
        self._stumpy = stumpy
        self._m = m
        self._keep = keep
        self._normalize = normalize
        self._running = Running()
        self._values: list[float] = []
        self._profile: Any = None
        if normalize not in _STUMPY_READY:  # Compile the kernels here, outside the timed run.
            warm = np.sin(np.arange(4 * m, dtype=float)) + np.arange(4 * m) % 3
            stumpy.stumpi(warm, m, egress=True, normalize=normalize).update(0.5)
            _STUMPY_READY.add(normalize)

    def score(self, value: float, timestamp: float | None = None) -> float:
        if not math.isfinite(value):
            return 0.0
        if not self._normalize:
            scaled = self._running.z(value)
            self._running.update(value)
            value = scaled
        if self._profile is None:
            self._values.append(value)
            if len(self._values) == self._keep:
                history = self._np.asarray(self._values, dtype=float)
                self._profile = self._stumpy.stumpi(
                    history, self._m, egress=True, normalize=self._normalize
                )
            return 0.0
        self._profile.update(value)
        return squash(float(self._profile.left_P_[-1]) / math.sqrt(self._m), 1.0)


def raw_discord() -> anomaly.Scorer:
    return Discord(normalize=False)


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    label: str
    library: str
    """The module that must be importable, named in the skip message."""
    make: Callable[[], anomaly.Scorer]


PHOENIX = "Phoenix AnomalyDetector (defaults)"
CANDIDATES: list[Candidate] = [
    Candidate(PHOENIX, "phoenix_server", anomaly.AnomalyDetector),
    Candidate("river HalfSpaceTrees (shingle 4, running range)", "river", river_hst),
    Candidate("river GaussianScorer (all values so far)", "river", RiverGaussian),
    Candidate("river LODA (shingle 4, running z)", "river", river_loda),
    Candidate("river LocalOutlierFactor (last 500, shingle 4)", "river", river_lof),
    Candidate("river OneClassSVM (shingle 4, running z)", "river", river_svm),
    Candidate("river PredictiveAnomalyDetection (SNARIMAX)", "river", RiverPredictive),
    Candidate("pysad RRCF (16 trees x 256, shingle 4)", "pysad", pysad_rrcf()),
    Candidate("pysad RRCF + NAB likelihood calibrator", "pysad", pysad_rrcf(calibrate=True)),
    Candidate("pysad xStream (shingle 4, running z)", "pysad", pysad_xstream()),
    Candidate("pysad xStream + NAB likelihood calibrator", "pysad", pysad_xstream(True)),
    Candidate("pysad LODA (shingle 4, running z)", "pysad", pysad_loda()),
    Candidate("pysad LODA + NAB likelihood calibrator", "pysad", pysad_loda(calibrate=True)),
    Candidate("pysad KNNCAD (NAB's kNN-CAD, training 600)", "pysad", KnnCad),
    Candidate("pysad RelativeEntropy (NAB's, running range)", "pysad", RelativeEntropy),
    Candidate("rrcf forest (16 trees x last 256, shingle 4)", "rrcf", RrcfForest),
    Candidate("stumpy stumpi discord (m 24, last 600)", "stumpy", Discord),
    Candidate("stumpy stumpi, not z-normalised (running z)", "stumpy", raw_discord),
]


def probe(make: Callable[[], anomaly.Scorer], streams: list[nab.Stream]) -> float:
    """Points per second of a fresh scorer on the stream whose start varies most (the worst
    case for methods that skip repeated points), timed after its warm-up."""
    varied = max(streams, key=lambda s: len(set(s.values[: PROBE_WARMUP + PROBE_POINTS])))
    values = varied.values[: PROBE_WARMUP + PROBE_POINTS]
    scorer = make()
    for value in values[:PROBE_WARMUP]:
        scorer.score(value)
    started = time.perf_counter()
    for value in values[PROBE_WARMUP:]:
        scorer.score(value)
    return len(values[PROBE_WARMUP:]) / max(time.perf_counter() - started, 1e-9)


def versions() -> str:
    from importlib import metadata

    found = []
    for name in ("river", "pysad", "stumpy", "rrcf", "numpy", "scipy", "scikit-learn", "numba"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found) or "none"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detect_candidates", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--only", default="", help="run only the rows whose label has this text")
    args = parser.parse_args(argv)
    # stumpy warns when most of a matrix profile is near 0 (a repetitive stream): not news here.
    warnings.filterwarnings("ignore", category=UserWarning, module="stumpy")
    began = time.perf_counter()
    corpus = read_labelled(args.data)
    if corpus is None:
        return
    streams, windows, points = corpus
    print(f"libraries: {versions()}")
    print(HELD_BY_FILE)
    print(HEADER)
    by_folder: list[str] = []
    for candidate in CANDIDATES:
        if args.only and args.only not in candidate.label and candidate.label != PHOENIX:
            continue
        if importlib.util.find_spec(candidate.library) is None:
            print(f"skipped: {candidate.label} ({candidate.library} not installed)")
            continue
        rate = probe(candidate.make, streams)
        if points / rate > BUDGET_SECONDS:
            print(
                f"skipped: {candidate.label} (about {rate:,.0f} points/s on a probe: "
                f"{points / rate / 60:.0f} min for the corpus, over the "
                f"{BUDGET_SECONDS / 60:.0f} min budget)"
            )
            continue
        found = measure(streams, windows, candidate.make)
        print(line(candidate.label, found.by_file, found.points_per_second), flush=True)
        by_folder.append(line(candidate.label, found.by_folder, found.points_per_second))
    print(HELD_BY_FOLDER)
    print(HEADER)
    for row in by_folder:
        print(row)
    print(f"wall time {time.perf_counter() - began:,.0f} s")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
