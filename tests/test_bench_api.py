"""bench/api kept runnable: its result parsing, and a run of a fraction of a second at low
concurrency against a real ``phoenix serve`` (so that the bench cannot rot unnoticed)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench import api
from bench.api import load

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("GET trivial", "GET /health", "GET /api/health/services", "POST /api/recovery/trigger")


def test_a_load_generators_result_line_becomes_a_sample() -> None:
    output = (
        "Running 1s test\n"
        'BENCH-RESULT {"requests":300,"micros":2000000,"p50":1500,"p99":42000,"errors":2,'
        '"statuses":{"202":3,"409":297}}\n'
    )
    result = load.parse_result(output)
    sample = load.sample_from(result, 2.0)
    assert sample.rps == 150
    assert (sample.p50_ms, sample.p99_ms) == (1.5, 42.0)
    assert sample.statuses == {202: 3, 409: 297}
    assert sample.errors == 2


def test_a_missing_result_line_is_an_error_that_shows_the_output() -> None:
    with pytest.raises(RuntimeError, match="printed no result:\nwrk: connection refused"):
        load.parse_result("wrk: connection refused")


@pytest.mark.parametrize("text", ["", "1,,2", "0,100", "ten"])
def test_bad_connection_counts_are_refused_by_name(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"1,100,2000|1 or more"):
        api.connection_counts(text)


def test_the_percentile_of_a_sorted_list() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert load.percentile(ordered, 50) == 51.0
    assert load.percentile(ordered, 99) == 100.0
    assert load.percentile([], 99) == 0.0


def rows(output: str) -> dict[tuple[str, int], str]:
    """The final table's rows: (endpoint, connections) → the rest of the line."""
    table = output.split("endpoint ", 1)[1]
    found = {}
    for label in ENDPOINTS:
        for match in re.finditer(rf"^{re.escape(label)}\s+(\d+)\s+(.*)$", table, re.M):
            found[label, int(match.group(1))] = match.group(2)
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("client", ["python", "wrk"])
def test_a_short_run_measures_every_endpoint_and_the_liveness_probe(client: str) -> None:
    if client == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian's wrk package)")
    seconds = "1" if client == "wrk" else "0.3"  # wrk counts whole seconds
    argv = [
        sys.executable, "-m", "bench.api", "--client", client, "--seconds", seconds,
        "--warmup", "0", "--connections", "1,2", "--probe-idle", "0.2",
        "--settle-timeout", "20",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    found = rows(output)
    assert set(found) == {(label, c) for label in ENDPOINTS for c in (1, 2)}, output
    for (label, _), rest in found.items():
        rps = float(rest.split()[0].replace(",", ""))
        statuses = {int(code) for code in re.findall(r"(\d{3}): [\d,]+", rest)}
        assert rps > 0, f"{label}: {rest}"
        if label.startswith("POST"):
            # force: false on a service whose recovery is already running: 409, else 202.
            assert statuses and statuses <= {202, 409}, f"{label}: {rest}"
        else:
            assert statuses == {200}, f"{label}: {rest}"
    assert re.search(r"trivial endpoint: (Phoenix itself|a STAND-IN)", output), output
    assert re.search(r"target /health p99 < 50 ms at 2 connections: (PASS|MISS)", output)
    assert re.search(r"GET /api/health/services >= 0.5x .*: (PASS|MISS)", output)
    liveness = output.split("\nliveness probe:", 1)[1]
    for when in ("idle", "hammer GET /api/health/services", "hammer POST /api/recovery/trigger"):
        assert re.search(rf"{re.escape(when)}: p50 +[\d.]+ ms .* n=[1-9]", liveness), output
