"""A port-less background worker that Phoenix supervises next to the web service.

It has no HTTP endpoint, so Phoenix can only judge it by its process and its output: a heartbeat
line on stdout every interval shows it is alive, and --crash-after / --leak-mb-per-s reproduce the
failures of jobs that cannot be probed. Signal handling, timers and the leak are shared with the
web service so both behave the same way under a supervisor.

Run from the repository root: ``python -m examples.services.worker --name mailer --interval 1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from examples.services.web import (
    MemoryLeak,
    OneLineErrorParser,
    ShutdownRequested,
    exit_now,
    install_shutdown_handlers,
    leak_rate,
    schedule,
    seconds,
)

PROG = "python -m examples.services.worker"
MIN_INTERVAL_S = 0.01


def interval(text: str) -> float:
    """argparse type for the heartbeat interval; too small an interval would flood the log."""
    value = seconds(text)
    if value < MIN_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S:g}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line."""
    parser = OneLineErrorParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else "")
    add = parser.add_argument
    add("--name", default="worker", help="worker name printed in every line")
    add("--interval", type=interval, default=1.0, help="seconds between heartbeats (default 1)")
    add("--crash-after", type=seconds, help="exit with code 1 after this many seconds")
    add("--leak-mb-per-s", type=leak_rate, default=0.0, help="leak memory at this rate")
    return parser


def heartbeat_forever(name: str, every: float, leak: MemoryLeak) -> NoReturn:
    """Print a heartbeat each interval, on a fixed schedule so lines do not drift."""
    started = time.monotonic()
    beat = 0
    while True:
        beat += 1
        time.sleep(max(0.0, started + beat * every - time.monotonic()))
        uptime = time.monotonic() - started
        print(
            f"worker {name} heartbeat {beat} uptime {uptime:.3f} leaked_mb {leak.leaked_mb}",
            flush=True,
        )


def run(options: argparse.Namespace) -> NoReturn:
    """Start the configured faults, announce the worker, and beat until stopped."""
    leak = MemoryLeak(options.leak_mb_per_s)
    if options.crash_after is not None:
        schedule(options.crash_after, lambda: exit_now(1, "crash-after"))
    print(f"worker {options.name} started pid {os.getpid()}", flush=True)
    heartbeat_forever(options.name, options.interval, leak)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 after SIGTERM/SIGINT)."""
    install_shutdown_handlers()
    try:
        run(build_parser().parse_args(argv))
    except ShutdownRequested:
        return 0


if __name__ == "__main__":
    sys.exit(main())
