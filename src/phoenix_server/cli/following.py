"""Following something that runs on the server (a recovery, a deploy) until it ends.

The server is polled (every 0.2 s) and each answer becomes a :class:`Snapshot`. On a
terminal the steps are one live table (a spinner on the running step); elsewhere each
change of a step is printed as one line, so a log or a CI job shows the same story. With
``--json`` nothing is printed until the end. A connection that drops for a moment (or a
503) is asked again; one lost for :data:`PATIENCE` seconds ends the command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from phoenix_server.cli.errors import CliError
from phoenix_server.cli.output import STYLES, Column, Output, rich_table, seconds

INTERVAL = 0.2
"""Seconds between polls."""
PATIENCE = 10.0
"""Seconds of failed polls (no connection, 503) before giving up."""
INTERRUPTED = 130
"""The exit status of a follow stopped with Ctrl-C (what shells use for SIGINT)."""


@dataclass(frozen=True)
class Snapshot:
    """What is being followed, as one poll saw it."""

    title: str
    """``rec-…: restart of azora-auth``: what it is."""
    status: str
    steps: list[dict[str, Any]]
    done: bool
    body: dict[str, Any]
    """The server's answer, printed by ``--json``."""


@dataclass
class _Seen:
    """Per step index: the (status, detail) last printed and when it was first seen running."""

    printed: dict[int, tuple[str, str]] = field(default_factory=dict)
    running_since: dict[int, float] = field(default_factory=dict)


def follow(poll: Callable[[], Snapshot], out: Output, *, resume: str) -> Snapshot:
    """Poll until the snapshot is done; ``resume`` says where to look at it again (said
    when the operator stops following with Ctrl-C)."""
    try:
        if out.as_json:
            return _until_done(poll, lambda _: None)
        if out.rich:
            return _live(poll, out)
        return _lines(poll, out)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped following; it goes on in Phoenix ({resume})", INTERRUPTED
        ) from None


def _until_done(poll: Callable[[], Snapshot], show: Callable[[Snapshot], None]) -> Snapshot:
    last_ok = time.monotonic()
    while True:
        try:
            snapshot = poll()
        except CliError as exc:
            if not exc.transient or time.monotonic() - last_ok > PATIENCE:
                raise
            time.sleep(INTERVAL)
            continue
        last_ok = time.monotonic()
        show(snapshot)
        if snapshot.done:
            return snapshot
        time.sleep(INTERVAL)


def _lines(poll: Callable[[], Snapshot], out: Output) -> Snapshot:
    seen = _Seen()
    titled: list[str] = []

    def show(snapshot: Snapshot) -> None:
        if not titled:
            titled.append(snapshot.title)
            out.line(snapshot.title)
        for index, step in enumerate(snapshot.steps):
            state = (str(step.get("status")), str(step.get("detail") or ""))
            if state[0] == "pending" or seen.printed.get(index) == state:
                continue
            seen.printed[index] = state
            out.line(step_line(index, step))

    return _until_done(poll, show)


def step_line(index: int, step: dict[str, Any]) -> str:
    """``  [2] Start instance: completed in 1.20s: started pid 4242 on port 40001``."""
    status = str(step.get("status"))
    line = f"  [{index + 1}] {step.get('name')}: {status}"
    if status != "running" and step.get("duration") is not None:
        line += f" in {seconds(step.get('duration'))}"
    if step.get("detail"):
        line += f": {step['detail']}"
    return line


def _live(poll: Callable[[], Snapshot], out: Output) -> Snapshot:
    seen = _Seen()
    with Live(console=out.console, refresh_per_second=10, transient=False) as live:

        def show(snapshot: Snapshot) -> None:
            live.update(steps_view(snapshot, seen), refresh=True)

        return _until_done(poll, show)


STEP_COLUMNS = (
    Column("#", right=True),
    Column("Step"),
    Column("Status", status=True),
    Column("Time", right=True),
    Column("Detail"),
)


def steps_view(snapshot: Snapshot, seen: _Seen | None = None) -> RenderableType:
    """The title and a table of the steps; the running step spins and counts its time."""
    seen = seen or _Seen()
    rows: list[list[RenderableType]] = []
    for index, step in enumerate(snapshot.steps):
        status = str(step.get("status"))
        elapsed = seconds(step.get("duration"))
        state: RenderableType = status
        if status == "running":
            started = seen.running_since.setdefault(index, time.monotonic())
            state = Spinner("dots", text=Text("running", style=STYLES["running"]))
            elapsed = seconds(time.monotonic() - started)
        rows.append(
            [str(index + 1), str(step.get("name")), state, elapsed, step.get("detail") or ""]
        )
    title = Text(snapshot.title + "  ")
    title.append(snapshot.status, style=STYLES.get(snapshot.status, "bold"))
    if not rows:
        return Group(title, Text("no steps yet", style="dim"))
    return Group(title, rich_table(STEP_COLUMNS, rows))
