"""Identify one OS process by pid *and* start time, so a recycled pid is never mistaken for it."""

from __future__ import annotations

import psutil


def start_time(pid: int) -> float | None:
    """The OS's record of when ``pid`` started, or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_running(pid: int, started: float | None) -> bool:
    """Whether this very process still lives: same pid, same start time, not a zombie."""
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 0.01:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
