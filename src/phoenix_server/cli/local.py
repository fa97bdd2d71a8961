"""The commands that act on this machine: ``serve`` runs the server, ``check-config``
validates a service file without starting anything, ``version`` says which Phoenix this is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phoenix_server import __version__
from phoenix_server.cli.errors import fail
from phoenix_server.config.servicefile import load_service_file
from phoenix_server.config.settings import Settings, load_settings
from phoenix_server.domain.errors import ConfigError, UnavailableError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Service file (YAML); default $PHOENIX_CONFIG."),
]


def settings_from(**overrides: object) -> Settings:
    """The settings (environment and ``.env``) with the options given; one line per problem."""
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise fail(exc.lines()) from None


def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address; default $PHOENIX_HOST or 127.0.0.1.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="API port; default $PORT or 3051.")] = None,
) -> None:
    """Start the Phoenix server: API, monitoring and automatic recovery."""
    from phoenix_server.app import serve as run_server

    settings = settings_from(PHOENIX_CONFIG=config, PHOENIX_HOST=host, PORT=port)
    try:
        run_server(settings)
    except ConfigError as exc:
        raise fail(exc.lines()) from None
    except UnavailableError as exc:
        raise fail(
            [exc.message, "check DATABASE_URL and that the database is running"], 1
        ) from None


def check_config(config: ConfigOption = None) -> None:
    """Validate a service file and list its services, without starting anything."""
    settings = settings_from(PHOENIX_CONFIG=config)
    if settings.config_file is None:
        raise fail(["no service file given: pass --config FILE or set PHOENIX_CONFIG"])
    try:
        catalog = load_service_file(
            settings.config_file, default_interval=settings.health_check_interval
        )
    except ConfigError as exc:
        raise fail(exc.lines()) from None
    typer.echo(f"{settings.config_file}: {len(catalog)} service(s) OK")
    for spec in catalog:
        port = f" port {spec.port}" if spec.port else ""
        typer.echo(f"  {spec.name}: {spec.platform.value}{port}")


def version() -> None:
    """Print Phoenix's version."""
    typer.echo(__version__)
