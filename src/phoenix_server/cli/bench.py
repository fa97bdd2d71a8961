"""``phoenix bench detect``: the anomaly detector measured on labelled data (NAB's format
and scoring rule), so its figures can be checked on any corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phoenix_server.cli.errors import fail
from phoenix_server.detection import anomaly, nab


def detect(
    data: Annotated[
        Path,
        typer.Option(help="Folder of timestamp,value CSV files (NAB format), searched deeply."),
    ],
    labels: Annotated[
        Path, typer.Option(help="JSON: each file's relative path -> its [start, end] windows.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Also write each file's scores here (timestamp,value,anomaly_score)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Score every profile at this threshold instead of the best one."),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(help="A NAB profile to report (repeatable); default all three."),
    ] = None,
) -> None:
    """Run the anomaly detector over every file as a stream and score it by NAB's rule."""
    profiles = _profiles(profile or [])
    try:
        corpus = nab.load_corpus(data)
        spans = nab.read_labels(labels)
    except nab.DataError as exc:
        raise fail([str(exc)]) from None
    _report(corpus)
    streams = corpus.streams
    if not streams:
        raise fail([f"{data}: no file could be scored (each was skipped: see above)"])
    try:
        windows = nab.labelled_windows(streams, spans)
    except nab.DataError as exc:
        raise fail([str(exc)]) from None
    run = nab.run(streams, anomaly.make_detector)
    if out is not None:
        _write_scores(out, streams, run.scores)
    scored = [(run.scores[stream.name], windows[stream.name]) for stream in streams]
    if threshold is None:
        results = nab.best_thresholds(scored, profiles)
    else:
        results = nab.at_threshold(scored, threshold, profiles)
    total = sum(len(found) for found in windows.values())
    typer.echo(
        f"{data}: {len(streams)} files, {run.points:,} points, {total} anomaly windows; "
        f"detector {anomaly.DEFAULT_SETTINGS}"
    )
    typer.echo(f"{'profile':<14} {'score':>6} {'threshold':>9}  found  false alarms")
    for name, result in results.items():
        tally = result.tally
        typer.echo(
            f"{name:<14} {tally.normalised(result.profile):6.1f} {result.threshold:9.4f}  "
            f"{tally.windows - tally.missed:>2}/{tally.windows:<2}  {tally.alarms}"
        )
    if threshold is None:
        typer.echo(
            "each profile at its own best threshold over these files (the middle of the range "
            "that scores the same); score other files at it with --threshold T --profile NAME"
        )
    typer.echo(f"speed: {run.points_per_second:,.0f} points/s (the detector alone, one thread)")


SHOWN = 3
"""Warnings printed in full per kind and file; the rest are counted, so that one bad file
cannot flood the terminal."""

_COUNTED = {
    nab.Problem.OUT_OF_ORDER: ("row out of time order", "rows out of time order"),
    nab.Problem.DUPLICATE: ("duplicate timestamp", "duplicate timestamps"),
    nab.Problem.GAP: ("gap", "gaps"),
    nab.Problem.CONSTANT: ("constant stretch", "constant stretches"),
    nab.Problem.NOT_A_NUMBER: ("value not a number", "values not a number"),
    nab.Problem.UNREADABLE: ("unreadable row skipped", "unreadable rows skipped"),
}


def _report(corpus: nab.Corpus) -> None:
    """On stderr: each skipped file, then per file the first few warnings of each kind and a
    count of every kind."""
    for error in corpus.skipped:
        typer.echo(f"phoenix: error: {error}; file skipped", err=True)
    for stream in corpus.streams:
        if stream.warnings:
            for line in _warning_lines(stream.warnings):
                typer.echo(f"phoenix: warning: {line}", err=True)


def _warning_lines(warnings: tuple[nab.RowWarning, ...]) -> list[str]:
    by_problem: dict[nab.Problem, list[nab.RowWarning]] = {}
    for warning in warnings:
        by_problem.setdefault(warning.problem, []).append(warning)
    lines = [str(warning) for found in by_problem.values() for warning in found[:SHOWN]]
    counts = ", ".join(
        f"{len(found)} {_COUNTED[problem][len(found) > 1]}" for problem, found in by_problem.items()
    )
    hidden = sum(max(len(found) - SHOWN, 0) for found in by_problem.values())
    more = f" ({hidden} not shown)" if hidden else ""
    lines.append(f"{warnings[0].file}: {counts}{more}; the file is scored")
    return lines


def _profiles(names: list[str]) -> list[nab.Profile]:
    known = {p.name: p for p in nab.PROFILES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise fail([f"unknown profile {unknown[0]!r}: choose from {', '.join(known)}"])
    return [known[name] for name in dict.fromkeys(names)] or list(nab.PROFILES)


def _write_scores(folder: Path, streams: list[nab.Stream], scores: dict[str, list[float]]) -> None:
    for stream in streams:
        path = folder / stream.name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                handle.write("timestamp,value,anomaly_score\n")
                for stamp, value, score in zip(
                    stream.timestamps, stream.values, scores[stream.name], strict=True
                ):
                    handle.write(f"{stamp},{value!r},{score!r}\n")
        except OSError as exc:
            raise fail([f"{path}: cannot write: {exc.strerror or exc}"]) from None
