"""What client commands print: tables and lines for people, the server's JSON for scripts.

With a terminal on stdout tables are rich (colour, a header rule); without one (a pipe, a
file) they are plain columns a script can cut and grep: one row per line, headers in
capitals, ``-`` for nothing. ``--json`` prints the server's answer as it came.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

STYLES = {
    **dict.fromkeys(("healthy", "completed", "success", "active", "closed"), "green"),
    **dict.fromkeys(("running", "in_progress", "half_open", "run"), "cyan"),
    **dict.fromkeys(("degraded", "partial", "cancelled", "depends"), "yellow"),
    **dict.fromkeys(("unhealthy", "failed", "failure", "timed_out", "interrupted", "open"), "red"),
    **dict.fromkeys(("pending", "skipped", "unknown", "disabled", "skip"), "dim"),
}
"""The colour of a status, outcome or verdict in a rich table."""


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False
    """Numbers line up on the right."""
    status: bool = False
    """The cells are statuses: coloured by :data:`STYLES` in a rich table."""


class Output:
    """Where a command's results go: rich or plain by what stdout is, or JSON."""

    def __init__(self, *, as_json: bool = False, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or Console(highlight=False)

    @property
    def rich(self) -> bool:
        return self.console.is_terminal

    def json(self, body: object) -> None:
        sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str, style: str = "") -> None:
        if self.rich:
            self.console.print(Text(text, style=style))
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        empty: str = "nothing to show",
    ) -> None:
        if not rows:
            self.line(empty, style="dim")
            return
        if self.rich:
            self.console.print(rich_table(columns, rows, title=title))
            return
        if title:
            self.line(title)
        for line in plain_table(columns, rows):
            self.line(line)


def rich_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[RenderableType]],
    *,
    title: str | None = None,
) -> Table:
    """Cells may be text or any rich renderable (a spinner, say)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left")
    for row in rows:
        table.add_row(
            *(
                Text(cell, style=STYLES.get(cell, "") if column.status else "")
                if isinstance(cell, str)
                else cell
                for column, cell in zip(columns, row, strict=True)
            )
        )
    return table


def plain_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[str]:
    headers = [column.header.upper() for column in columns]
    cells = [[" ".join(cell.split()) or "-" for cell in row] for row in rows]
    widths = [max(len(text) for text in texts) for texts in zip(headers, *cells, strict=True)]
    lines = []
    for row in [headers, *cells]:
        parts = [
            text.rjust(width) if column.right else text.ljust(width)
            for column, text, width in zip(columns, row, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def seconds(value: object) -> str:
    """``0.31s``, ``12.4s``, ``3m 05s``, ``2h 10m``; ``-`` for nothing."""
    if not isinstance(value, int | float):
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60):02d}s"
    return f"{int(value // 3600)}h {int(value % 3600 // 60):02d}m"


def percent(value: object, *, fraction: bool = False) -> str:
    """A percentage (``99.95%``); ``fraction`` when the value is 0-1 (error rates)."""
    if not isinstance(value, int | float):
        return "-"
    shown = value * 100 if fraction else value
    return f"{shown:.2f}%" if shown < 100 else "100%"


def number(value: object, unit: str = "", digits: int = 1) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}{unit}"


def when(stamp: object) -> str:
    """``2025-11-25T18:00:00.000Z`` as ``2025-11-25 18:00:00`` (UTC, as the API writes it)."""
    if not isinstance(stamp, str) or not stamp:
        return "-"
    return stamp.replace("T", " ")[:19]


def text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
