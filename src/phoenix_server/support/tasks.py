"""The one door for long-running asyncio tasks.

Every never-ending loop (probe loops, the recovery dispatcher, process watchers)
starts through :func:`spawn`, so that a loop that dies is logged with its name
and traceback instead of vanishing silently, and so that shutdown can cancel a
whole group with a timeout (:class:`SupervisedTasks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("phoenix.tasks")


class SupervisedTasks:
    """A named set of background tasks that logs deaths and cancels them all on close."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self.died: list[str] = []
        """Names of tasks that ended with an exception (surfaced by /health)."""

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task called ``owner:name`` whose unexpected death is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.died.append(task.get_name())
            log.error("task %s died: %r", task.get_name(), exc, exc_info=exc)

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
