"""Identify one OS process by pid *and* start time, so a recycled pid is never mistaken for it.

The start time is the kernel's own: clock ticks since boot, field 22 of ``/proc/<pid>/stat``.
It does not move when the wall clock is stepped (psutil's ``create_time`` adds the boot
time, which it re-reads from the wall clock, so an NTP step or a VM resume would make every
running process look like a stranger).
"""

from __future__ import annotations

from pathlib import Path

import psutil


def start_time(pid: int) -> float | None:
    """When ``pid`` started, in clock ticks since boot; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return float(fields[19])


def is_running(pid: int, started: float | None) -> bool:
    """Whether this very process still lives: same pid, same start, not a zombie."""
    if started is not None and start_time(pid) != started:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
