"""Memory and CPU of each service's instances, sampled every second into the tracker, for
services whose platform can sample them (the ``ResourceSampling`` capability).

A service is reported by its largest instance: a leak or a saturated core in one replica
matters even when the others are fine.
"""

from __future__ import annotations

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.platforms.base import RESOURCE_SAMPLING, PlatformRegistry, ResourceSampling

INTERVAL = 1.0


class ResourceSampler:
    def __init__(
        self,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        clock: Clock,
        interval: float = INTERVAL,
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._tracker = tracker
        self._clock = clock
        self._interval = interval
        self._sampling: tuple[int, list[tuple[str, ResourceSampling]]] | None = None

    async def run(self) -> None:
        while True:
            self.sample_once()
            await self._clock.sleep(self._interval)

    def sample_once(self) -> None:
        for name, sampling in self._sampled():
            usage = sampling.sample_usage(name)
            if usage:
                self._tracker.record_resources(
                    name,
                    memory=max(u.memory for u in usage),
                    cpu=max(u.cpu for u in usage),
                    replicas=len(usage),
                )

    def _sampled(self) -> list[tuple[str, ResourceSampling]]:
        """The services whose platform samples them, worked out again only when the catalog
        changes (a fleet of 10,000 external services has none: nothing to walk each second)."""
        generation = self._catalog.generation
        if self._sampling is None or self._sampling[0] != generation:
            found = []
            for spec in self._catalog:
                sampling = RESOURCE_SAMPLING.of(self._platforms.for_service(spec))
                if sampling is not None:
                    found.append((spec.name, sampling))
            self._sampling = (generation, found)
        return self._sampling[1]
