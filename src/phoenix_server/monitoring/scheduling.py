"""Probe scheduling: one loop per target, at a fixed rate with jitter, feeding the tracker.

The first probe of a new target comes within a second (not a whole interval) so a fresh
service is known quickly; afterwards each target is probed every ``interval`` ±10 %,
measured from the start of the previous probe so a slow probe does not stretch the
cadence. Jitter keeps thousands of targets from probing in lockstep.
"""

from __future__ import annotations

import asyncio
import random

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.health import Observation, ObservationKind
from phoenix_server.monitoring.probing import Prober, ProbeTarget
from phoenix_server.support.tasks import SupervisedTasks

JITTER = 0.1
FIRST_PROBE_WITHIN = 1.0


class ProbeScheduler:
    def __init__(
        self,
        prober: Prober,
        tracker: HealthTracker,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._prober = prober
        self._tracker = tracker
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks = SupervisedTasks("probe")
        self._loops: dict[str, asyncio.Task[None]] = {}
        self.probes_run = 0

    def add(self, target: ProbeTarget) -> None:
        """Start probing ``target`` (replacing any loop for the same target)."""
        self.remove(target.target)
        self._loops[target.target] = self._tasks.spawn(self._run(target), name=target.target)

    def remove(self, target: str) -> None:
        task = self._loops.pop(target, None)
        if task is not None:
            task.cancel()

    def targets(self) -> list[str]:
        return list(self._loops)

    async def _run(self, target: ProbeTarget) -> None:
        clock, rng = self._clock, self._rng
        await clock.sleep(rng.uniform(0, min(target.interval, FIRST_PROBE_WITHIN)))
        while True:
            began = clock.monotonic()
            result = await self._prober.probe(target)
            self.probes_run += 1
            self._tracker.observe(
                Observation(
                    service=target.service,
                    target=target.target,
                    kind=ObservationKind.PROBE,
                    at=clock.now(),
                    ok=result.ok,
                    detail=result.detail,
                    latency=result.latency,
                )
            )
            delay = target.interval * rng.uniform(1 - JITTER, 1 + JITTER)
            await clock.sleep(max(0.0, began + delay - clock.monotonic()))

    async def close(self) -> None:
        self._loops.clear()
        await self._tasks.close()
