"""The ``phoenix`` command. ``phoenix serve`` runs the server; ``phoenix check-config``
validates a service file without starting anything; ``phoenix bench detect`` measures the
anomaly detector on labelled data. Errors are one line each, saying what to fix, and a
non-zero exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phoenix_server import __version__
from phoenix_server.config.servicefile import load_service_file
from phoenix_server.config.settings import Settings, load_settings
from phoenix_server.detection import anomaly, nab
from phoenix_server.domain.errors import ConfigError, UnavailableError

app = typer.Typer(
    help="Phoenix: watches your services, recovers them when they fail, and learns what works.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Service file (YAML); default $PHOENIX_CONFIG."),
]


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        typer.echo(f"phoenix: {line}", err=True)
    return typer.Exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise _fail(exc.lines()) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address; default $PHOENIX_HOST or 127.0.0.1.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="API port; default $PORT or 3051.")] = None,
) -> None:
    """Start the Phoenix server: API, monitoring and automatic recovery."""
    from phoenix_server.app import serve as run_server

    settings = _settings(PHOENIX_CONFIG=config, PHOENIX_HOST=host, PORT=port)
    try:
        run_server(settings)
    except ConfigError as exc:
        raise _fail(exc.lines()) from None
    except UnavailableError as exc:
        raise _fail(
            [exc.message, "check DATABASE_URL and that the database is running"], 1
        ) from None


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate a service file and list its services, without starting anything."""
    settings = _settings(PHOENIX_CONFIG=config)
    if settings.config_file is None:
        raise _fail(["no service file given: pass --config FILE or set PHOENIX_CONFIG"])
    try:
        catalog = load_service_file(
            settings.config_file, default_interval=settings.health_check_interval
        )
    except ConfigError as exc:
        raise _fail(exc.lines()) from None
    typer.echo(f"{settings.config_file}: {len(catalog)} service(s) OK")
    for spec in catalog:
        port = f" port {spec.port}" if spec.port else ""
        typer.echo(f"  {spec.name}: {spec.platform.value}{port}")


bench = typer.Typer(
    help="Measure Phoenix's parts on data you give.", no_args_is_help=True, add_completion=False
)
app.add_typer(bench, name="bench")


@bench.command("detect")
def bench_detect(
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
        streams = nab.read_corpus(data)
        windows = nab.labelled_windows(streams, nab.read_labels(labels))
    except nab.DataError as exc:
        raise _fail([str(exc)]) from None
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


def _profiles(names: list[str]) -> list[nab.Profile]:
    known = {p.name: p for p in nab.PROFILES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise _fail([f"unknown profile {unknown[0]!r}: choose from {', '.join(known)}"])
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
            raise _fail([f"{path}: cannot write: {exc.strerror or exc}"]) from None


@app.command()
def version() -> None:
    """Print Phoenix's version."""
    typer.echo(__version__)


def main() -> None:
    app(prog_name="phoenix")


if __name__ == "__main__":  # pragma: no cover
    main()
