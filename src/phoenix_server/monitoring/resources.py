"""Memory and CPU of each local service's processes, sampled every second into the tracker.

An instance is its process and everything it started (a worker pool, a shell's child):
its memory is the resident set of that whole tree and its CPU their sum, in percent of one
core. A service is reported by its largest instance: a leak or a saturated core in one
replica matters even when the others are fine.
"""

from __future__ import annotations

import contextlib

import psutil

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.services import InstanceState, PlatformKind, ServiceCatalog
from phoenix_server.platforms.base import PlatformRegistry

INTERVAL = 1.0


class ProcessSampler:
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
        self._processes: dict[int, psutil.Process] = {}
        """Kept between samples: CPU percent is measured since the previous call."""

    async def run(self) -> None:
        while True:
            self.sample_once()
            await self._clock.sleep(self._interval)

    def sample_once(self) -> None:
        seen: set[int] = set()
        for spec in self._catalog:
            if spec.platform is not PlatformKind.LOCAL:
                continue
            platform = self._platforms.for_service(spec)
            usage = []
            for instance in platform.instances(spec.name):
                if instance.pid is None or instance.state is not InstanceState.RUNNING:
                    continue
                measured = self._measure(instance.pid, seen)
                if measured is not None:
                    usage.append(measured)
            if usage:
                self._tracker.record_resources(
                    spec.name,
                    memory=max(memory for memory, _ in usage),
                    cpu=max(cpu for _, cpu in usage),
                    replicas=len(usage),
                )
        for pid in set(self._processes) - seen:
            del self._processes[pid]  # ended: never let the cache grow

    def _measure(self, pid: int, seen: set[int]) -> tuple[float, float] | None:
        """(resident bytes, CPU percent) of ``pid`` and its descendants; None if gone."""
        try:
            root = self._process(pid, seen)
            tree = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        memory = cpu = 0.0
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                cached = self._process(process.pid, seen)
                with cached.oneshot():
                    memory += cached.memory_info().rss
                    cpu += cached.cpu_percent(None)
        return memory, cpu

    def _process(self, pid: int, seen: set[int]) -> psutil.Process:
        seen.add(pid)
        process = self._processes.get(pid)
        if process is None or not process.is_running():
            process = self._processes[pid] = psutil.Process(pid)
            process.cpu_percent(None)  # the first call only starts the measurement
        return process
