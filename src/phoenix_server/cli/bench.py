"""``phoenix bench detect``: the anomaly detector measured on labelled data (NAB's format
and scoring rule), so its figures can be checked on any corpus.

The figure that stands for the detector's quality is cross-validated (each file scored at a
threshold chosen without it, see :mod:`~phoenix_server.detection.crossval`); the in-sample one
beside it only shows how much choosing on the same files flatters it. Both are given for the
detector as the engine runs it and, where they differ, for the detector's defaults.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from phoenix_server.cli.errors import fail
from phoenix_server.detection import anomaly, crossval, nab, signals

LEAVE_OUT: dict[str, crossval.Grouping] = {"file": crossval.by_file, "folder": crossval.by_folder}
_HELD = {"file": "each file", "folder": "each folder's files"}


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
        typer.Option(
            help="Also write each file's scores here (timestamp,value,anomaly_score), "
            "from the detector as the engine runs it."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Score every profile at this threshold instead of the best one."),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(help="A NAB profile to report (repeatable); default all three."),
    ] = None,
    leave_out: Annotated[
        str,
        typer.Option(help="What cross-validation holds out in turn: 'file' or 'folder'."),
    ] = "file",
) -> None:
    """Run the anomaly detector over every file as a stream and score it by NAB's rule:
    cross-validated (the detector's quality) and in-sample, for the detector as the engine
    runs it and for its defaults where they differ."""
    profiles = _profiles(profile or [])
    group = _grouping(leave_out)
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
    groups = len({group(stream.name) for stream in streams})
    if threshold is None and groups < 2:
        raise fail([_too_few(leave_out, data)])
    total = sum(len(found) for found in windows.values())
    points = sum(len(stream.values) for stream in streams)
    typer.echo(f"{data}: {len(streams)} files, {points:,} points, {total} anomaly windows")
    for index, (label, settings) in enumerate(configurations()):
        run = nab.run(streams, functools.partial(anomaly.make_detector, settings))
        if out is not None and index == 0:
            _write_scores(out, streams, run.scores)
        typer.echo(f"{label}: {settings}")
        if threshold is None:
            parts = {s.name: nab.steps(run.scores[s.name], windows[s.name]) for s in streams}
            _print_cross_validated(crossval.cross_validate(parts, group, profiles), profiles)
        else:
            scored = [(run.scores[stream.name], windows[stream.name]) for stream in streams]
            _print_at_threshold(nab.at_threshold(scored, threshold, profiles))
        typer.echo(f"speed: {run.points_per_second:,.0f} points/s (the detector alone, one thread)")
    if threshold is None:
        typer.echo(
            f"held out: leave one {leave_out} out ({groups} folds): {_HELD[leave_out]} scored "
            "at the threshold each profile scores best at on the other files, the files "
            "pooled as NAB pools them; this is the detector's quality, and found and false "
            "alarms are counted held out"
        )
        typer.echo(
            "in-sample: each profile's best threshold over all these files, scored on them: "
            "the threshold to apply to other files (--threshold T --profile NAME), and a sign "
            f"of overfitting when more than {crossval.OVERFIT_GAP:.0f} points above held out"
        )


def configurations() -> list[tuple[str, anomaly.DetectorSettings]]:
    """The detector as the engine runs it on every series, then its defaults if different."""
    engine = signals.ANOMALY_SETTINGS
    found = [("as the engine runs it", engine)]
    if anomaly.DEFAULT_SETTINGS != engine:
        found.append(
            ("not as the engine runs it (the detector's defaults)", anomaly.DEFAULT_SETTINGS)
        )
    return found


def _print_cross_validated(
    result: crossval.CrossValidation, profiles: Sequence[nab.Profile]
) -> None:
    typer.echo(
        f"{'profile':<14} {'held out':>8} {'in-sample':>9} {'gap':>5} {'threshold':>9}  "
        f"{'folds chose':<13}  found  false alarms"
    )
    for profile in profiles:
        held = result.held_out(profile)
        chosen = result.thresholds(profile)
        typer.echo(
            f"{profile.name:<14} {result.score(profile):8.1f} "
            f"{result.in_sample_score(profile):9.1f} {result.gap(profile):+5.1f} "
            f"{result.in_sample[profile.name].threshold:9.4f}  "
            f"{min(chosen):.4f}-{max(chosen):.4f}  "
            f"{held.windows - held.missed:>2}/{held.windows:<2}  {held.alarms}"
        )
    overfit = [profile.name for profile in profiles if result.overfit(profile)]
    if overfit:
        typer.echo(
            f"overfitting: in-sample more than {crossval.OVERFIT_GAP:.0f} points above held out "
            f"({', '.join(overfit)}): the threshold or the design fits these files"
        )


def _print_at_threshold(results: dict[str, nab.Best]) -> None:
    typer.echo(f"{'profile':<14} {'score':>6} {'threshold':>9}  found  false alarms")
    for name, result in results.items():
        tally = result.tally
        typer.echo(
            f"{name:<14} {tally.normalised(result.profile):6.1f} {result.threshold:9.4f}  "
            f"{tally.windows - tally.missed:>2}/{tally.windows:<2}  {tally.alarms}"
        )


def _grouping(name: str) -> crossval.Grouping:
    if name not in LEAVE_OUT:
        raise fail([f"unknown --leave-out {name!r}: choose from {', '.join(LEAVE_OUT)}"])
    return LEAVE_OUT[name]


def _too_few(leave_out: str, data: Path) -> str:
    if leave_out == "folder":
        return (
            f"{data}: leave one folder out needs files in at least two folders; "
            "use --leave-out file"
        )
    return (
        f"{data}: leave one file out needs at least two files; add files, or score this one "
        "at a threshold chosen elsewhere with --threshold T"
    )


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
