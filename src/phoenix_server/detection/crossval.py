"""Cross-validated NAB scores: how a detector does on streams its threshold was not chosen on.

Each fold holds out one file (or one folder), chooses each profile's threshold on the other
files exactly as :func:`nab.best_thresholds` chooses it on a whole corpus, and scores the
held-out files at it. The held-out tallies are pooled as NAB pools files: raw scores summed,
then normalised by the pooled null and perfect scores.

The one thing to know: the pooled held-out score is the detector's quality. The in-sample
score (threshold chosen and scored on the same files) is kept only to measure the gap between
them: a gap of more than :data:`OVERFIT_GAP` points means the threshold, or the design, fits
these files rather than metric streams in general.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from phoenix_server.detection import nab

OVERFIT_GAP = 4.0
"""Points of in-sample score above the held-out score that flag overfitting."""

Grouping = Callable[[str], str]
"""What a file is held out with: a stream's name (its path in the corpus) -> its group."""


def by_file(name: str) -> str:
    """Leave one file out."""
    return name


def by_folder(name: str) -> str:
    """Leave one folder out (files at the top of the corpus are one folder, ``.``)."""
    return PurePosixPath(name).parent.as_posix()


@dataclass(frozen=True)
class Fold:
    """One held-out group: the thresholds chosen without it, and its tallies at them."""

    held_out: tuple[str, ...]
    chosen: dict[str, nab.Best]
    """Per profile: the best threshold over the other files, and their tally there."""
    scored: dict[str, nab.Tally]
    """Per profile: the held-out files' tally at that profile's chosen threshold."""


@dataclass(frozen=True)
class CrossValidation:
    folds: tuple[Fold, ...]
    in_sample: dict[str, nab.Best]
    """Per profile: the threshold chosen on every file, scored on every file."""

    def held_out(self, profile: nab.Profile) -> nab.Tally:
        """Every file's tally at the threshold chosen without it, summed."""
        return nab.combine(fold.scored[profile.name] for fold in self.folds)

    def score(self, profile: nab.Profile) -> float:
        """The cross-validated normalised score: the detector's quality."""
        return self.held_out(profile).normalised(profile)

    def in_sample_score(self, profile: nab.Profile) -> float:
        return self.in_sample[profile.name].tally.normalised(profile)

    def gap(self, profile: nab.Profile) -> float:
        """How far the in-sample score flatters the detector."""
        return self.in_sample_score(profile) - self.score(profile)

    def overfit(self, profile: nab.Profile) -> bool:
        return self.gap(profile) > OVERFIT_GAP

    def thresholds(self, profile: nab.Profile) -> list[float]:
        """The threshold each fold chose for ``profile``, in fold order."""
        return [fold.chosen[profile.name].threshold for fold in self.folds]


def cross_validate(
    streams: Mapping[str, nab.Steps],
    group: Grouping = by_file,
    profiles: Sequence[nab.Profile] = nab.PROFILES,
) -> CrossValidation:
    """Hold out each group of ``streams`` (name -> steps) in turn, in name order.

    The steps are read from each file's scores once; a fold only re-thresholds them, so the
    detector runs once per file whatever the number of folds.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(streams):
        groups.setdefault(group(name), []).append(name)
    if len(groups) < 2:
        raise ValueError(f"cross-validation needs at least two groups of files, got {len(groups)}")
    folds = []
    for held in groups.values():
        out = frozenset(held)
        rest = [part for name, part in streams.items() if name not in out]
        chosen = nab.best_of(rest, profiles)
        scored = {
            p.name: nab.combine(streams[name].at(chosen[p.name].threshold) for name in held)
            for p in profiles
        }
        folds.append(Fold(tuple(held), chosen, scored))
    return CrossValidation(tuple(folds), nab.best_of(streams.values(), profiles))
