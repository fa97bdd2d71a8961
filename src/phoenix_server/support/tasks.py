"""The one door for long-running asyncio tasks.

Every task starts through :meth:`SupervisedTasks.spawn`, so that one that dies is logged
with its name and traceback instead of vanishing silently, and so that shutdown can cancel
a whole group with a timeout. Never-ending loops (probe loops, the recovery dispatcher,
samplers, watchers) start through :meth:`SupervisedTasks.keep_running`: a loop that dies
is started again after a backoff (1 s doubling to 60 s), because a loop that stays dead is
something Phoenix silently stopped doing. Each death is kept (name, when, why) for
``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("phoenix.tasks")

RESTART_FIRST = 1.0
RESTART_MAX = 60.0
"""Backoff between restarts of a loop that keeps dying (seconds, doubling)."""
HEALTHY_RUN = 60.0
"""A loop that ran this long before dying starts again from the first backoff step."""


@dataclass(frozen=True)
class TaskDeath:
    """A task that ended with an exception: what, when, why, and what happened next."""

    name: str
    at: datetime
    error: str
    restarts: int | None = None
    """For a loop kept running: how often it was restarted so far (None: not restarted)."""

    def describe(self) -> str:
        when = self.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"background task {self.name} died at {when}: {self.error}"
        if self.restarts is None:
            return f"{text}; see the log, and restart Phoenix"
        return f"{text}; restarted ({self.restarts} time(s) so far)"


class SupervisedTasks:
    """A named set of background tasks that logs deaths and cancels them all on close."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self.deaths: dict[str, TaskDeath] = {}
        """The last death of each task that ended with an exception (surfaced by /health)."""

    @property
    def died(self) -> list[str]:
        """Names of the tasks that died."""
        return list(self.deaths)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task called ``owner:name`` whose unexpected death is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def keep_running(
        self, make: Callable[[], Coroutine[Any, Any, Any]], *, name: str
    ) -> asyncio.Task[Any]:
        """Run the loop ``make()``; if it dies, log it, wait (backoff) and start a fresh
        one. It ends when it returns (nothing to do) or is cancelled."""
        return self.spawn(self._restarting(make, name), name=name)

    async def _restarting(self, make: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        restarts = 0
        delay = RESTART_FIRST
        while True:
            began = time.monotonic()
            try:
                await make()
                return  # it has nothing (more) to do, e.g. no service to scrape
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("loop %s:%s died: %r", self._owner, name, exc, exc_info=exc)
                error = repr(exc)
            if time.monotonic() - began >= HEALTHY_RUN:
                delay = RESTART_FIRST
            restarts += 1
            self.deaths[f"{self._owner}:{name}"] = TaskDeath(
                f"{self._owner}:{name}", datetime.now(UTC), error, restarts
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            name = task.get_name()
            self.deaths[name] = TaskDeath(name, datetime.now(UTC), repr(exc))
            log.error("task %s died: %r", name, exc, exc_info=exc)

    def cancel_named(self, name: str) -> int:
        """Cancel the tasks started as ``name`` (another replica took over what they do)."""
        full = f"{self._owner}:{name}"
        found = [task for task in self._tasks if task.get_name() == full and not task.done()]
        for task in found:
            task.cancel()
        return len(found)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the current tasks to finish on their own, e.g. pending writes."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel every task and wait (bounded) for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.error("task %s did not stop within %.1fs of cancellation", task.get_name(), timeout)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
