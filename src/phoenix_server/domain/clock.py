"""Time, injected: engine code asks a :class:`Clock`, so tests of windows and backoff need no
real waiting. :class:`SystemClock` is the real one; :class:`ManualClock` is advanced by tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall time for records, monotonic time for intervals, and a sleep that honours both."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


async def sleep_unless(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Sleep on ``clock`` for ``seconds`` or until ``event`` is set; True if it was set."""
    if event.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    return event.is_set()


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when a test calls :meth:`advance`; sleepers wake in order."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2025, 11, 25, 18, 0, tzinfo=UTC)
        self._mono = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + max(0.0, seconds), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)
        due = [entry for entry in self._sleepers if entry[0] <= self._mono]
        self._sleepers = [entry for entry in self._sleepers if entry[0] > self._mono]
        for _, future in sorted(due, key=lambda entry: entry[0]):
            if not future.done():
                future.set_result(None)
