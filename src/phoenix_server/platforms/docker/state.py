"""What the Docker platform knows of its containers, shared by its parts (lifecycle in
``platform.py``, the engine's events in ``watching.py``, adoption in ``adoption.py``): the
records, the engine client, and the one place a container's end is recorded and told to
the subscribers."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from typing import Any

import aiodocker

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import (
    DockerEngine,
    Instance,
    InstanceRole,
    InstanceState,
    PlatformKind,
    ServiceSpec,
)
from phoenix_server.platforms.base import (
    EventListener,
    InstanceEvent,
    InstanceEventKind,
    InstanceJournal,
)
from phoenix_server.platforms.docker.containers import (
    ContainerRecord,
    megabytes,
    stop_timeout,
)
from phoenix_server.platforms.docker.engine import EngineErrors
from phoenix_server.platforms.ports import PortAllocator
from phoenix_server.platforms.routing import RouterKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.platform.docker")


class ContainerState:
    """The state and the record keeping every part of the platform shares (the platform's
    constructor sets it all)."""

    _owner: str
    _floating_owner: str | None
    """The owner label of the containers of services any replica may own (several replicas,
    ``PHOENIX_CLUSTER``): the same for every replica, so whichever owns such a service next
    finds them. None: one Phoenix, or only services pinned to a replica."""
    _watching: bool
    """The engine's events and stats are followed (from the first service it looks after)."""
    _clock: Clock
    _address: str
    _tls: ssl.SSLContext | None
    _tls_problem: str | None
    _engine_declared: DockerEngine | None
    """The named engine of the service file it talks to (None: the default engine)."""
    _elsewhere: set[str]
    """Docker services that run on another engine."""
    _creating: set[str]
    """Containers being created and started, not yet recorded."""
    _died_early: dict[str, int | None]
    """Deaths the engine reported of those (exit codes), waiting for their records."""
    _router_marker: str
    """This engine's mark on the router processes it starts (owner and engine name)."""
    _client: aiodocker.Docker | None
    _containers: dict[str, ContainerRecord]
    _specs: dict[str, ServiceSpec]
    _ports: PortAllocator
    _journal: InstanceJournal
    _closing: bool
    routers: RouterKeeper
    _restart_policies: dict[str, str]
    _listeners: list[EventListener]
    _tasks: SupervisedTasks

    def _owner_label(self, service: ServiceSpec) -> str:
        """Whose the service's containers are: the cluster's for a service any replica may
        own, else this installation's."""
        if self._floating_owner is not None and service.replica is None:
            return self._floating_owner
        return self._owner

    # What the platform itself does, that the shared parts call.

    def instances(self, service: str) -> list[Instance]:
        raise NotImplementedError

    async def start(self, service: ServiceSpec, *, count: int = 1) -> list[Instance]:
        raise NotImplementedError

    async def start_standby(self, service: ServiceSpec) -> Instance:
        raise NotImplementedError

    async def apply_resources(self, service: ServiceSpec) -> str:
        raise NotImplementedError

    def _wants_standby(self, spec: ServiceSpec) -> bool:
        raise NotImplementedError

    async def _replace_standby(self, record: ContainerRecord) -> None:
        raise NotImplementedError

    def _engine(self) -> aiodocker.Docker:
        if self._tls_problem is not None:
            raise PlatformError(self._tls_problem)
        if self._client is None:
            url = self._address
            if self._tls is not None:  # aiodocker speaks TLS to an https:// address only
                url = "https://" + url.removeprefix("tcp://")
            try:
                self._client = aiodocker.Docker(url=url, ssl_context=self._tls)
            except ValueError as exc:  # an address it cannot use, TLS settings it lacks
                raise PlatformError(
                    f"cannot use the Docker engine at {self._address}: {exc}"
                ) from exc
        return self._client

    @property
    def _on_this_host(self) -> bool:
        """The engine's containers are processes this machine can see (its pids are ours)."""
        engine = self._engine_declared or DockerEngine("default", self._address)
        return engine.on_this_host

    def _errors(self, doing: str) -> EngineErrors:
        return EngineErrors(doing, self._address)

    def _record(
        self,
        spec: ServiceSpec,
        name: str,
        shown: dict[str, Any],
        state: InstanceState,
        *,
        adopted: bool = False,
        port: int | None = None,
        role: InstanceRole = InstanceRole.SERVICE,
    ) -> ContainerRecord:
        """What Phoenix keeps of one container of ``spec`` (as inspect ``shown`` it),
        listening on ``port`` (a routed one's own; else the service's)."""
        limit = (shown.get("HostConfig") or {}).get("Memory") or None
        instance = Instance(
            id=name,
            service=spec.name,
            platform=PlatformKind.DOCKER,
            state=state,
            started_at=self._clock.now(),
            pid=shown["State"].get("Pid") or None,
            port=port if port is not None else spec.port,
            version=spec.current_version,
            config_hash=spec.config_hash,
            artifact=shown.get("Image") or None,
            role=role,
        )
        record = self._containers[name] = ContainerRecord(
            instance,
            grace=stop_timeout(spec),
            adopted=adopted,
            memory_limit=limit,
            settle=spec.recovery.backoff.reset_after,
            routed=spec.routed and not adopted,
        )
        return record

    def _running_again(
        self, record: ContainerRecord, shown: dict[str, Any], state: InstanceState
    ) -> None:
        """An adopted container runs again (Phoenix or Docker started it): a new process."""
        record.exited = asyncio.get_running_loop().create_future()
        record.stopping = record.oom = False
        record.instance = replace(
            record.instance,
            state=state,
            started_at=self._clock.now(),
            pid=shown["State"].get("Pid") or None,
            ended_at=None,
            exit_code=None,
        )
        self._emit(InstanceEventKind.STARTED, record.instance)

    def _health_said(self, record: ContainerRecord, status: str) -> None:
        """Docker's HEALTHCHECK changed its verdict (after its own retries)."""
        if record.exited.done() or record.stopping:
            return
        if status == "unhealthy":
            log.warning("%s: Docker's HEALTHCHECK says unhealthy", record.instance.id)
            detail = "Docker's HEALTHCHECK says unhealthy"
            self._emit(InstanceEventKind.UNHEALTHY, record.instance, detail)
        elif status == "healthy":
            self._emit(InstanceEventKind.HEALTHY, record.instance, "Docker's HEALTHCHECK passes")

    def _ended(self, record: ContainerRecord, code: int | None) -> None:
        """The container is no longer running: stopped by Phoenix, or died on its own."""
        if record.exited.done():
            return
        record.exited.set_result(None)
        if record.stopping:
            record.instance = replace(
                record.instance,
                state=InstanceState.STOPPED,
                ended_at=self._clock.now(),
                exit_code=code,
            )
            return
        oom = f"killed by the kernel: out of memory (limit {megabytes(record.memory_limit)})"
        record.instance = replace(
            record.instance,
            state=InstanceState.EXITED,
            ended_at=self._clock.now(),
            exit_code=code,
            end_reason=oom if record.oom else None,
        )
        why = oom if record.oom else f"exited with code {code}"
        if record.instance.role is InstanceRole.STANDBY and not self._closing:
            log.warning("standby %s %s; replacing it", record.instance.id, why)
            self._tasks.spawn(self._replace_standby(record), name=f"standby-{record.instance.id}")
            return
        log.warning("%s: container %s %s", record.instance.service, record.instance.id, why)
        self._emit(InstanceEventKind.EXITED, record.instance)
        if record.routed and not self._closing:
            self._tasks.spawn(
                self.routers.forget(record.instance.service, {record.instance.id}),
                name=f"leave-rotation-{record.instance.id}",
            )

    def _forget(self, record: ContainerRecord) -> None:
        self._containers.pop(record.instance.id, None)
        if record.routed:
            self._ports.release(record.instance.port)
        self._emit(InstanceEventKind.STOPPED, record.instance)

    def _emit(self, kind: InstanceEventKind, instance: Instance, detail: str = "") -> None:
        for listener in self._listeners:
            listener(InstanceEvent(kind, instance, detail))
