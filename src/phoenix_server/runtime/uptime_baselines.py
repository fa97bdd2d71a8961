"""When Phoenix began managing each service and its uptime over that first day, kept in the
store so that the metrics summary can say how uptime changed since (across restarts)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import UnavailableError
from phoenix_server.domain.health import UptimeBaseline
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.store import baselines
from phoenix_server.store.database import Store

log = logging.getLogger("phoenix")

BASELINE_EVERY = 60.0
"""Seconds between looks at the services' first-day uptime."""


class UptimeBaselines:
    def __init__(
        self,
        catalog: ServiceCatalog,
        tracker: HealthTracker,
        store: Store,
        clock: Clock,
        *,
        watches: Callable[[str], bool] = lambda _service: True,
    ) -> None:
        self._catalog = catalog
        self._tracker = tracker
        self._store = store
        self._clock = clock
        self._watches = watches
        """With several replicas, only the owner of a service knows its uptime: the others
        neither advance nor save its baseline."""
        self._baselines: dict[str, UptimeBaseline] = {}
        self._unsaved = False

    def get(self, service: str) -> UptimeBaseline | None:
        return self._baselines.get(service)

    async def load(self) -> None:
        self._baselines = await self._store.read(baselines.load_baselines)

    async def taken_over(self, services: Collection[str]) -> None:
        """This replica watches ``services`` from now: their baselines as their previous
        owners last saved them (raises UnavailableError)."""
        saved = await self._store.read(baselines.load_baselines)
        for name in services:
            if name in saved:
                self._baselines[name] = saved[name]

    async def track(self) -> None:
        """Advance the baselines once a minute (the runtime also does it at stop)."""
        while True:
            self._unsaved = await self.look(save_all=self._unsaved)
            await self._clock.sleep(BASELINE_EVERY)

    async def look(self, *, save_all: bool = False) -> bool:
        """Advance every service's baseline; True if they could not be saved (retry)."""
        now = self._clock.now()
        changed = []
        for spec in list(self._catalog):
            if not self._watches(spec.name):
                continue
            known = self._baselines.get(spec.name)
            uptime = self._tracker.view(spec.name).uptime
            new = (
                UptimeBaseline(spec.name, managed_since=now, first_day_uptime=uptime)
                if known is None
                else known.advanced(now, uptime)
            )
            if new != known:
                self._baselines[spec.name] = new
                changed.append(new)
        try:
            everything = [b for b in self._baselines.values() if self._watches(b.service)]
            await self._store.write(baselines.save_baselines, everything if save_all else changed)
        except UnavailableError as exc:
            log.warning("uptime baselines not saved yet (%s); retrying", exc.message)
            return True
        return False

    async def save_at_stop(self) -> None:
        """Phoenix is stopping: the baselines as they are now (if they were ever loaded)."""
        if self._baselines:
            await self.look(save_all=self._unsaved)
