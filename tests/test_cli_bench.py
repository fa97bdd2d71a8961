"""``phoenix bench detect`` end to end, on a tiny NAB-format corpus written to tmp_path."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phoenix_server.cli import app
from phoenix_server.detection import nab

START = datetime(2014, 4, 1)
ROWS = 400
SPIKE = 300


def stamp(row: int) -> str:
    return (START + timedelta(minutes=5 * row)).strftime("%Y-%m-%d %H:%M:%S")


def write_stream(path: Path, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{stamp(row)},{value}" for row, value in enumerate(values)]
    path.write_text("timestamp,value\n" + "\n".join(lines) + "\n")


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(1)
    data = tmp_path / "data"
    spiky = [rng.gauss(10.0, 1.0) for _ in range(ROWS)]
    spiky[SPIKE] = 60.0
    write_stream(data / "group" / "spiky.csv", spiky)
    write_stream(data / "calm.csv", [rng.gauss(5.0, 1.0) for _ in range(ROWS)])
    labels = tmp_path / "labels.json"
    window = [f"{stamp(SPIKE - 10)}.000000", f"{stamp(SPIKE + 10)}.000000"]
    labels.write_text(json.dumps({"group/spiky.csv": [window], "calm.csv": []}))
    return data, labels


def bench(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["bench", "detect", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def profile_line(output: str, name: str) -> tuple[float, float]:
    match = re.search(rf"^{name}\s+(-?[\d.]+)\s+([\d.]+)", output, re.MULTILINE)
    assert match, output
    return float(match.group(1)), float(match.group(2))


def test_scores_the_corpus_and_prints_thresholds_and_speed(corpus: tuple[Path, Path]) -> None:
    data, labels = corpus
    code, out, err = bench("--data", data, "--labels", labels)
    assert (code, err) == (0, "")
    assert "2 files, 800 points, 1 anomaly windows" in out
    for name in ("standard", "reward_low_FP", "reward_low_FN"):
        score, threshold = profile_line(out, name)
        assert score > 90.0  # the spike is found early in its window, nothing else fires
        assert 0.0 < threshold <= 1.0
    assert "each profile at its own best threshold" in out
    assert re.search(r"speed: [\d,]+ points/s", out)


def test_out_writes_scores_that_any_scorer_can_check(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    data, labels = corpus
    code, out, _ = bench("--data", data, "--labels", labels, "--out", tmp_path / "scores")
    assert code == 0
    printed, threshold = profile_line(out, "standard")
    scored = []
    for name in ("group/spiky.csv", "calm.csv"):
        with (tmp_path / "scores" / name).open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["timestamp", "value", "anomaly_score"]
        assert [row[0] for row in rows[1:]] == [stamp(row) for row in range(ROWS)]
        assert [float(row[1]) for row in rows[1:]] == nab.read_stream(data / name, name).values
        scores = [float(row[2]) for row in rows[1:]]
        assert all(0.0 <= score <= 1.0 for score in scores)
        windows = [nab.Window(SPIKE - 10, SPIKE + 10)] if name.startswith("group") else []
        scored.append((scores, windows))
    assert scored[0][0][SPIKE] >= 0.9
    rescored = nab.at_threshold(scored, threshold, [nab.STANDARD])["standard"]
    assert rescored.tally.normalised(nab.STANDARD) == pytest.approx(printed, abs=0.05)


def test_a_given_threshold_scores_every_profile_there(corpus: tuple[Path, Path]) -> None:
    data, labels = corpus
    code, out, _ = bench(
        "--data", data, "--labels", labels, "--threshold", "2", "--profile", "standard"
    )
    assert code == 0
    assert profile_line(out, "standard") == (0.0, 2.0)  # nothing reaches 2: the null score
    assert "reward_low_FP" not in out
    assert "own best threshold" not in out


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no data folder", "not a directory"),
        ("labels not JSON", "not valid JSON"),
        ("missing labels file", "cannot read"),
        ("a file without labels", "the labels have no entry for calm.csv"),
        ("an unknown profile", "unknown profile 'strict'"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_failing_exit(
    corpus: tuple[Path, Path], tmp_path: Path, breakage: str, message: str
) -> None:
    data, labels = corpus
    extra: list[str] = []
    if breakage == "no data folder":
        data = tmp_path / "nowhere"
    elif breakage == "labels not JSON":
        labels.write_text("{oops")
    elif breakage == "missing labels file":
        labels = tmp_path / "none.json"
    elif breakage == "a file without labels":
        labels.write_text(json.dumps({"group/spiky.csv": []}))
    else:
        extra = ["--profile", "strict"]
    code, out, err = bench("--data", data, "--labels", labels, *extra)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("phoenix: ")
    assert message in lines[0]


# -- files as real exports are: odd rows are warnings, unusable files are skipped ---------------


def edit_rows(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *change(rows)]) + "\n")


def warnings_about(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"phoenix: warning: {path}")]


def test_odd_rows_are_warnings_and_every_file_is_scored(corpus: tuple[Path, Path]) -> None:
    data, labels = corpus
    calm = data / "calm.csv"

    def spoil(rows: list[str]) -> list[str]:
        rows[20], rows[21] = rows[21], rows[20]  # a late sample: line 23 goes back in time
        for row, cell in ((40, ""), (41, "NaN"), (42, "abc")):
            rows[row] = rows[row].split(",")[0] + "," + cell
        return rows

    edit_rows(calm, spoil)
    code, out, err = bench("--data", data, "--labels", labels)
    assert code == 0, err
    assert "2 files, 800 points, 1 anomaly windows" in out
    assert profile_line(out, "standard")[0] > 90.0
    assert warnings_about(err, calm) == [
        f"phoenix: warning: {calm}:23: timestamp {stamp(20)} is earlier than the row before "
        f"({stamp(21)}); scored in file order",
        f"phoenix: warning: {calm}:42: an empty value is not a finite number; "
        "scored as a gap (score 0)",
        f"phoenix: warning: {calm}:43: value 'NaN' is not a finite number; "
        "scored as a gap (score 0)",
        f"phoenix: warning: {calm}:44: value 'abc' is not a finite number; "
        "scored as a gap (score 0)",
        f"phoenix: warning: {calm}: 1 row out of time order, 3 values not a number; the file is scored",
    ]


def test_a_file_written_backwards_is_scored_in_file_order(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    data, labels = corpus
    spiky = data / "group" / "spiky.csv"
    edit_rows(spiky, lambda rows: rows[::-1])
    code, out, err = bench("--data", data, "--labels", labels, "--out", tmp_path / "scores")
    assert code == 0, err
    # The labelled window is still the rows whose times it spans, found in file order, and
    # the spike (now at row ROWS - 1 - SPIKE) is still found early in it.
    assert profile_line(out, "standard")[0] > 90.0
    with (tmp_path / "scores" / "group" / "spiky.csv").open(newline="") as handle:
        written = [row[0] for row in list(csv.reader(handle))[1:]]
    assert written == [stamp(row) for row in reversed(range(ROWS))]
    # 399 rows each earlier than the one before: three shown, the rest counted.
    lines = warnings_about(err, spiky)
    assert len(lines) == 4, err
    assert lines[0] == (
        f"phoenix: warning: {spiky}:3: timestamp {stamp(ROWS - 2)} is earlier than the row "
        f"before ({stamp(ROWS - 1)}); scored in file order"
    )
    assert lines[-1] == (
        f"phoenix: warning: {spiky}: {ROWS - 1} rows out of time order (396 not shown); "
        "the file is scored"
    )


def test_an_unusable_file_is_skipped_and_the_rest_scored(corpus: tuple[Path, Path]) -> None:
    data, labels = corpus
    headless = data / "headless.csv"
    headless.write_text(f"{stamp(0)},1\n")
    empty = data / "group" / "empty.csv"
    empty.write_text("timestamp,value\n")
    code, out, err = bench("--data", data, "--labels", labels)
    assert code == 0, err
    assert "2 files, 800 points" in out
    assert err.splitlines() == [
        f"phoenix: error: {empty}: no row with a timestamp and a number in it; file skipped",
        f"phoenix: error: {headless}:1: expected the header 'timestamp,value', "
        f"got ['{stamp(0)}', '1']; file skipped",
    ]


def test_with_nothing_usable_the_run_fails_naming_each_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("time,value\n")
    (data / "b.csv").write_text("timestamp,value\nnot a time,1\n")
    labels = tmp_path / "labels.json"
    labels.write_text("{}")
    code, out, err = bench("--data", data, "--labels", labels)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0].startswith(f"phoenix: error: {data / 'a.csv'}:1: expected the header")
    assert lines[1] == (
        f"phoenix: error: {data / 'b.csv'}: no row with a timestamp and a number in it; "
        "file skipped"
    )
    assert lines[2] == f"phoenix: {data}: no file could be scored (each was skipped: see above)"
