"""``phoenix bench detect`` end to end, on a tiny NAB-format corpus written to tmp_path."""

from __future__ import annotations

import csv
import json
import random
import re
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
        ("a row that is not a number", "calm.csv:3: expected 'YYYY-MM-DD HH:MM:SS,<number>'"),
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
    elif breakage == "a row that is not a number":
        text = (data / "calm.csv").read_text().splitlines()
        text[2] = text[2].split(",")[0] + ",n/a"
        (data / "calm.csv").write_text("\n".join(text) + "\n")
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
