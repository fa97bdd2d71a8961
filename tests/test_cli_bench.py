"""``phoenix bench detect`` end to end, on a tiny NAB-format corpus written to tmp_path."""

from __future__ import annotations

import csv
import functools
import json
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phoenix_server.cli import app
from phoenix_server.cli import bench as bench_command
from phoenix_server.detection import anomaly, crossval, nab, signals

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


def profile_rows(output: str, name: str) -> list[list[str]]:
    """The profile's row of each configuration's table, in the order printed, split."""
    rows = [line.split() for line in output.splitlines() if line.startswith(f"{name} ")]
    assert rows, output
    return rows


def in_sample(output: str, name: str) -> float:
    """The first configuration's in-sample score (its best threshold over all the files)."""
    return float(profile_rows(output, name)[0][2])


OTHER_ENGINE = anomaly.DetectorSettings(memory=1024)
"""An engine configuration other than the defaults (the engine runs the defaults today)."""
ENGINE = f"as the engine runs it: {OTHER_ENGINE}"
DEFAULTS = f"not as the engine runs it (the detector's defaults): {anomaly.DEFAULT_SETTINGS}"


def test_scores_the_corpus_and_prints_thresholds_and_speed(
    corpus: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, labels = corpus
    monkeypatch.setattr(signals, "ANOMALY_SETTINGS", OTHER_ENGINE)  # so both are reported
    code, out, err = bench("--data", data, "--labels", labels)
    assert (code, err) == (0, "")
    assert "2 files, 800 points, 1 anomaly windows" in out
    lines = out.splitlines()
    assert lines.index(ENGINE) < lines.index(DEFAULTS)
    for name in ("standard", "reward_low_FP", "reward_low_FN"):
        for row in profile_rows(out, name):
            held, in_sample, gap, threshold = map(float, row[1:5])
            assert held > 90.0  # the spike is found early in its window, nothing else fires
            assert gap == pytest.approx(in_sample - held, abs=0.11)
            assert 0.0 < threshold <= 1.0
            assert row[6:] == ["1/1", "0"]
    assert not re.search("^overfitting", out, re.MULTILINE)
    assert "held out: leave one file out (2 folds)" in out
    assert "in-sample: each profile's best threshold over all these files" in out
    assert len(re.findall(r"^speed: [\d,]+ points/s", out, re.MULTILINE)) == 2


def test_out_writes_scores_that_any_scorer_can_check(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    data, labels = corpus
    code, out, _ = bench("--data", data, "--labels", labels, "--out", tmp_path / "scores")
    assert code == 0
    row = profile_rows(out, "standard")[0]  # as the engine runs it
    held, in_sample, threshold = float(row[1]), float(row[2]), float(row[4])
    scored = {}
    for name in ("group/spiky.csv", "calm.csv"):
        with (tmp_path / "scores" / name).open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["timestamp", "value", "anomaly_score"]
        assert [row[0] for row in rows[1:]] == [stamp(row) for row in range(ROWS)]
        assert [float(row[1]) for row in rows[1:]] == nab.read_stream(data / name, name).values
        scores = [float(row[2]) for row in rows[1:]]
        assert all(0.0 <= score <= 1.0 for score in scores)
        windows = [nab.Window(SPIKE - 10, SPIKE + 10)] if name.startswith("group") else []
        scored[name] = (scores, windows)
    assert scored["group/spiky.csv"][0][SPIKE] >= 0.9
    rescored = nab.at_threshold(scored.values(), threshold, [nab.STANDARD])["standard"]
    assert rescored.tally.normalised(nab.STANDARD) == pytest.approx(in_sample, abs=0.05)
    parts = {name: nab.steps(scores, windows) for name, (scores, windows) in scored.items()}
    again = crossval.cross_validate(parts, crossval.by_file, [nab.STANDARD])
    assert again.score(nab.STANDARD) == pytest.approx(held, abs=0.05)


def test_a_given_threshold_scores_every_profile_there(corpus: tuple[Path, Path]) -> None:
    data, labels = corpus
    code, out, _ = bench(
        "--data", data, "--labels", labels, "--threshold", "2", "--profile", "standard"
    )
    assert code == 0
    # Nothing reaches 2: the null score.
    assert [row[1:] for row in profile_rows(out, "standard")] == [["0.0", "2.0000", "0/1", "0"]]
    assert "reward_low_FP" not in out
    assert "held out" not in out


def twins(tmp_path: Path, names: tuple[str, str] = ("a.csv", "b.csv")) -> tuple[Path, Path]:
    """Two files with the same values (noise and one spike); only the first labels the spike."""
    rng = random.Random(2)
    values = [rng.gauss(10.0, 1.0) for _ in range(ROWS)]
    values[SPIKE] = 60.0
    data = tmp_path / "twins"
    for name in names:
        write_stream(data / name, values)
    labels = tmp_path / "twins.json"
    window = [stamp(SPIKE - 10), stamp(SPIKE + 10)]
    labels.write_text(json.dumps({names[0]: [window], names[1]: []}))
    return data, labels


def test_a_file_is_scored_at_a_threshold_chosen_without_its_labels(tmp_path: Path) -> None:
    data, labels = twins(tmp_path)
    code, out, err = bench("--data", data, "--labels", labels, "--profile", "standard")
    assert code == 0, err
    held, in_sample, gap = map(float, profile_rows(out, "standard")[0][1:4])
    # In-sample, a's labels make the spike worth a detection, at the price of a false alarm
    # in b. Held out, a is scored at the threshold chosen on b alone (stay silent: its window
    # is missed), and b at the one chosen on a (its spike is a false alarm): below null.
    assert in_sample > 80.0
    assert held < 0.0
    assert gap == pytest.approx(in_sample - held, abs=0.11)
    assert profile_rows(out, "standard")[0][6:] == ["0/1", "1"]
    assert "overfitting: in-sample more than 4 points above held out (standard)" in out


def test_leave_one_folder_out(tmp_path: Path) -> None:
    data, labels = twins(tmp_path, ("one/a.csv", "two/b.csv"))
    code, out, err = bench("--data", data, "--labels", labels, "--leave-out", "folder")
    assert code == 0, err
    assert "held out: leave one folder out (2 folds): each folder's files scored" in out
    assert float(profile_rows(out, "standard")[0][1]) < 0.0
    data, labels = twins(tmp_path / "same", ("one/a.csv", "one/b.csv"))
    code, out, err = bench("--data", data, "--labels", labels, "--leave-out", "folder")
    assert (code, out) == (2, "")
    assert err == (
        f"phoenix: {data}: leave one folder out needs files in at least two folders; "
        "use --leave-out file\n"
    )
    code, out, err = bench("--data", data, "--labels", labels)
    assert code == 0, err  # two files in one folder: each can still be held out


def test_one_file_cannot_be_cross_validated_but_can_be_scored_at_a_threshold(
    corpus: tuple[Path, Path],
) -> None:
    data, labels = corpus
    (data / "calm.csv").unlink()
    code, out, err = bench("--data", data, "--labels", labels)
    assert (code, out) == (2, "")
    assert "leave one file out needs at least two files" in err
    assert "--threshold T" in err
    code, out, err = bench("--data", data, "--labels", labels, "--threshold", "0.9")
    assert code == 0, err
    assert profile_rows(out, "standard")[0][3:] == ["1/1", "0"]


def test_the_detector_runs_once_per_file_and_configuration(
    corpus: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[anomaly.DetectorSettings] = []
    real = anomaly.make_detector

    def counted(settings: anomaly.DetectorSettings = anomaly.DEFAULT_SETTINGS) -> anomaly.Scorer:
        made.append(settings)
        return real(settings)

    monkeypatch.setattr(anomaly, "make_detector", counted)
    monkeypatch.setattr(signals, "ANOMALY_SETTINGS", OTHER_ENGINE)
    data, labels = corpus
    for extra in ([], ["--leave-out", "folder"]):
        made.clear()
        code, _, err = bench("--data", data, "--labels", labels, *extra)
        assert code == 0, err
        # The folds re-threshold each file's scores; they never run the detector again.
        assert made == [OTHER_ENGINE] * 2 + [anomaly.DEFAULT_SETTINGS] * 2


def test_the_engine_configuration_is_the_one_the_engine_runs() -> None:
    # A series longer than the engine's memory, fed as the engine feeds it, scores as the
    # configuration the benchmark labels "as the engine runs it" does, and not as another
    # memory would.
    rng = random.Random(3)
    values = [rng.gauss(10.0, 1.0) + (8.0 if 2500 <= i < 2600 else 0.0) for i in range(3000)]
    service = signals.ServiceSignals()
    engine: list[float] = []
    for at, value in enumerate(values):
        service.record(float(at), {"metric": value})
        engine.append(service.anomaly["metric"][1])
    (label, settings), *_ = bench_command.configurations()
    assert label == "as the engine runs it"
    benchmarked = nab.run([stream_of(values)], functools.partial(anomaly.make_detector, settings))
    assert benchmarked.scores["s.csv"] == engine
    shorter = functools.partial(anomaly.make_detector, OTHER_ENGINE)
    assert nab.run([stream_of(values)], shorter).scores["s.csv"] != engine


def stream_of(values: list[float]) -> nab.Stream:
    times = [START + timedelta(minutes=5 * row) for row in range(len(values))]
    return nab.Stream("s.csv", [stamp(row) for row in range(len(values))], times, values)


def test_one_configuration_is_reported_once_and_a_changed_engine_is_what_is_written(
    corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, labels = corpus
    monkeypatch.setattr(signals, "ANOMALY_SETTINGS", anomaly.DEFAULT_SETTINGS)
    code, out, _ = bench("--data", data, "--labels", labels)
    assert code == 0
    assert f"as the engine runs it: {anomaly.DEFAULT_SETTINGS}" in out.splitlines()
    assert "not as the engine runs it" not in out
    assert len(profile_rows(out, "standard")) == 1
    small = anomaly.DetectorSettings(memory=32, window=4, quiet_after=10)
    monkeypatch.setattr(signals, "ANOMALY_SETTINGS", small)
    code, out, _ = bench("--data", data, "--labels", labels, "--out", tmp_path / "scores")
    assert code == 0
    assert f"as the engine runs it: {small}" in out.splitlines()
    assert DEFAULTS in out.splitlines()
    with (tmp_path / "scores" / "calm.csv").open(newline="") as handle:
        written = [float(row[2]) for row in list(csv.reader(handle))[1:]]
    calm = nab.read_stream(data / "calm.csv", "calm.csv")
    as_small = nab.run([calm], functools.partial(anomaly.make_detector, small)).scores
    as_defaults = nab.run([calm], anomaly.make_detector).scores
    assert written == as_small["calm.csv"] != as_defaults["calm.csv"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no data folder", "not a directory"),
        ("labels not JSON", "not valid JSON"),
        ("missing labels file", "cannot read"),
        ("a file without labels", "the labels have no entry for calm.csv"),
        ("an unknown profile", "unknown profile 'strict'"),
        ("an unknown leave-out", "unknown --leave-out 'disk': choose from file, folder"),
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
    elif breakage == "an unknown profile":
        extra = ["--profile", "strict"]
    else:
        extra = ["--leave-out", "disk"]
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
    assert in_sample(out, "standard") > 90.0
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
    assert in_sample(out, "standard") > 90.0
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
