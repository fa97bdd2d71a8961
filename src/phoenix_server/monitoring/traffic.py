"""Reading each routed service's traffic from its router, once a second, into the tracker:
that is where ``/api/health/services`` gets throughput, error rate and latency."""

from __future__ import annotations

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.platforms.base import ROUTING, PlatformRegistry

INTERVAL = 1.0


class TrafficWatcher:
    def __init__(
        self,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        clock: Clock,
        interval: float = INTERVAL,
    ) -> None:
        self._routed = [spec for spec in catalog if spec.routed]
        self._platforms = platforms
        self._tracker = tracker
        self._clock = clock
        self._interval = interval

    async def run(self) -> None:
        while True:
            for spec in self._routed:
                routing = ROUTING.of(self._platforms.for_service(spec))
                counters = await routing.traffic(spec) if routing is not None else None
                if counters is not None:
                    self._tracker.record_traffic(spec.name, counters)
            await self._clock.sleep(self._interval)
