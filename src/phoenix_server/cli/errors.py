"""How a ``phoenix`` command fails: one line ``phoenix: <reason>`` on stderr and an exit
status a script can tell apart.

Exit statuses: 0 done; 1 Phoenix refused or failed what was asked (an HTTP 4xx/5xx, an
invalid playbook, a followed recovery or deploy that did not complete); 2 a usage or
connection problem (a bad option, an unreadable file, Phoenix unreachable or not Phoenix).
"""

from __future__ import annotations

import typer

REFUSED = 1
"""Phoenix answered, and the answer is no (or what it ran did not complete)."""
USAGE = 2
"""The command could not be carried out as given: options, files, the connection."""


class CliError(Exception):
    """A failure the operator sees as one line and an exit status."""

    def __init__(self, message: str, exit_code: int = REFUSED, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the server sent
        self.exit_code = exit_code
        self.transient = transient
        """Asking again shortly may work (no connection, a timeout, a 503)."""


def fail(lines: list[str], code: int = USAGE) -> typer.Exit:
    """Print each line as ``phoenix: <line>`` on stderr; raise the returned Exit."""
    for line in lines:
        typer.echo(f"phoenix: {line}", err=True)
    return typer.Exit(code)
