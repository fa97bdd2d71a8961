"""The statuses of the services other replicas watch, as those replicas recorded them.

Read whole once, then only what was recorded since: the health events a replica already
read are never read again, so following 10,000 services costs nothing while none changes.
Ids are handed out when a row is written and become visible when its transaction commits,
so a row numbered below the newest one read may still appear: the ids skipped are asked for
again for a while (a writer's transaction lasts no longer than the database's statement or
idle timeouts; a write rolled back leaves its id unused for good).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.store import health_events
from phoenix_server.store.database import Store

SKIPPED_IDS_ASKED_FOR = 60.0
"""Seconds an id skipped over is asked for again (beyond the longest write transaction)."""
MOST_SKIPPED_IDS = 10_000
"""At most this many skipped ids are kept (the oldest are given up first)."""


class RecordedStatuses:
    def __init__(self, store: Store, *, monotonic: Callable[[], float]) -> None:
        self._store = store
        self._monotonic = monotonic
        self._latest: dict[str, tuple[int, datetime, ServiceStatus, str]] = {}
        self._after: int | None = None
        """The newest id read (None: nothing read yet)."""
        self._skipped: dict[int, float] = {}
        """Ids below ``_after`` not seen yet → when first skipped (monotonic)."""

    def get(self, service: str) -> tuple[datetime, ServiceStatus, str] | None:
        """``service``'s latest recorded status: (since when, status, why)."""
        found = self._latest.get(service)
        return None if found is None else found[1:]

    async def refresh(self) -> None:
        """Read what was recorded since the last call (raises UnavailableError)."""
        changes = await self._store.read(
            health_events.status_changes, after=self._after, missing=list(self._skipped)
        )
        now = self._monotonic()
        seen = set()
        for id_, service, at, status, reason in changes:
            seen.add(id_)
            self._skipped.pop(id_, None)
            known = self._latest.get(service)
            if known is None or known[0] < id_:
                self._latest[service] = (id_, at, status, reason)
        newest = max(seen, default=self._after)
        if self._after is not None and newest is not None:
            for id_ in range(self._after + 1, newest):
                if id_ not in seen:
                    self._skipped[id_] = now
        self._after = newest if newest is not None else self._after
        self._forget_skipped(now)

    def _forget_skipped(self, now: float) -> None:
        for id_, since in list(self._skipped.items()):
            if now - since > SKIPPED_IDS_ASKED_FOR:
                del self._skipped[id_]
        if len(self._skipped) > MOST_SKIPPED_IDS:
            for id_ in sorted(self._skipped)[: len(self._skipped) - MOST_SKIPPED_IDS]:
                del self._skipped[id_]
