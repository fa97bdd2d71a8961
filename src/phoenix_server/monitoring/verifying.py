"""Health verification after a recovery step: probe fresh instances fast until they pass.

The regular schedule probes every few seconds; a recovery cannot wait that long to know a
restarted service answers. The verifier polls each new instance every 5 ms at first,
growing by 15 % each time up to the probe interval (at most 0.5 s): a refused connection
costs a fraction of a millisecond, and every poll saved is downtime added. It stops when
the instance passes
``success_threshold`` times in a row — then reports the pass to the tracker, so the
service's status turns healthy at the same moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.health import Observation, ObservationKind, Verification
from phoenix_server.domain.services import Instance, PlatformKind, ServiceSpec
from phoenix_server.monitoring.probing import Prober, target_for

FIRST_POLL = 0.005
GROWTH = 1.15
MAX_POLL = 0.5


class ProbeVerifier:
    def __init__(self, prober: Prober, tracker: HealthTracker, clock: Clock, python: str) -> None:
        self._prober = prober
        self._tracker = tracker
        self._clock = clock
        self._python = python

    async def verify(
        self, service: ServiceSpec, instances: Sequence[Instance], *, timeout: float
    ) -> Verification:
        """Wait until every instance passes its check, or ``timeout`` seconds pass. An
        external service has no instances: its own check is what passes or not."""
        targets: Sequence[Instance | None] = instances
        if not instances:
            if service.platform is not PlatformKind.EXTERNAL:
                return Verification(False, "no instances to verify")
            targets = [None]
        last_details: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    *(self._until_healthy(service, i, last_details) for i in targets)
                )
        except TimeoutError:
            failing = "; ".join(f"{k}: {v}" for k, v in last_details.items()) or "no answer"
            return Verification(
                False, f"not healthy within {timeout:g}s ({failing})", timed_out=True
            )
        passed = "; ".join(f"{k}: {v}" for k, v in last_details.items())
        return Verification(True, f"healthy ({passed})")

    async def _until_healthy(
        self, service: ServiceSpec, instance: Instance | None, last_details: dict[str, str]
    ) -> None:
        target = target_for(service, instance, python=self._python)
        name = target.target
        needed = service.health.success_threshold
        passes = 0
        delay = FIRST_POLL
        ceiling = min(service.health.interval, MAX_POLL)
        while True:
            result = await self._prober.probe(target)
            last_details[name] = result.detail
            passes = passes + 1 if result.ok else 0
            if passes >= needed:
                self._tracker.observe(
                    Observation(
                        service=service.name,
                        target=name,
                        kind=ObservationKind.PROBE,
                        at=self._clock.now(),
                        ok=True,
                        detail=result.detail,
                        latency=result.latency,
                    )
                )
                return
            await self._clock.sleep(delay)
            delay = min(delay * GROWTH, ceiling)
