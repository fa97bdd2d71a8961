"""The engine's event stream and stats, for the Docker platform: a container's death,
out-of-memory kill, HEALTHCHECK verdicts and Docker's own restarts (a crash loop) as they
happen, with a look at everything whenever the stream starts again; and memory and CPU
sampled once a second."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiodocker
import aiohttp

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import InstanceState
from phoenix_server.platforms.base import InstanceEventKind
from phoenix_server.platforms.docker.containers import ContainerRecord
from phoenix_server.platforms.docker.engine import usage_of
from phoenix_server.platforms.docker.state import ContainerState

log = logging.getLogger("phoenix.platform.docker")

CRASH_LOOP_RESTARTS = 3
"""Restarts by Docker's own policy within the service's ``reset_after`` that make a crash
loop (Phoenix does not fight it: it says so, and the service stays unhealthy meanwhile)."""
STATS_EVERY = 1.0
"""Seconds between two looks at the running containers' stats."""


class EngineWatching(ContainerState):
    async def _watch_events(self) -> None:
        """The engine's events about this installation's containers, for as long as the
        stream lasts (the supervised loop starts it again, after a look at everything)."""
        client = self._engine()
        events = client.events
        # aiodocker's subscribe is not annotated: a queue of event dicts, None at the end.
        subscriber: Any = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
        # Every container's events (adopted ones carry no label of Phoenix's), routed by name.
        filters = json.dumps({"type": ["container"]})
        streaming = asyncio.ensure_future(events.run(filters=filters))
        try:
            await self._resync()
            while True:
                event = await subscriber.get()
                if event is None:
                    raise PlatformError(f"the Docker engine at {self._address} ended its events")
                self._on_event(event)
        finally:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)

    async def _sample_stats(self) -> None:
        """Every second, one stats sample of each running container (in parallel)."""
        while True:
            running = [
                c for c in self._containers.values() if c.instance.state is InstanceState.RUNNING
            ]
            await asyncio.gather(*(self._sample_one(c) for c in running))
            await self._clock.sleep(STATS_EVERY)

    async def _sample_one(self, record: ContainerRecord) -> None:
        try:
            container = self._engine().containers.container(record.instance.id)
            samples = await container.stats(stream=False, timeout=10)
        except (aiodocker.exceptions.DockerError, aiohttp.ClientError, TimeoutError, OSError):
            return  # gone meanwhile, or the engine is busy: the next look tries again
        if samples:
            record.usage = usage_of(samples[-1])

    async def _resync(self) -> None:
        """What the engine says of each container Phoenix knows, now (events may have been
        missed while no stream was open)."""
        for record in list(self._containers.values()):
            if record.exited.done():
                continue
            try:
                shown = await self._engine().containers.container(record.instance.id).show()
            except aiodocker.exceptions.DockerError as exc:
                if exc.status != 404:
                    raise
                shown = {"State": {"Running": False, "ExitCode": None}}
            if not shown["State"].get("Running"):
                self._ended(record, shown["State"].get("ExitCode"))
            elif (health := (shown["State"].get("Health") or {}).get("Status")) in (
                "unhealthy",
                "healthy",
            ):
                self._health_said(record, health)  # either may have changed meanwhile

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action", ""))
        attributes = event.get("Actor", {}).get("Attributes", {}) or {}
        name = str(attributes.get("name", ""))
        record = self._containers.get(name)
        if record is None:
            if action == "die" and name in self._creating:
                # It died before Phoenix recorded it (between its start and the record):
                # kept for the record to take when it is made.
                code = attributes.get("exitCode")
                self._died_early[name] = int(code) if code is not None else None
            return
        if (
            action == "start"
            and record.adopted
            and record.exited.done()
            and not (record.stopping or record.starting)
        ):
            self._docker_restarted(record)
        elif action == "oom":
            record.oom = True
        elif action.startswith("health_status:"):
            self._health_said(record, action.partition(":")[2].strip())
        elif action == "die":
            code = attributes.get("exitCode")
            self._ended(record, int(code) if code is not None else None)

    def _docker_restarted(self, record: ContainerRecord) -> None:
        """Docker's restart policy started an adopted container again by itself: counted at
        once (it may die again before Phoenix looks at it), then looked at."""
        name = record.instance.id
        log.info("%s: Docker restarted container %s itself", record.instance.service, name)
        now = self._clock.monotonic()
        record.restarts = [t for t in record.restarts if now - t < record.settle] + [now]
        self._tasks.spawn(self._look_at_restart(record, now), name=f"restarted-{name}")

    async def _look_at_restart(self, record: ContainerRecord, now: float) -> None:
        try:
            async with self._errors(f"cannot look at container {record.instance.id}"):
                shown = await self._engine().containers.container(record.instance.id).show()
        except PlatformError as exc:
            log.warning("%s", exc.message)  # removed meanwhile, or the engine is away
            return
        if shown["State"].get("Running") and record.exited.done():
            self._running_again(record, shown, InstanceState.RUNNING)
        if len(record.restarts) < CRASH_LOOP_RESTARTS or record.restarts[-1] != now:
            return  # not (yet) a loop, or a later restart says it
        policy = ((shown.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
        detail = (
            f"a crash loop: Docker's restart policy '{policy}' restarted it "
            f"{len(record.restarts)} times within {record.settle:g}s "
            f"(RestartCount {shown.get('RestartCount', '?')})"
        )
        log.warning("%s: %s", record.instance.id, detail)
        self._emit(InstanceEventKind.CRASH_LOOP, record.instance, detail)
        self._tasks.spawn(self._settled(record, now), name=f"settle-{record.instance.id}")

    async def _settled(self, record: ContainerRecord, restarted_at: float) -> None:
        """The crash loop is over once it has stayed up ``settle`` seconds."""
        await self._clock.sleep(record.settle)
        if record.restarts[-1:] == [restarted_at] and not record.exited.done():
            record.restarts.clear()
            self._emit(InstanceEventKind.HEALTHY, record.instance, "up again without restarts")
