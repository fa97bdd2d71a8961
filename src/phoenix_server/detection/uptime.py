"""Uptime over a rolling horizon (24 h) from a timeline of status changes.

Time in an unknown state (not yet probed, or Phoenix not running) counts neither
for nor against a service: uptime is the share of *observed* time it was serving.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

DAY = timedelta(hours=24)


class UptimeTimeline:
    """Status changes of one service; memory is bounded by the horizon."""

    def __init__(self, horizon: timedelta = DAY) -> None:
        self._horizon = horizon
        self._events: deque[tuple[datetime, bool | None]] = deque()

    def record(self, at: datetime, serving: bool | None) -> None:
        """From ``at`` on, the service is serving (True), not (False), or unobserved (None)."""
        if self._events and self._events[-1][1] is serving:
            return
        if self._events and at < self._events[-1][0]:
            at = self._events[-1][0]
        self._events.append((at, serving))
        self._prune(at)

    def _prune(self, now: datetime) -> None:
        # Keep the newest event older than the horizon: it says what state the window opens in.
        cutoff = now - self._horizon
        while len(self._events) >= 2 and self._events[1][0] <= cutoff:
            self._events.popleft()

    def percent(self, now: datetime) -> float | None:
        """Percentage of observed time in the horizon spent serving; None if nothing observed."""
        self._prune(now)
        window_start = now - self._horizon
        up = known = 0.0
        events = list(self._events)
        for index, (at, serving) in enumerate(events):
            end = events[index + 1][0] if index + 1 < len(events) else now
            start = max(at, window_start)
            if end <= start or serving is None:
                continue
            span = (end - start).total_seconds()
            known += span
            if serving:
                up += span
        if known <= 0:
            if events and events[-1][1] is not None:
                return 100.0 if events[-1][1] else 0.0
            return None
        return round(100.0 * up / known, 3)
