"""detection/nab.py: reading NAB-format data, the scoring rule, the corpus-wide threshold.

Expected scores are worked out by hand from the rule in the data's README:
f(y) = 2/(1+e^{5y}) - 1, so f(-1) = 0.986614, f(-0.6) = 0.905148, f(0.5) = -0.848284.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from phoenix_server.detection import nab

# A 40-row stream: probation is floor(0.15*40) = 6 rows; one window, rows 10..14 (W = 5).
WINDOW = nab.Window(10, 14)


def scores_at(length: int, rows: dict[int, float]) -> list[float]:
    return [rows.get(row, 0.0) for row in range(length)]


def test_probation_is_fifteen_percent_capped_at_750() -> None:
    assert nab.probation(40) == 6
    assert nab.probation(4032) == 604
    assert nab.probation(100_000) == 750


def test_a_detection_at_the_start_of_a_window_earns_the_whole_reward() -> None:
    result = nab.tally(scores_at(40, {10: 1.0}), [WINDOW], 0.5)
    assert result.detected == pytest.approx(1.0)
    assert result.normalised(nab.STANDARD) == pytest.approx(100.0)


def test_the_hand_worked_stream() -> None:
    # Row 2 is in probation (ignored); row 7 is before the first window (costs 1); row 12 is
    # the earliest detection in the window: y = -(14-12+1)/5 = -0.6, so 0.905148/0.986614 =
    # 0.917429; row 13 is a later one in the same window (nothing); row 16 is after it:
    # y = (16-14)/(5-1) = 0.5, cost 0.848284; row 30 is far after: y = 4 > 3, cost 1.
    scores = scores_at(40, {2: 1.0, 7: 1.0, 12: 1.0, 13: 1.0, 16: 1.0, 30: 1.0})
    result = nab.tally(scores, [WINDOW], 0.5)
    assert result.detected == pytest.approx(0.917429, abs=1e-6)
    assert result.missed == 0
    assert result.false_alarms == pytest.approx(2.848284, abs=1e-6)
    assert result.alarms == 3
    # standard: raw = 0.917429 - 0.11 * 2.848284 = 0.604117; null -1, perfect 1.
    assert result.normalised(nab.STANDARD) == pytest.approx(80.2059, abs=1e-3)
    # reward_low_FP: raw = 0.917429 - 0.22 * 2.848284 = 0.290806.
    assert result.normalised(nab.REWARD_LOW_FP) == pytest.approx(64.5403, abs=1e-3)
    # reward_low_FN: raw 0.604117; null -2, perfect 1: 100 * 2.604117 / 3.
    assert result.normalised(nab.REWARD_LOW_FN) == pytest.approx(86.8039, abs=1e-3)


def test_scores_equal_to_the_threshold_are_detections() -> None:
    result = nab.tally(scores_at(40, {10: 0.5}), [WINDOW], 0.5)
    assert result.missed == 0


def test_a_missed_window_costs_a_false_negative() -> None:
    second = nab.Window(25, 29)
    result = nab.tally(scores_at(40, {25: 1.0}), [WINDOW, second], 0.5)
    assert (result.missed, result.detected) == (1, pytest.approx(1.0))
    # raw = 1 - 1 = 0, halfway between null (-2) and perfect (2).
    assert result.normalised(nab.STANDARD) == pytest.approx(50.0)
    assert nab.tally(scores_at(40, {}), [WINDOW], 0.5).normalised(nab.STANDARD) == 0.0


def test_a_false_alarm_after_a_window_is_measured_from_the_latest_window() -> None:
    first, second = nab.Window(8, 10), nab.Window(20, 24)
    # Row 27 follows the second window: y = (27-24)/(5-1) = 0.75, f = -0.954045.
    result = nab.tally(scores_at(40, {27: 1.0}), [first, second], 0.5)
    assert result.false_alarms == pytest.approx(0.954045, abs=1e-6)


def test_windows_are_the_rows_between_the_labelled_times(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    rows = [f"2014-04-01 00:{minute:02d}:00,{minute}" for minute in range(0, 60, 5)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    stream = nab.read_stream(path, "s.csv")
    spans = [(nab.parse_time("2014-04-01 00:12:00.000000"), nab.parse_time("2014-04-01 00:25:00"))]
    assert nab.windows_of(stream, spans) == [nab.Window(3, 5)]
    assert stream.values[3:6] == [15.0, 20.0, 25.0]
    assert stream.timestamps[0] == "2014-04-01 00:00:00"


def brute_force_best(
    scored: list[tuple[list[float], list[nab.Window]]], profile: nab.Profile
) -> float:
    candidates = {score for scores, _ in scored for score in scores} | {2.0}
    return max(
        nab.combine(nab.tally(scores, windows, t) for scores, windows in scored).raw(profile)
        for t in candidates
    )


def test_the_threshold_sweep_finds_what_trying_every_threshold_finds() -> None:
    rng = random.Random(7)
    scored = []
    for _ in range(6):
        length = rng.randrange(60, 200)
        scores = [round(rng.random() ** 3, 2) for _ in range(length)]  # many ties on purpose
        first = rng.randrange(nab.probation(length), length - 12)
        windows = [nab.Window(first, first + rng.randrange(3, 10))]
        scored.append((scores, windows))
    best = nab.best_thresholds(scored)
    for profile in nab.PROFILES:
        found = best[profile.name]
        assert found.tally.raw(profile) == pytest.approx(brute_force_best(scored, profile))
        # The reported threshold really gives that tally, anywhere in its interval.
        for threshold in (found.threshold, found.up_to):
            again = nab.combine(nab.tally(s, w, threshold) for s, w in scored)
            assert again.raw(profile) == pytest.approx(found.tally.raw(profile))


def test_steps_read_once_give_the_tally_at_any_threshold() -> None:
    rng = random.Random(5)
    length = 150
    scores = [round(rng.random() ** 3, 2) for _ in range(length)]  # many ties on purpose
    windows = [nab.Window(40, 47), nab.Window(90, 99)]
    steps = nab.steps(scores, windows)
    values = [event[0] for event in steps.events]
    assert values == sorted(set(values), reverse=True)  # one event per distinct score
    for threshold in (*sorted(set(scores)), 0.0, 0.333, 2.0):
        expected = nab.tally(scores, windows, threshold)
        found = steps.at(threshold)
        assert (found.windows, found.missed, found.alarms) == (
            expected.windows,
            expected.missed,
            expected.alarms,
        )
        assert found.detected == pytest.approx(expected.detected)
        assert found.false_alarms == pytest.approx(expected.false_alarms)


def test_with_no_useful_detection_the_best_is_to_stay_silent() -> None:
    scored = [(scores_at(40, {7: 0.9, 30: 0.8}), [WINDOW])]
    best = nab.best_thresholds(scored)["standard"]
    assert best.threshold > 0.9
    assert best.tally.normalised(nab.STANDARD) == 0.0


def test_at_threshold_scores_every_profile_at_that_threshold() -> None:
    scores = scores_at(40, {7: 0.6, 12: 0.4})
    results = nab.at_threshold([(scores, [WINDOW])], 0.5)
    assert results["standard"].tally.missed == 1
    assert results["standard"].tally.alarms == 1
    assert set(results) == {"standard", "reward_low_FP", "reward_low_FN"}


# -- reading -------------------------------------------------------------------------------------


def test_a_bad_header_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,value\n2014-04-01 00:00:00,1\n")
    with pytest.raises(nab.DataError, match=r"bad.csv:1: expected the header"):
        nab.read_stream(path, "bad.csv")


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return path


def problems(stream: nab.Stream) -> list[tuple[int, nab.Problem]]:
    return [(warning.line, warning.problem) for warning in stream.warnings]


def test_rows_out_of_time_order_are_scored_in_file_order_with_a_warning(tmp_path: Path) -> None:
    # A clock set back: line 4 is earlier than line 3, and then time goes on from there.
    path = write_csv(
        tmp_path / "late.csv",
        "2014-04-01 00:05:00,1",
        "2014-04-01 00:10:00,2",
        "2014-04-01 00:01:00,3",
        "2014-04-01 00:06:00,4",
    )
    stream = nab.read_stream(path, "late.csv")
    assert stream.values == [1.0, 2.0, 3.0, 4.0]
    assert stream.timestamps[2] == "2014-04-01 00:01:00"
    assert not stream.ordered
    assert problems(stream) == [(4, nab.Problem.OUT_OF_ORDER)]
    assert str(stream.warnings[0]) == (
        f"{path}:4: timestamp 2014-04-01 00:01:00 is earlier than the row before "
        "(2014-04-01 00:10:00); scored in file order"
    )


def test_a_window_in_an_unordered_file_spans_its_rows_in_file_order(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "late.csv",
        *[f"2014-04-01 00:{minute:02d}:00,{minute}" for minute in (0, 10, 20, 5, 30, 40, 15)],
    )
    stream = nab.read_stream(path, "late.csv")
    # 00:04-00:12 holds rows 1 (00:10) and 3 (00:05); 00:14-00:16 holds row 6 (00:15).
    spans = [
        (nab.parse_time("2014-04-01 00:04:00"), nab.parse_time("2014-04-01 00:12:00")),
        (nab.parse_time("2014-04-01 00:14:00"), nab.parse_time("2014-04-01 00:16:00")),
    ]
    assert nab.windows_of(stream, spans) == [nab.Window(1, 3), nab.Window(6, 6)]
    # 00:20-00:40 holds rows 2, 4 and 5: it overlaps the first window in file order, and
    # overlapping windows become one (the scoring rule needs them disjoint).
    spans.append((nab.parse_time("2014-04-01 00:20:00"), nab.parse_time("2014-04-01 00:40:00")))
    assert nab.windows_of(stream, spans) == [nab.Window(1, 5), nab.Window(6, 6)]


def test_duplicates_gaps_and_constant_stretches_are_warnings(tmp_path: Path) -> None:
    rows = [
        f"2014-04-01 {minute // 60:02d}:{minute % 60:02d}:00,{minute}" for minute in range(0, 200)
    ]
    rows[50:] = [row.split(",")[0] + ",7" for row in rows[50:]]  # 150 rows of 7: a stuck source
    rows.insert(10, rows[9])  # the same timestamp twice, at lines 11 and 12
    del rows[30:35]  # a gap of 6 minutes where the usual step is 1
    stream = nab.read_stream(write_csv(tmp_path / "odd.csv", *rows), "odd.csv")
    assert problems(stream) == [
        (12, nab.Problem.DUPLICATE),
        (32, nab.Problem.GAP),
        (48, nab.Problem.CONSTANT),
    ]
    assert stream.ordered
    assert len(stream.values) == len(rows)
    details = [warning.detail for warning in stream.warnings]
    assert "timestamp 2014-04-01 00:09:00 already appeared" in details[0]
    assert "gap of 0:06:00 since the row before (the usual step is 0:01:00)" in details[1]
    assert "value 7.0 repeats for 150 rows (to line 197)" in details[2]


def test_a_short_run_of_one_value_is_no_warning(tmp_path: Path) -> None:
    rows = [f"2014-04-01 00:{minute:02d}:00,{1 if minute < 30 else minute}" for minute in range(60)]
    assert nab.read_stream(write_csv(tmp_path / "calm.csv", *rows), "calm.csv").warnings == ()


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        ("", "an empty value"),
        ("NaN", "value 'NaN'"),
        ("abc", "value 'abc'"),
        ("inf", "value 'inf'"),
    ],
)
def test_a_value_that_is_not_a_number_is_a_gap_with_a_warning(
    tmp_path: Path, cell: str, what: str
) -> None:
    path = write_csv(tmp_path / "gappy.csv", "2014-04-01 00:00:00,1", f"2014-04-01 00:01:00,{cell}")
    stream = nab.read_stream(path, "gappy.csv")
    assert stream.values[0] == 1.0
    assert math.isnan(stream.values[1])
    assert [str(warning) for warning in stream.warnings] == [
        f"{path}:3: {what} is not a finite number; scored as a gap (score 0)"
    ]


def test_a_row_without_a_readable_time_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "rows.csv",
        "2014-04-01 00:00:00,1",
        "yesterday,2",
        "2014-04-01 00:01:00,3,extra",
        "2014-04-01 00:02:00,4",
    )
    stream = nab.read_stream(path, "rows.csv")
    assert stream.values == [1.0, 4.0]
    assert [str(warning) for warning in stream.warnings] == [
        f"{path}:3: timestamp 'yesterday' is not YYYY-MM-DD HH:MM:SS; row skipped",
        f"{path}:4: expected 'YYYY-MM-DD HH:MM:SS,<number>', got "
        "'2014-04-01 00:01:00,3,extra'; row skipped",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2014-04-01 00:00:00,1\n", "bad.csv:1: expected the header 'timestamp,value'"),
        ("", "bad.csv:1: expected the header 'timestamp,value', got None"),
        ("timestamp,value\n", "bad.csv: no row with a timestamp and a number"),
        ("timestamp,value\n2014-04-01 00:00:00,x\nnow,1\n", "bad.csv: no row with a timestamp"),
    ],
)
def test_a_file_with_nothing_to_score_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(nab.DataError, match=message):
        nab.read_stream(path, "bad.csv")


def test_a_header_after_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,value\n2014-04-01 00:00:00,1\n")
    assert nab.read_stream(path, "excel.csv").values == [1.0]


def test_loading_a_corpus_skips_unusable_files_and_keeps_the_rest(tmp_path: Path) -> None:
    write_csv(tmp_path / "good.csv", "2014-04-01 00:00:00,1")
    (tmp_path / "headless.csv").write_text("2014-04-01 00:00:00,1\n")
    corpus = nab.load_corpus(tmp_path)
    assert [stream.name for stream in corpus.streams] == ["good.csv"]
    assert [str(error) for error in corpus.skipped] == [
        f"{tmp_path / 'headless.csv'}:1: expected the header 'timestamp,value', "
        "got ['2014-04-01 00:00:00', '1']"
    ]
    with pytest.raises(nab.DataError, match=r"headless\.csv:1"):
        nab.read_corpus(tmp_path)  # the strict reader used by bench/detect.py


def test_a_corpus_is_every_csv_below_a_folder_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/two.csv", "one.csv"):
        (tmp_path / name).write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    assert [s.name for s in nab.read_corpus(tmp_path)] == ["b/two.csv", "one.csv"]
    with pytest.raises(nab.DataError, match="not a directory"):
        nab.read_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(nab.DataError, match=r"no \.csv files"):
        nab.read_corpus(tmp_path / "empty")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"a.csv": [["2014-04-01 00:00:00"]]}', "'a.csv': expected a list of"),
        ('{"a.csv": [["yesterday", "today"]]}', "'a.csv': expected a list of"),
    ],
)
def test_bad_labels_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(nab.DataError, match=message):
        nab.read_labels(path)


def test_every_stream_needs_labels(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    streams = nab.read_corpus(tmp_path)
    with pytest.raises(nab.DataError, match=r"no entry for a\.csv"):
        nab.labelled_windows(streams, {})
    assert nab.labelled_windows(streams, {"a.csv": []}) == {"a.csv": []}
