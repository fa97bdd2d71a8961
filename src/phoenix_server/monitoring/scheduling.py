"""Probe scheduling: one loop per target, at a fixed rate with jitter, feeding the tracker.

Each target is probed every ``interval`` ±10 %, measured from the start of the previous
probe so a slow probe does not stretch the cadence. A new target's first probe comes at a
random moment within a second, so status is known quickly; jitter keeps thousands of
targets from drifting into lockstep.

Overload must not look like an outage. At most :data:`MAX_IN_FLIGHT` probes are in flight;
the others wait their turn, and a probe's timeout only starts once it is admitted, so a
Phoenix with more targets than its CPU can probe on time probes them late (and says so:
:attr:`ProbeScheduler.lateness`) instead of timing them all out and declaring the fleet
down.
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
"""A new target is probed within a second, whatever its interval: status is known fast."""
MAX_IN_FLIGHT = 256
"""Probes running at once; more would only make each one slower and time out."""
LATENESS_SMOOTHING = 0.05


class ProbeScheduler:
    def __init__(
        self,
        prober: Prober,
        tracker: HealthTracker,
        clock: Clock,
        rng: random.Random | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._prober = prober
        self._tracker = tracker
        self._clock = clock
        self._rng = rng or random.Random()
        self._admission = asyncio.Semaphore(max_in_flight)
        self._tasks = SupervisedTasks("probe")
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self.probes_run = 0
        self.lateness = 0.0
        """Smoothed seconds by which probes start after their scheduled time."""

    def add(self, target: ProbeTarget) -> None:
        """Start probing ``target`` (replacing any loop for the same target); once closed,
        nothing starts."""
        if self._closed:
            return
        self.remove(target.target)
        self._loops[target.target] = self._tasks.keep_running(
            lambda: self._run(target), name=target.target
        )

    def remove(self, target: str) -> None:
        task = self._loops.pop(target, None)
        if task is not None:
            task.cancel()

    @property
    def tasks(self) -> SupervisedTasks:
        """Its background tasks (their deaths are reported by /health)."""
        return self._tasks

    def targets(self) -> list[str]:
        return list(self._loops)

    async def _run(self, target: ProbeTarget) -> None:
        clock, rng, tracker = self._clock, self._rng, self._tracker
        due = clock.monotonic() + rng.uniform(0, min(target.interval, FIRST_PROBE_WITHIN))
        while True:
            await clock.sleep(max(0.0, due - clock.monotonic()))
            async with self._admission:
                began = clock.monotonic()
                result = await self._prober.probe(target)
            self.probes_run += 1
            self.lateness += LATENESS_SMOOTHING * (began - due - self.lateness)
            tracker.observe(
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
            step = target.interval * rng.uniform(1 - JITTER, 1 + JITTER)
            # On time: keep the cadence. A whole interval late: next probe one interval
            # after this one, never back to back.
            due = due + step if due + step > began else began + step

    async def close(self) -> None:
        self._closed = True
        self._loops.clear()
        await self._tasks.close()
