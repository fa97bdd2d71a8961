"""The ``phoenix`` command.

Local commands act on this machine: ``serve`` runs the server, ``check-config`` validates a
service file, ``bench detect`` measures the anomaly detector, ``demo`` runs a game day
against example services, ``version``. Client commands
(``status``, ``services``, ``trigger``, ``recovery``, ``history``, ``incidents``,
``learning``, ``playbooks …``, ``deploy``, ``chaos``) talk to a running Phoenix over its REST API
(``--url``, ``$PHOENIX_URL``; ``$PHOENIX_TOKEN``), through :mod:`.client` only.

Every failure is one line ``phoenix: <reason>`` on stderr. Exit statuses: 0 done; 1
Phoenix refused or failed (see :mod:`.errors`); 2 a usage or connection problem.
"""

from __future__ import annotations

import sys

import typer

from phoenix_server.cli import bench, chaos, demo, deploys, fleet, local, playbooks, recoveries
from phoenix_server.cli.errors import USAGE, CliError

app = typer.Typer(
    help="Phoenix: watches your services, recovers them when they fail, and learns what works.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        local.version()
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print Phoenix's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Phoenix: watches your services, recovers them when they fail, and learns what works."""


app.command()(local.serve)
app.command("check-config")(local.check_config)

bench_app = typer.Typer(
    help="Measure Phoenix's parts on data you give.", no_args_is_help=True, add_completion=False
)
bench_app.command("detect")(bench.detect)
app.add_typer(bench_app, name="bench")

app.command()(local.version)

app.command(rich_help_panel="Client")(fleet.status)
app.command(rich_help_panel="Client")(fleet.services)
app.command(rich_help_panel="Client")(recoveries.trigger)
app.command(rich_help_panel="Client")(recoveries.recovery)
app.command(rich_help_panel="Client")(recoveries.history)
app.command(rich_help_panel="Client")(fleet.incidents)
app.command(rich_help_panel="Client")(fleet.learning)
app.add_typer(playbooks.app, name="playbooks", rich_help_panel="Client")
app.command(rich_help_panel="Client")(deploys.deploy)
app.command(rich_help_panel="Client")(chaos.chaos)
app.command()(demo.demo)


def main() -> None:
    """Run the command; a failure is one line on stderr and a non-zero exit status."""
    try:
        code = app(prog_name="phoenix", standalone_mode=False)
    except CliError as exc:
        typer.echo(f"phoenix: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # the command line was not understood
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(USAGE)  # the help is printed already
        context = getattr(exc, "ctx", None)
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        see = f" (see '{context.command_path} --help')" if context is not None else ""
        typer.echo(f"phoenix: {message}{see}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("phoenix: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
