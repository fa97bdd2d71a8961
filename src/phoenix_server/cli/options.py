"""What every client command shares: where Phoenix is (``--url``), ``--json``, and the
session that opens the door to Phoenix and picks the output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from phoenix_server.cli.client import DEFAULT_URL, Phoenix, target
from phoenix_server.cli.output import Output

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="PHOENIX_URL",
        help=f"Phoenix's URL; default $PHOENIX_URL, else {DEFAULT_URL}. "
        "The token is read from $PHOENIX_TOKEN.",
        show_default=False,
        show_envvar=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the server's JSON (for scripts) instead of tables.")
]
LimitOption = Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")]
ServiceFilter = Annotated[str | None, typer.Option("--service", help="Only this service.")]


@contextmanager
def session(url: str, as_json: bool) -> Iterator[tuple[Phoenix, Output]]:
    """The client for ``url`` (with ``$PHOENIX_TOKEN``) and the output for this command."""
    with Phoenix(target(url)) as phoenix:
        yield phoenix, Output(as_json=as_json)
