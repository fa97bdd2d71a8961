"""Docker containers Phoenix creates and owns, through the engine's API (aiodocker).

Each docker service runs containers of its declared image on the host's network, named
``phoenix-<service>-<hex>``. A service with a port is *routed*, as local services are:
Phoenix's router process holds the service's port and each container listens on a port
Phoenix assigns (its ``PORT`` and ``{port}``), enters rotation once verified, and is drained
before it is stopped; so replicas are restarted one at a time without losing a request, and
the router counts the traffic and breaks the circuit. The router is a process on the host,
journalled like a local one: it outlives Phoenix, and a restarted Phoenix adopts it. With
``router: false`` the single container listens on the service's port itself. What Phoenix
owns is said in the container's labels, not in a journal of its own: ``phoenix.owner`` (this
installation's id), ``phoenix.service``, ``phoenix.config`` (a digest of the declaration),
``phoenix.instance`` and ``phoenix.port`` (where it listens). So a restarted Phoenix adopts
the running containers carrying its owner label and the service's current declaration (a
healthy service is not restarted),
removes the other containers it owned, and starts what is missing.

Containers someone else created (by hand, or Compose) are *adopted* by their labels
(``adopt:``): stopped and started again in place, never removed, recreated or reconfigured,
and left running when Phoenix stops. One that Docker's own restart policy restarts is left to
Docker (no restart strategy is offered for it, so each crash is recorded, not fought over).

Noticing is the engine's event stream, not polling: a container that dies without Phoenix
stopping it is an ``exited`` instance at once (``oom`` says why), and one whose image's
HEALTHCHECK turns ``unhealthy`` is unhealthy until it turns healthy again, whatever
Phoenix's own probes see (Docker itself would do nothing about it). When the stream drops,
the next one starts with a look at every container, so nothing that happened meanwhile is
lost. Engine errors become ``PlatformError``s here, naming the engine and what it said.

Memory and CPU come from the engine's stats (one sample of every running container each
second, in the background; ``sample_usage`` reads the latest), so leak and load detection
work as for local processes. Memory is the engine's figure less the page cache, as
``docker stats`` shows it.

Capabilities: all of them — the process lifecycle, routing, standbys (a backup container out
of rotation; a promoted one is told from a standby by the router's rotation, as labels cannot
change), hooks (``docker exec`` in a running container), resource control (``docker
update``) and resource sampling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import psutil

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import (
    AdoptedContainers,
    CircuitMode,
    ContainerRun,
    Instance,
    InstanceRole,
    InstanceState,
    PlatformKind,
    RenderContext,
    ServiceSpec,
    render,
)
from phoenix_server.platforms import processes
from phoenix_server.platforms.base import (
    EventListener,
    InstanceEvent,
    InstanceEventKind,
    InstanceJournal,
    Usage,
)
from phoenix_server.platforms.ports import PortAllocator
from phoenix_server.platforms.routing import ListenBackoff, ProblemListener, RouterKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.platform.docker")

OWNER_LABEL = "phoenix.owner"
SERVICE_LABEL = "phoenix.service"
CONFIG_LABEL = "phoenix.config"
INSTANCE_LABEL = "phoenix.instance"
PORT_LABEL = "phoenix.port"
VERSION_LABEL = "phoenix.version"
IMAGE_LABEL = "phoenix.image"
"""The image reference the container was started from (its Image is the resolved ID)."""
SUPPORTED = frozenset(Strategy)
"""All five strategies (each unavailable where the service's declaration lacks what it needs)."""
ROLE_LABEL = "phoenix.role"
"""``service`` or ``standby`` as created; a standby the router serves was promoted."""
STANDBY_RESTART_DELAY = 1.0
"""Seconds before a standby that died is replaced (it serves no one meanwhile)."""
UNREACHABLE = 900
"""aiodocker's status for an engine it could not connect to."""
CRASH_LOOP_RESTARTS = 3
"""Restarts by Docker's own policy within the service's ``reset_after`` that make a crash
loop (Phoenix does not fight it: it says so, and the service stays unhealthy meanwhile)."""
STATS_EVERY = 1.0
"""Seconds between two looks at the running containers' stats."""
ROUTER_OWNER_ENV = "PHOENIX_DOCKER_ROUTER_OWNER"
"""Marks the router processes this installation started for its docker services (not
``PHOENIX_OWNER``: the local platform would take them for strays of its own)."""
ROUTER_INSTANCE_ENV = "PHOENIX_INSTANCE"
STRAY_GRACE = 5.0
"""Seconds a stray router gets between SIGTERM and SIGKILL."""


def engine_address() -> str:
    """The engine Phoenix talks to: ``DOCKER_HOST``, else the local socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@dataclass
class _Container:
    instance: Instance
    grace: int = 10
    """Seconds ``docker stop`` waits before SIGKILL (the service's ``stop.grace``)."""
    adopted: bool = False
    """Someone else created it: stopped and started in place, never removed."""
    memory_limit: int | None = None
    """Bytes it may use (None: no limit)."""
    routed: bool = False
    """Behind the service's router, on a port Phoenix assigned (released when forgotten)."""
    settle: float = 10.0
    """Seconds up after which a failure counts as fresh (the service's ``reset_after``)."""
    restarts: list[float] = field(default_factory=list)
    """Monotonic times Docker's restart policy started it again, within ``settle``."""
    stopping: bool = False
    oom: bool = False
    usage: Usage | None = None
    """The latest stats sample (None until the first)."""
    exited: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _limits(service: ServiceSpec) -> dict[str, Any]:
    """The declared resources as the engine's HostConfig: a memory limit (the kernel's OOM
    killer ends the container past it), the CPUs it may run on, its open-file limit."""
    resources = service.resources
    limits: dict[str, Any] = {}
    if resources.memory_max is not None:
        limits["Memory"] = resources.memory_max
        limits["MemorySwap"] = resources.memory_max  # no swap beyond it: a leak ends at it
    if resources.cpus is not None:
        limits["CpusetCpus"] = ",".join(str(cpu) for cpu in resources.cpus)
    if resources.open_files is not None:
        files = resources.open_files
        limits["Ulimits"] = [{"Name": "nofile", "Soft": files, "Hard": files}]
    return limits


def _suspended(pid: int | None) -> list[psutil.Process]:
    """The container's processes (its first and every descendant) stopped by a signal
    (SIGSTOP, SIGTSTP), as far as this host can see them (an engine elsewhere: none)."""
    if pid is None:
        return []
    try:
        first = psutil.Process(pid)
        every = [first, *first.children(recursive=True)]
    except (psutil.Error, OSError):
        return []
    stopped = []
    for process in every:
        try:
            if process.status() == psutil.STATUS_STOPPED:
                stopped.append(process)
        except (psutil.Error, OSError):
            continue  # gone meanwhile
    return stopped


def _resume(stopped: list[psutil.Process]) -> None:
    for process in stopped:
        try:
            process.resume()  # SIGCONT
        except (psutil.Error, OSError) as exc:
            log.warning("cannot continue process %d: %s", process.pid, exc)


def _megabytes(limit: int | None) -> str:
    return "none" if limit is None else f"{limit / 1024 / 1024:g} MiB"


def _grace(service: ServiceSpec) -> int:
    """``docker stop``'s timeout: whole seconds, at least one."""
    return max(1, round(service.stop.grace))


def _image_of(service: ServiceSpec) -> str:
    """The image a new container of ``service`` runs: the pinned image ID if its current
    version proved good with one, else the version's image, else the service's."""
    version = service.version(service.current_version or "")
    if version is not None:
        pinned = service.pins.get(version.name)
        if pinned is not None:
            return pinned
        if version.image is not None:
            return version.image
    return _run(service).image


def _run(service: ServiceSpec) -> ContainerRun:
    if not isinstance(service.run, ContainerRun):
        raise PlatformError(f"service '{service.name}' declares no image to run")
    return service.run


class DockerPlatform:
    kind = PlatformKind.DOCKER

    def __init__(
        self,
        *,
        owner: str,
        clock: Clock,
        run_dir: Path,
        log_dir: Path,
        journal: InstanceJournal,
        env: Mapping[str, str],
        address: str | None = None,
        python: str = sys.executable,
        router_backoff: ListenBackoff | None = None,
        ports: PortAllocator | None = None,
    ) -> None:
        self._owner = owner
        self._clock = clock
        self._address = address or engine_address()
        self._client: aiodocker.Docker | None = None
        self._containers: dict[str, _Container] = {}
        self._specs: dict[str, ServiceSpec] = {}
        """The latest declaration of each docker service Phoenix runs (for a standby's
        replacement)."""
        self._ports = ports or PortAllocator()
        self._journal = journal
        self._closing = False
        self.routers = RouterKeeper(
            run_dir=run_dir,
            log_dir=log_dir,
            journal=journal,
            clock=clock,
            env={**env, ROUTER_OWNER_ENV: owner},
            python=python,
            backoff=router_backoff,
            kind=PlatformKind.DOCKER,
        )
        self._restart_policies: dict[str, str] = {}
        """Adopted services whose containers Docker's own restart policy restarts."""
        self._listeners: list[EventListener] = []
        self._tasks = SupervisedTasks("docker")

    @property
    def tasks(self) -> SupervisedTasks:
        """Its background tasks (the event stream; their deaths are reported by /health)."""
        return self._tasks

    # -- queries --------------------------------------------------------------------------

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        return SUPPORTED - self.unavailable_strategies(service).keys()

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        if not isinstance(service.run, ContainerRun | AdoptedContainers):
            why = f"service '{service.name}' declares no image to run or containers to adopt"
            return {s: why for s in Strategy}
        name = service.name
        missing: dict[Strategy, str] = {}
        if not service.routed:
            why = (
                f"service '{name}' has no router in front of it (declare a port, and no "
                "router: false, on a service Phoenix runs from an image)"
            )
            missing[Strategy.CIRCUIT_BREAK] = f"circuit breaking needs the router: {why}"
            missing[Strategy.SCALE] = f"scaling needs the router: {why}"
            missing[Strategy.FAILOVER] = f"failover needs the router: {why}"
        else:
            live = sum(1 for i in self.instances(name) if i.alive)
            if live >= service.replicas.max:
                missing[Strategy.SCALE] = (
                    f"service '{name}' already runs {live} container(s), its declared maximum "
                    f"(replicas.max: {service.replicas.max})"
                )
        if service.routed and service.backup is None:
            missing[Strategy.FAILOVER] = (
                f"service '{name}' declares no backup (add backup: {{mode: hot}} or "
                "{mode: cold} to its service file)"
            )
        elif service.routed and service.backup is not None and service.backup.mode == "hot":
            if self.standby(name) is None:
                missing[Strategy.FAILOVER] = (
                    f"service '{name}''s hot standby is not running yet; try again once it is"
                )
        if isinstance(service.run, AdoptedContainers):
            missing[Strategy.ROLLBACK] = (
                f"service '{name}' adopts containers it did not create: Phoenix has no image "
                "history for them and never changes their image (declare an image and versions "
                "to let Phoenix run and roll back the service)"
            )
        elif len(service.versions) < 2:
            missing[Strategy.ROLLBACK] = (
                f"service '{name}' declares no earlier version to roll back to (add a "
                "versions: list, each with its image, to its service file)"
            )
        policy = self._restart_policies.get(service.name)
        if policy is not None:
            # Restarting it too would be fighting Docker over it: each crash is recorded,
            # and Docker restarts it.
            missing[Strategy.RESTART] = (
                f"Docker's restart policy '{policy}' restarts the containers of "
                f"'{service.name}': Phoenix records their failures and leaves the restarts "
                "to Docker (set the policy to 'no' to let Phoenix recover them)"
            )
        return missing

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def port_problems(self) -> dict[str, str]:
        """Each routed service whose public port its router does not serve now (another
        process holds it, say), with the reason; the router is tried again meanwhile."""
        return self.routers.problems()

    def watch_ports(self, listener: ProblemListener) -> None:
        """Tell ``listener(service, reason)`` when a service's port stops being served, and
        ``listener(service, None)`` when it is served again."""
        self.routers.watch(listener)

    # -- routing --------------------------------------------------------------------------

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        await self.routers.set_circuit(service.name, mode, admit)

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        if not service.routed:
            return None
        try:
            return await self.routers.traffic(service.name)
        except PlatformError:
            return None

    def instances(self, service: str) -> list[Instance]:
        return [
            c.instance
            for c in self._containers.values()
            if c.instance.service == service and c.instance.role is InstanceRole.SERVICE
        ]

    def standby(self, service: str) -> Instance | None:
        return next(
            (
                c.instance
                for c in self._containers.values()
                if c.instance.service == service
                and c.instance.role is InstanceRole.STANDBY
                and c.instance.alive
            ),
            None,
        )

    def sample_usage(self, service: str) -> list[Usage]:
        return [
            c.usage
            for c in self._containers.values()
            if c.instance.service == service
            and c.usage is not None
            and c.instance.state is InstanceState.RUNNING
        ]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, service: ServiceSpec, *, count: int = 1) -> list[Instance]:
        if isinstance(service.run, AdoptedContainers):
            return await self._start_adopted(service, count)
        self._specs[service.name] = service  # the latest (a deploy changes the version)
        return [await self._start_one(service) for _ in range(count)]

    # -- standbys -------------------------------------------------------------------------

    async def start_standby(self, service: ServiceSpec) -> Instance:
        """A backup container (the backup's command and env, if declared), out of rotation."""
        if service.backup is None:
            raise PlatformError(f"service '{service.name}' declares no backup")
        self._specs[service.name] = service
        return await self._start_one(service, InstanceRole.STANDBY)

    async def promote(self, service: ServiceSpec, instance_id: str) -> Instance:
        record = self._containers.get(instance_id)
        if record is None or not record.instance.alive:
            raise PlatformError(f"standby {instance_id} of '{service.name}' is not running")
        record.instance = replace(
            record.instance, role=InstanceRole.SERVICE, state=InstanceState.RUNNING
        )
        if service.routed:
            # The router's rotation is what remembers the promotion (a label cannot change):
            # a restarted Phoenix takes a standby the router serves for a serving container.
            await self.routers.admit(service.name, [record.instance])
        self._emit(InstanceEventKind.PROMOTED, record.instance)
        return record.instance

    def _wants_standby(self, spec: ServiceSpec) -> bool:
        backup = spec.backup
        return (
            spec.routed
            and backup is not None
            and backup.mode == "hot"
            and self.standby(spec.name) is None
            and not self._closing
        )

    async def _replace_standby(self, record: _Container) -> None:
        """A standby died: remove it and, after a moment, start another (quietly: it served
        no one, it must just be there)."""
        spec = self._specs.get(record.instance.service)
        try:
            async with self._errors(f"cannot remove container {record.instance.id}"):
                await self._engine().containers.container(record.instance.id).delete(force=True)
        except PlatformError as exc:
            log.error("%s", exc.message)
        self._forget(record)
        await self._clock.sleep(STANDBY_RESTART_DELAY)
        if spec is not None and self._wants_standby(spec):
            try:
                await self.start_standby(spec)
            except PlatformError as exc:
                log.error("cannot start a standby for %s: %s", spec.name, exc.message)

    async def _start_adopted(self, service: ServiceSpec, count: int) -> list[Instance]:
        """Start again, in place, adopted containers that are not running: Phoenix never
        creates a container of a service it adopted."""
        stopped = [
            c
            for c in self._containers.values()
            if c.instance.service == service.name and c.adopted and c.exited.done()
        ][:count]
        if not stopped:
            raise PlatformError(
                f"no stopped container of '{service.name}' to start again (Phoenix does not "
                "create containers of a service it adopted)"
            )
        started = []
        for record in stopped:
            name = record.instance.id
            async with self._errors(f"cannot start container {name} again"):
                container = self._engine().containers.container(name)
                await container.start()
                shown = await container.show()
            self._running_again(record, shown, InstanceState.STARTING)
            started.append(record.instance)
        return started

    def _running_again(
        self, record: _Container, shown: dict[str, Any], state: InstanceState
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

    async def _start_one(
        self, service: ServiceSpec, role: InstanceRole = InstanceRole.SERVICE
    ) -> Instance:
        run = _run(service)
        instance_id = f"phoenix-{service.name}-{secrets.token_hex(3)}"
        port = self._ports.allocate() if service.routed else service.port
        try:
            return await self._create(service, run, instance_id, port, role)
        except BaseException:
            if service.routed:
                self._ports.release(port)
            raise

    async def _create(
        self,
        service: ServiceSpec,
        run: ContainerRun,
        instance_id: str,
        port: int | None,
        role: InstanceRole,
    ) -> Instance:
        context = RenderContext(
            name=service.name,
            python="python3",
            port=port,
            version=service.current_version,
            instance=instance_id,
        )
        version = service.version(service.current_version or "")
        backup = service.backup if role is InstanceRole.STANDBY else None
        declared = {**run.env, **(version.env if version else {}), **(backup.env if backup else {})}
        env = {key: render(value, context) for key, value in declared.items()}
        if port is not None:
            env["PORT"] = str(port)
        reference = _image_of(service)
        image_id = await self._resolve(reference, service)
        config: dict[str, Any] = {
            "Image": image_id,  # never the tag: it may move while this container lives
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {
                OWNER_LABEL: self._owner,
                SERVICE_LABEL: service.name,
                CONFIG_LABEL: service.config_hash,
                INSTANCE_LABEL: instance_id,
                PORT_LABEL: str(port or ""),
                VERSION_LABEL: service.current_version or "",
                IMAGE_LABEL: reference,
                ROLE_LABEL: role.value,
            },
            "StopTimeout": _grace(service),
            "HostConfig": {"NetworkMode": "host", "Init": run.init, **_limits(service)},
        }
        command = version.command if version and version.command else run.command
        if backup is not None and backup.command:
            command = backup.command
        if command:
            config["Cmd"] = [render(arg, context) for arg in command]
        client = self._engine()
        async with self._errors(f"cannot start a container of '{service.name}'"):
            container = await client.containers.create(config, name=instance_id)
            try:
                await container.start()
                shown = await container.show()
            except BaseException:
                await _remove_quietly(container)
                raise
        record = self._record(
            service, instance_id, shown, InstanceState.STARTING, port=port, role=role
        )
        self._emit(InstanceEventKind.STARTED, record.instance)
        if not shown["State"].get("Running"):
            # It ended before Phoenix looked: as if its die event had come already.
            self._ended(record, shown["State"].get("ExitCode"))
        log.info(
            "%s: started container %s (%s: %s)", service.name, instance_id, reference, image_id
        )
        return record.instance

    async def _resolve(self, reference: str, service: ServiceSpec) -> str:
        """The ID of the image ``reference`` names on the engine now (Phoenix never pulls)."""
        try:
            async with self._errors(f"cannot start a container of '{service.name}'"):
                shown = await self._engine().images.inspect(reference)
        except PlatformError as exc:
            cause = exc.__cause__
            if isinstance(cause, aiodocker.exceptions.DockerError) and cause.status == 404:
                raise PlatformError(
                    f"cannot start a container of '{service.name}': image {reference} is not "
                    f"on the Docker engine at {self._address} (Phoenix does not pull images: "
                    "build or pull it there)"
                ) from exc
            raise
        return str(shown["Id"])

    # -- resources ------------------------------------------------------------------------

    async def apply_resources(self, service: ServiceSpec) -> str:
        """The declared memory and CPU limits on every live container, in place (``docker
        update``); the open-file limit applies to containers started from now on (Docker
        cannot change a running container's ulimits)."""
        if not service.resources.declared:
            return "no resources declared"
        limits = _limits(service)
        update = {k: v for k, v in limits.items() if k in ("Memory", "MemorySwap", "CpusetCpus")}
        said = []
        if update:
            body = json.dumps(update)
            for record in list(self._containers.values()):
                if record.instance.service != service.name or not record.instance.alive:
                    continue
                name = record.instance.id
                async with self._errors(f"cannot change the resources of {name}"):
                    # aiodocker has no call for the update endpoint; its request helper does.
                    await self._engine()._query_json(
                        f"containers/{name}/update", method="POST", data=body
                    )
                record.memory_limit = update.get("Memory", record.memory_limit)
                said.append(name)
        changed = []
        if "Memory" in update:
            changed.append(f"memory {_megabytes(update['Memory'])}")
        if "CpusetCpus" in update:
            changed.append(f"cpus {update['CpusetCpus']}")
        done = f"{', '.join(changed)} on {', '.join(said) or 'no container'}" if changed else ""
        if "Ulimits" in limits:
            files = "open files apply to containers started from now on"
            done = f"{done}; {files}" if done else files
        return done

    # -- hooks ----------------------------------------------------------------------------

    async def run_hook(
        self, service: ServiceSpec, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        """Run a declared hook inside one of the service's running containers (``docker
        exec``), with its environment; exit 0 passes."""
        live = [c for c in self._containers.values() if c.instance.service == service.name]
        target = next(
            (c for c in live if c.instance.state is InstanceState.RUNNING),
            next((c for c in live if c.instance.alive), None),
        )
        if target is None:
            return False, f"no running container of '{service.name}' to run the hook in"
        name = target.instance.id
        context = RenderContext(
            name=service.name,
            python="python3",
            port=target.instance.port,
            version=service.current_version,
            instance=name,
        )
        command = [render(arg, context) for arg in argv]
        said = b""
        try:
            async with asyncio.timeout(timeout), self._errors(f"cannot run a hook in {name}"):
                container = self._engine().containers.container(name)
                execution = await container.exec(cmd=command, stdout=True, stderr=True)
                stream = execution.start(detach=False)
                try:
                    while (message := await stream.read_out()) is not None:
                        said = (said + message.data)[-4096:]  # the end says why
                finally:
                    await stream.close()
                code = (await execution.inspect()).get("ExitCode")
        except TimeoutError:
            return False, (
                f"{shlex.join(command)} did not finish within {timeout:g}s in {name} (Docker "
                "cannot stop a command it runs in a container: it may still be running)"
            )
        except PlatformError as exc:
            return False, exc.message
        lines = said.decode(errors="replace").strip().splitlines()[-1:]
        tail = f": {lines[0][:300]}" if lines else ""
        if code == 0:
            return True, f"{shlex.join(command)} passed in {name}{tail}"
        return False, f"{shlex.join(command)} exited {code} in {name}{tail}"

    async def stop(
        self, service: ServiceSpec, instance_ids: Sequence[str] | None = None
    ) -> list[Instance]:
        chosen = [
            c
            for c in list(self._containers.values())
            if c.instance.service == service.name
            and (
                c.instance.id in instance_ids
                if instance_ids is not None
                else c.instance.role is InstanceRole.SERVICE
            )
        ]
        if service.routed:
            # Out of rotation first: no request is sent to a container about to be stopped,
            # and those it is serving get ``drain`` seconds to finish.
            serving = {c.instance.id for c in chosen if c.instance.alive}
            if not await self.routers.drain(service.name, serving, service.stop.drain):
                log.warning(
                    "%s: requests still in flight after %gs of draining",
                    service.name,
                    service.stop.drain,
                )
        ended = list(await asyncio.gather(*(self._stop_one(service, c) for c in chosen)))
        if service.routed:
            await self.routers.forget(service.name, {c.instance.id for c in chosen})
        return ended

    async def _stop_one(self, service: ServiceSpec, record: _Container) -> Instance:
        client = self._engine()
        name = record.instance.id
        if record.instance.state is not InstanceState.EXITED:
            record.stopping = True
            record.instance = replace(record.instance, state=InstanceState.STOPPING)
            async with self._errors(f"cannot stop container {name}"):
                container = client.containers.container(name)
                if suspended := _suspended(record.instance.pid):
                    # A stopped process cannot act on SIGTERM, so the grace would be spent
                    # waiting for nothing: let it run again to take the signal and shut down.
                    log.info("%s: continuing its stopped process(es) %s", name, suspended)
                    _resume(suspended)
                await container.stop(t=_grace(service))
                shown = await container.show()
            self._ended(record, shown["State"].get("ExitCode"))
        if record.adopted:
            # Kept, stopped, to be started again in place (its target leaves the probes).
            record.instance = replace(record.instance, state=InstanceState.STOPPED)
            self._emit(InstanceEventKind.STOPPED, record.instance)
            return record.instance
        async with self._errors(f"cannot remove container {name}"):
            await client.containers.container(name).delete(force=True)
        self._forget(record)
        return record.instance

    async def mark_serving(self, service: ServiceSpec, instance_ids: Sequence[str]) -> None:
        admitted = [
            r
            for i in instance_ids
            if (r := self._containers.get(i)) is not None and r.instance.alive
        ]
        if service.routed and admitted:
            # Traffic first: clients may be waiting in the router for this very container.
            await self.routers.admit(service.name, [r.instance for r in admitted])
        for record in admitted:
            if record.instance.state is InstanceState.STARTING:
                record.instance = replace(record.instance, state=InstanceState.RUNNING)

    async def wait_for_exit(self, instance_ids: Sequence[str]) -> Instance:
        watched = [self._containers[i] for i in instance_ids if i in self._containers]
        for record in watched:
            if record.exited.done():
                return record.instance
        if not watched:
            await asyncio.Event().wait()  # nothing to watch: never returns, as documented
        await asyncio.wait(
            [asyncio.shield(r.exited) for r in watched], return_when=asyncio.FIRST_COMPLETED
        )
        return next(r.instance for r in watched if r.exited.done())

    # -- start and stop of Phoenix --------------------------------------------------------

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        docker = [s for s in services if s.platform is PlatformKind.DOCKER]
        specs = {s.name: s for s in docker if isinstance(s.run, ContainerRun)}
        self._specs = dict(specs)
        taken_over = [s for s in docker if isinstance(s.run, AdoptedContainers)]
        failed: dict[str, str] = {}
        # Watched from now on, even if the engine cannot be reached yet: the loops retry
        # (and /health names them meanwhile), so an engine that comes back is seen.
        self._tasks.keep_running(self._watch_events, name="docker-events")
        self._tasks.keep_running(self._sample_stats, name="docker-stats")
        for other in taken_over:
            try:
                await self._take_over(other)
            except PlatformError as exc:
                failed[other.name] = exc.message
        # Routers first: their rotation says which containers serve (a promoted standby).
        failed |= await self._ensure_routers(specs)
        try:
            found = await self._owned()
        except PlatformError as exc:
            return {**failed, **{name: exc.message for name in specs}}
        # Those in rotation first: if there are more than a service may run, they are kept.
        found.sort(key=lambda shown: not self._in_rotation(shown))
        for shown in found:
            name = shown["Name"].lstrip("/")
            if not self._adoptable(specs, name, shown):
                log.info("removing container %s: not what the service file declares now", name)
                try:
                    async with self._errors(f"cannot remove container {name}"):
                        await self._engine().containers.container(name).delete(force=True)
                except PlatformError as exc:
                    log.error("%s", exc.message)
        for spec in specs.values():
            if spec.routed and spec.name not in failed:
                serving = {i.id for i in self.instances(spec.name)}
                await self.routers.keep_only(spec.name, serving)
            if spec.resources.declared and self.instances(spec.name):
                # The declaration may have changed while Phoenix was away.
                try:
                    log.info("%s: resources: %s", spec.name, await self.apply_resources(spec))
                except PlatformError as exc:
                    log.error("%s", exc.message)
        await self._stop_stray_routers()
        for spec in specs.values():
            if spec.name in failed:
                continue
            missing = max(1, spec.replicas.min) - len(self.instances(spec.name))
            try:
                if missing > 0:
                    await self.start(spec, count=missing)
                if self._wants_standby(spec):
                    await self.start_standby(spec)
            except PlatformError as exc:
                failed[spec.name] = exc.message
        return failed

    def _adoptable(
        self, specs: Mapping[str, ServiceSpec], name: str, shown: dict[str, Any]
    ) -> bool:
        """Adopt ``shown`` if it runs what its service declares now, within its numbers
        (``replicas.max`` serving, one hot standby); say whether it was."""
        labels = shown["Config"]["Labels"] or {}
        spec = specs.get(labels.get(SERVICE_LABEL, ""))
        if (
            spec is None
            or labels.get(CONFIG_LABEL) != spec.config_hash
            or labels.get(VERSION_LABEL, "") != (spec.current_version or "")
            or not shown["State"].get("Running")
        ):
            return False
        role, state = InstanceRole.SERVICE, InstanceState.RUNNING
        in_rotation = self._in_rotation(shown)
        if labels.get(ROLE_LABEL) == InstanceRole.STANDBY.value and not in_rotation:
            role = InstanceRole.STANDBY
            if not self._wants_standby(spec):
                return False
        elif len(self.instances(spec.name)) >= spec.replicas.max:
            return False
        elif spec.routed and not in_rotation:
            # Started but never put in rotation (Phoenix died first): it is verified and
            # admitted like any container started now.
            state = InstanceState.STARTING
        self._adopt(spec, name, shown, role=role, state=state)
        return True

    def _in_rotation(self, shown: dict[str, Any]) -> bool:
        """The container is in its service's router rotation (the router outlived Phoenix)."""
        service = (shown["Config"]["Labels"] or {}).get(SERVICE_LABEL, "")
        return shown["Name"].lstrip("/") in {b.id for b in self.routers.backends(service)}

    async def _ensure_routers(self, specs: Mapping[str, ServiceSpec]) -> dict[str, str]:
        """Adopt (or start) the router of each routed service; stop the routers of services
        no longer routed."""
        journalled = {
            record.service: record
            for record in await self._journal.load_instances(PlatformKind.DOCKER)
            if record.role is InstanceRole.ROUTER
        }
        failed: dict[str, str] = {}
        for name, record in journalled.items():
            spec = specs.get(name)
            if spec is None or not spec.routed:
                log.info("stopping the router of %s: no longer a routed docker service", name)
                await self.routers.stop_record(record)
        for spec in specs.values():
            if not spec.routed:
                continue
            try:
                await self.routers.ensure(spec, journalled.get(spec.name))
            except PlatformError as exc:
                log.error("cannot run the router of %s: %s", spec.name, exc.message)
                failed[spec.name] = exc.message
        return failed

    async def _stop_stray_routers(self) -> None:
        """Stop any router this installation started but never journalled (it died in
        between): it would hold the port its successor needs."""
        known = self.routers.pgids()
        strays = set()
        marked = processes.marked_processes(ROUTER_OWNER_ENV, self._owner, ROUTER_INSTANCE_ENV)
        for pid, _ in marked:
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if group not in known:
                log.warning("stopping stray router process group %d of an earlier Phoenix", group)
                strays.add(group)
        await asyncio.gather(*(processes.stop_group(group, STRAY_GRACE) for group in strays))

    async def _take_over(self, spec: ServiceSpec) -> None:
        """Adopt every container carrying the service's labels, running or not."""
        assert isinstance(spec.run, AdoptedContainers)
        filters = json.dumps({"label": list(spec.run.labels)})
        async with self._errors(f"cannot list the containers of '{spec.name}'"):
            listed = await self._engine().containers.list(all=True, filters=filters)
            found = [await c.show() for c in listed]
        if not found:
            raise PlatformError(
                f"no container carries {' and '.join(spec.run.labels)} to adopt for '{spec.name}'"
            )
        for shown in found:
            name = shown["Name"].lstrip("/")
            policy = ((shown.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
            if policy not in (None, "", "no"):
                self._restart_policies[spec.name] = policy
            self._adopt(spec, name, shown, adopted=True)
            if not shown["State"].get("Running"):
                self._ended(self._containers[name], shown["State"].get("ExitCode"))

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
    ) -> _Container:
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
        record = self._containers[name] = _Container(
            instance,
            grace=_grace(spec),
            adopted=adopted,
            memory_limit=limit,
            settle=spec.recovery.backoff.reset_after,
            routed=spec.routed and not adopted,
        )
        return record

    def _adopt(
        self,
        spec: ServiceSpec,
        name: str,
        shown: dict[str, Any],
        *,
        adopted: bool = False,
        role: InstanceRole = InstanceRole.SERVICE,
        state: InstanceState = InstanceState.RUNNING,
    ) -> None:
        port = None
        if spec.routed and not adopted:
            port = int((shown["Config"]["Labels"] or {}).get(PORT_LABEL) or 0) or None
            if port is not None:
                self._ports.hold(port)
        record = self._record(spec, name, shown, state, adopted=adopted, port=port, role=role)
        log.info("%s: adopted running container %s", spec.name, name)
        self._emit(InstanceEventKind.ADOPTED, record.instance)
        health = (shown["State"].get("Health") or {}).get("Status")
        if health == "unhealthy":
            self._health_said(record, health)  # it failed while no Phoenix watched

    async def shutdown(self, *, keep_running: bool) -> None:
        self._closing = True
        # Routers go first: they finish the requests in flight, and nothing new reaches a
        # container while it stops.
        await self.routers.shutdown(keep_running=keep_running)
        await self._tasks.close(timeout=5.0)
        if not keep_running and self._client is not None:
            # All at once: each may take its whole grace.
            ours = [r for r in self._containers.values() if not r.adopted]
            await asyncio.gather(*(self._remove(r) for r in ours))
        self._containers.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _remove(self, record: _Container) -> None:
        """Stop (within its grace) and remove one container as Phoenix stops."""
        try:
            async with self._errors(f"cannot remove container {record.instance.id}"):
                container = self._engine().containers.container(record.instance.id)
                record.stopping = True
                await container.stop(t=record.grace)
                await container.delete(force=True)
        except PlatformError as exc:
            log.error("%s", exc.message)

    # -- the engine -----------------------------------------------------------------------

    def _engine(self) -> aiodocker.Docker:
        if self._client is None:
            self._client = aiodocker.Docker(url=self._address)
        return self._client

    def _errors(self, doing: str) -> _EngineErrors:
        return _EngineErrors(doing, self._address)

    async def _owned(self) -> list[dict[str, Any]]:
        """Every container (running or not) carrying this installation's owner label."""
        client = self._engine()
        filters = json.dumps({"label": [f"{OWNER_LABEL}={self._owner}"]})
        async with self._errors("cannot list containers"):
            listed = await client.containers.list(all=True, filters=filters)
            return [await c.show() for c in listed]

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

    async def _sample_one(self, record: _Container) -> None:
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
            elif (shown["State"].get("Health") or {}).get("Status") == "unhealthy":
                self._health_said(record, "unhealthy")

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action", ""))
        attributes = event.get("Actor", {}).get("Attributes", {}) or {}
        record = self._containers.get(str(attributes.get("name", "")))
        if record is None:
            return
        if action == "start" and record.adopted and record.exited.done() and not record.stopping:
            self._docker_restarted(record)
        elif action == "oom":
            record.oom = True
        elif action.startswith("health_status:"):
            self._health_said(record, action.partition(":")[2].strip())
        elif action == "die":
            code = attributes.get("exitCode")
            self._ended(record, int(code) if code is not None else None)

    def _docker_restarted(self, record: _Container) -> None:
        """Docker's restart policy started an adopted container again by itself."""
        name = record.instance.id
        log.info("%s: Docker restarted container %s itself", record.instance.service, name)
        self._tasks.spawn(self._look_at_restart(record), name=f"restarted-{name}")

    async def _look_at_restart(self, record: _Container) -> None:
        shown = await self._engine().containers.container(record.instance.id).show()
        if not (shown["State"].get("Running") and record.exited.done()):
            return
        now = self._clock.monotonic()
        record.restarts = [t for t in record.restarts if now - t < record.settle] + [now]
        self._running_again(record, shown, InstanceState.RUNNING)
        if len(record.restarts) < CRASH_LOOP_RESTARTS:
            return
        policy = ((shown.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
        detail = (
            f"a crash loop: Docker's restart policy '{policy}' restarted it "
            f"{len(record.restarts)} times within {record.settle:g}s "
            f"(RestartCount {shown.get('RestartCount', '?')})"
        )
        log.warning("%s: %s", record.instance.id, detail)
        self._emit(InstanceEventKind.CRASH_LOOP, record.instance, detail)
        self._tasks.spawn(self._settled(record, now), name=f"settle-{record.instance.id}")

    async def _settled(self, record: _Container, restarted_at: float) -> None:
        """The crash loop is over once it has stayed up ``settle`` seconds."""
        await self._clock.sleep(record.settle)
        if record.restarts[-1:] == [restarted_at] and not record.exited.done():
            record.restarts.clear()
            self._emit(InstanceEventKind.HEALTHY, record.instance, "up again without restarts")

    def _health_said(self, record: _Container, status: str) -> None:
        """Docker's HEALTHCHECK changed its verdict (after its own retries)."""
        if record.exited.done() or record.stopping:
            return
        if status == "unhealthy":
            log.warning("%s: Docker's HEALTHCHECK says unhealthy", record.instance.id)
            detail = "Docker's HEALTHCHECK says unhealthy"
            self._emit(InstanceEventKind.UNHEALTHY, record.instance, detail)
        elif status == "healthy":
            self._emit(InstanceEventKind.HEALTHY, record.instance, "Docker's HEALTHCHECK passes")

    def _ended(self, record: _Container, code: int | None) -> None:
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
        oom = f"killed by the kernel: out of memory (limit {_megabytes(record.memory_limit)})"
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

    def _forget(self, record: _Container) -> None:
        self._containers.pop(record.instance.id, None)
        if record.routed:
            self._ports.release(record.instance.port)
        self._emit(InstanceEventKind.STOPPED, record.instance)

    def _emit(self, kind: InstanceEventKind, instance: Instance, detail: str = "") -> None:
        for listener in self._listeners:
            listener(InstanceEvent(kind, instance, detail))


def usage_of(stats: dict[str, Any]) -> Usage | None:
    """Memory (less the page cache) and CPU (percent of one core) from one stats answer."""
    memory = stats.get("memory_stats") or {}
    used = memory.get("usage")
    if used is None:
        return None
    details = memory.get("stats") or {}
    # As `docker stats` counts it: cgroup v1 names the page cache total_inactive_file, v2
    # inactive_file.
    cache = details.get("total_inactive_file", details.get("inactive_file", 0))
    cpu, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    spent = cpu.get("cpu_usage", {}).get("total_usage", 0) - before.get("cpu_usage", {}).get(
        "total_usage", 0
    )
    elapsed = cpu.get("system_cpu_usage", 0) - before.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    percent = spent / elapsed * cores * 100.0 if elapsed > 0 and spent > 0 else 0.0
    return Usage(memory=float(max(0, used - cache)), cpu=percent)


class _EngineErrors:
    """Engine and connection errors as PlatformErrors saying what Phoenix was doing."""

    def __init__(self, doing: str, address: str) -> None:
        self._doing = doing
        self._address = address

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        if isinstance(exc, aiodocker.exceptions.DockerError) and exc.status == UNREACHABLE:
            raise PlatformError(
                f"{self._doing}: cannot reach the Docker engine at {self._address} ({exc.message})"
            ) from exc
        if isinstance(exc, aiodocker.exceptions.DockerError):
            raise PlatformError(f"{self._doing}: the Docker engine said: {exc.message}") from exc
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise PlatformError(
                f"{self._doing}: cannot reach the Docker engine at {self._address}: {exc}"
            ) from exc


async def _remove_quietly(container: aiodocker.containers.DockerContainer) -> None:
    try:
        await container.delete(force=True)
    except aiodocker.exceptions.DockerError:
        log.warning("could not remove container %s after a failed start", container.id)
