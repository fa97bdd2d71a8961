"""Scaling back in: one replica fewer once load has stayed low for a stabilisation window.

Scaling out is a recovery (high load); scaling in is housekeeping. For each routed service
running more replicas than its ``min``, the watcher samples the router's throughput per
replica every second. When it has stayed under ``replicas.scale_in_below`` requests per
second per replica for ``replicas.scale_in_after`` seconds — and the service was healthy
and untouched by any recovery or deploy all that time — the newest replica is drained
and stopped. The window then starts again, so the service steps down one replica per
window, never below ``min``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import ConflictError, PhoenixError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import InstanceState, ServiceCatalog, ServiceSpec
from phoenix_server.platforms.base import LIFECYCLE, PlatformRegistry
from phoenix_server.recovery.claims import Activity
from phoenix_server.recovery.orchestrating import Orchestrator

log = logging.getLogger("phoenix.recovery")

INTERVAL = 1.0


@dataclass(frozen=True)
class LoadSample:
    replicas: int
    """Instances serving (running, in rotation)."""
    throughput: float | None
    """Requests per second through the router (None: not measured yet)."""
    healthy: bool
    busy: bool
    """A recovery or deploy of the service is running."""


def is_low(spec: ServiceSpec, sample: LoadSample) -> bool:
    """Whether this sample counts towards scaling in: more replicas than ``min``, all well,
    nothing else acting on the service, and measured load under the threshold."""
    if not spec.routed or sample.replicas <= spec.replicas.min:
        return False
    if not sample.healthy or sample.busy or sample.throughput is None:
        return False
    return sample.throughput / sample.replicas < spec.replicas.scale_in_below


class ScaleInWatcher:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        orchestrator: Orchestrator,
        clock: Clock,
        interval: float = INTERVAL,
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._tracker = tracker
        self._orchestrator = orchestrator
        self._clock = clock
        self._interval = interval
        self._low_since: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            for spec in list(self._catalog):
                if spec.routed and spec.replicas.max > spec.replicas.min:
                    await self._look_at(spec)

    def _sample(self, spec: ServiceSpec) -> LoadSample:
        platform = self._platforms.for_service(spec)
        serving = [i for i in platform.instances(spec.name) if i.state is InstanceState.RUNNING]
        return LoadSample(
            replicas=len(serving),
            throughput=self._tracker.view(spec.name).traffic.throughput,
            healthy=self._tracker.status(spec.name) is ServiceStatus.HEALTHY,
            busy=self._orchestrator.busy(spec.name),
        )

    async def _look_at(self, spec: ServiceSpec) -> None:
        sample = self._sample(spec)
        now = self._clock.monotonic()
        if not is_low(spec, sample):
            self._low_since.pop(spec.name, None)
            return
        since = self._low_since.setdefault(spec.name, now)
        if now - since < spec.replicas.scale_in_after:
            return
        self._low_since.pop(spec.name, None)  # the next step down needs a window of its own
        await self._remove_one(spec, sample)

    async def _remove_one(self, spec: ServiceSpec, sample: LoadSample) -> None:
        platform = self._platforms.for_service(spec)
        running = [i for i in platform.instances(spec.name) if i.state is InstanceState.RUNNING]
        if len(running) <= spec.replicas.min:
            return
        newest = max(running, key=lambda i: i.started_at)
        try:
            claim = self._orchestrator.claims.claim(spec.name, Activity.SCALE_IN, "scaled in")
        except ConflictError:
            return  # a recovery or deploy started meanwhile: not now
        try:
            per_replica = (sample.throughput or 0.0) / max(sample.replicas, 1)
            log.info(
                "%s: scaling in from %d to %d replicas: %.3g req/s per replica stayed under "
                "%g for %gs; draining %s",
                spec.name,
                len(running),
                len(running) - 1,
                per_replica,
                spec.replicas.scale_in_below,
                spec.replicas.scale_in_after,
                newest.id,
            )
            lifecycle = LIFECYCLE.require(platform, spec)
            await lifecycle.stop(self._catalog.get(spec.name), [newest.id])
        except PhoenixError as exc:
            log.error("%s: could not scale in: %s", spec.name, exc.message)
        finally:
            self._orchestrator.claims.release(claim)
