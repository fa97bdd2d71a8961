"""detection/crossval.py: thresholds chosen without the held-out files, pooled as NAB pools.

Four 40-row streams (probation 6 rows), scores written by hand rather than by a detector, so
that every tally is worked out from the rule: a detection at a window's first row earns 1, a
detection before the first window (or in a stream without windows) costs 1.

- ``x/a.csv`` and ``x/b.csv``: a window at rows 10..14 found at 0.9 on row 10, and a false
  alarm at 0.5 on row 7.
- ``y/pull.csv``: the same window, found only at 0.4: its labels pull the threshold down.
- ``y/quiet.csv``: no window; a false alarm at 0.45 on row 20.

Over all four (in-sample), a threshold at or below 0.4 finds every window for 3 false alarms:
standard raw 3 - 3·0.11 = 2.67 beats 1 (above 0.5), so it is chosen. Without ``pull``, the
other three are best above 0.5, where ``pull``'s window is missed.
"""

from __future__ import annotations

import random

import pytest

from phoenix_server.detection import crossval, nab

WINDOW = nab.Window(10, 14)
LENGTH = 40


def scores_at(rows: dict[int, float]) -> list[float]:
    return [rows.get(row, 0.0) for row in range(LENGTH)]


STREAMS: dict[str, tuple[list[float], list[nab.Window]]] = {
    "x/a.csv": (scores_at({10: 0.9, 7: 0.5}), [WINDOW]),
    "x/b.csv": (scores_at({10: 0.9, 7: 0.5}), [WINDOW]),
    "y/pull.csv": (scores_at({10: 0.4}), [WINDOW]),
    "y/quiet.csv": (scores_at({20: 0.45}), []),
}


def steps_of(streams: dict[str, tuple[list[float], list[nab.Window]]]) -> dict[str, nab.Steps]:
    return {name: nab.steps(scores, windows) for name, (scores, windows) in streams.items()}


def fold_of(result: crossval.CrossValidation, name: str) -> crossval.Fold:
    return next(fold for fold in result.folds if name in fold.held_out)


def test_each_fold_chooses_its_threshold_without_the_files_it_holds_out() -> None:
    result = crossval.cross_validate(steps_of(STREAMS))
    assert [fold.held_out for fold in result.folds] == [(name,) for name in sorted(STREAMS)]
    # In-sample, pull's window draws the threshold below 0.4 (the middle of (0, 0.4]) ...
    assert result.in_sample["standard"].threshold == pytest.approx(0.2)
    assert result.in_sample["standard"].tally.missed == 0
    # ... but held out, its threshold comes from the others (the middle of (0.5, 0.9]), and
    # there its window is missed.
    pull = fold_of(result, "y/pull.csv")
    assert pull.chosen["standard"].threshold == pytest.approx(0.7)
    assert pull.scored["standard"] == nab.Tally(1, 0.0, 1, 0.0, 0)
    # Each held-out file is scored at what best_thresholds picks over the *other* files.
    for fold in result.folds:
        rest = [STREAMS[name] for name in STREAMS if name not in fold.held_out]
        expected = nab.best_thresholds(rest)
        for profile in nab.PROFILES:
            assert fold.chosen[profile.name].threshold == expected[profile.name].threshold
            (name,) = fold.held_out
            scores, windows = STREAMS[name]
            again = nab.tally(scores, windows, expected[profile.name].threshold)
            assert fold.scored[profile.name].raw(profile) == pytest.approx(again.raw(profile))


def test_held_out_results_are_pooled_as_nab_pools_files() -> None:
    result = crossval.cross_validate(steps_of(STREAMS))
    # a and b: each found, one false alarm (threshold 0.2 chosen on the others); pull: missed
    # at 0.7; quiet: its false alarm at 0.2. Summed: 3 windows, 2 found (2.0), 1 missed,
    # 3 false alarms costing 1 each.
    held = result.held_out(nab.STANDARD)
    assert (held.windows, held.missed, held.alarms) == (3, 1, 3)
    assert (held.detected, held.false_alarms) == (pytest.approx(2.0), pytest.approx(3.0))
    # standard: raw 2 - 0.33 - 1 = 0.67 on a scale from -3 (null) to 3 (perfect).
    assert result.score(nab.STANDARD) == pytest.approx(100 * 3.67 / 6)
    # reward_low_FP chooses the same thresholds here: raw 2 - 0.66 - 1 = 0.34.
    assert result.score(nab.REWARD_LOW_FP) == pytest.approx(100 * 3.34 / 6)
    # reward_low_FN: raw 2 - 0.33 - 2 = -0.33, from -6 (null) to 3 (perfect).
    assert result.score(nab.REWARD_LOW_FN) == pytest.approx(100 * 5.67 / 9)
    # In-sample: 3 found, 3 false alarms: raw 3 - 0.33 = 2.67, a gap of 2/6 of the scale.
    assert result.in_sample_score(nab.STANDARD) == pytest.approx(100 * 5.67 / 6)
    assert result.gap(nab.STANDARD) == pytest.approx(100 * 2 / 6)
    assert result.overfit(nab.STANDARD)
    assert result.thresholds(nab.STANDARD) == pytest.approx([0.2, 0.2, 0.7, 0.2])
    # Pooled, not averaged: the folds' own scores (a 94.5, b 94.5, pull 0; quiet has no
    # window, so no scale) average 63.0.
    own = [fold.scored["standard"].normalised(nab.STANDARD) for fold in result.folds[:3]]
    assert own == pytest.approx([94.5, 94.5, 0.0])
    assert result.score(nab.STANDARD) != pytest.approx(sum(own) / 3, abs=0.5)


def test_leaving_one_folder_out_chooses_on_the_other_folders() -> None:
    result = crossval.cross_validate(steps_of(STREAMS), crossval.by_folder)
    assert [fold.held_out for fold in result.folds] == [
        ("x/a.csv", "x/b.csv"),
        ("y/pull.csv", "y/quiet.csv"),
    ]
    # x held out: pull and quiet alone are best at or below 0.4 (1 - 0.11 against -1), so a
    # and b are each found with a false alarm. y held out: a and b are best above 0.5, so
    # pull is missed and quiet's 0.45 is no alarm.
    x, y = result.folds
    assert x.chosen["standard"].threshold == pytest.approx(0.2)
    assert y.chosen["standard"].threshold == pytest.approx(0.7)
    held = result.held_out(nab.STANDARD)
    assert (held.windows, held.missed, held.alarms) == (3, 1, 2)
    # raw 2 - 0.22 - 1 = 0.78.
    assert result.score(nab.STANDARD) == pytest.approx(100 * 3.78 / 6)


def test_a_file_at_the_top_of_the_corpus_is_its_own_folder() -> None:
    assert crossval.by_folder("calm.csv") == "."
    assert crossval.by_folder("a/b/c.csv") == "a/b"
    assert crossval.by_file("a/b/c.csv") == "a/b/c.csv"


def test_one_group_cannot_be_cross_validated() -> None:
    with pytest.raises(ValueError, match="at least two groups"):
        crossval.cross_validate(steps_of({"x/a.csv": STREAMS["x/a.csv"]}))
    one_folder = {name: STREAMS[name] for name in ("x/a.csv", "x/b.csv")}
    with pytest.raises(ValueError, match="at least two groups"):
        crossval.cross_validate(steps_of(one_folder), crossval.by_folder)


def test_with_labels_that_agree_the_held_out_score_is_the_in_sample_one() -> None:
    # Files alike: any fold chooses what the whole corpus chooses, so there is no gap.
    alike = {f"{index}.csv": STREAMS["x/a.csv"] for index in range(3)}
    result = crossval.cross_validate(steps_of(alike))
    for profile in nab.PROFILES:
        assert result.score(profile) == pytest.approx(result.in_sample_score(profile))
        assert not result.overfit(profile)


def test_the_folds_agree_with_choosing_and_scoring_from_the_scores_on_random_streams() -> None:
    rng = random.Random(11)
    streams = {}
    for index in range(5):
        length = rng.randrange(60, 200)
        scores = [round(rng.random() ** 4, 2) for _ in range(length)]  # ties on purpose
        first = rng.randrange(nab.probation(length), length - 12)
        windows = [nab.Window(first, first + rng.randrange(3, 10))] if index % 2 == 0 else []
        streams[f"{index}.csv"] = (scores, windows)
    result = crossval.cross_validate(steps_of(streams))
    for profile in nab.PROFILES:
        tallies = []
        for name, (scores, windows) in streams.items():
            rest = [streams[other] for other in streams if other != name]
            threshold = nab.best_thresholds(rest, [profile])[profile.name].threshold
            tallies.append(nab.tally(scores, windows, threshold))
        expected = nab.combine(tallies).normalised(profile)
        assert result.score(profile) == pytest.approx(expected)
