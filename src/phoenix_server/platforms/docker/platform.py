"""The Docker platform: containers Phoenix creates and owns, or adopts, through the engine's
API (aiodocker).

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
import secrets
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiodocker

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import (
    AdoptedContainers,
    CircuitMode,
    ContainerRun,
    DockerEngine,
    Instance,
    InstanceRole,
    InstanceState,
    PlatformKind,
    RenderContext,
    ServiceSpec,
    render,
)
from phoenix_server.platforms.base import (
    EventListener,
    InstanceEventKind,
    InstanceJournal,
    Usage,
)
from phoenix_server.platforms.docker.adoption import ROUTER_OWNER_ENV, Adopting
from phoenix_server.platforms.docker.containers import (
    CONFIG_LABEL,
    IMAGE_LABEL,
    INSTANCE_LABEL,
    OWNER_LABEL,
    PORT_LABEL,
    ROLE_LABEL,
    SERVICE_LABEL,
    VERSION_LABEL,
    ContainerRecord,
    healthcheck_of,
    image_of,
    limits_of,
    megabytes,
    resume,
    run_of,
    stop_timeout,
    stopped_processes,
)
from phoenix_server.platforms.docker.engine import (
    engine_address,
    remove_quietly,
    tls_context,
)
from phoenix_server.platforms.ports import PortAllocator
from phoenix_server.platforms.routing import ListenBackoff, ProblemListener, RouterKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.platform.docker")

SUPPORTED = frozenset(Strategy)
"""All five strategies (each unavailable where the service's declaration lacks what it needs)."""
STANDBY_RESTART_DELAY = 1.0
"""Seconds before a standby that died is replaced (it serves no one meanwhile)."""


class DockerPlatform(Adopting):
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
        engine: DockerEngine | None = None,
        address: str | None = None,
        python: str = sys.executable,
        router_backoff: ListenBackoff | None = None,
        ports: PortAllocator | None = None,
        floating_owner: str | None = None,
    ) -> None:
        self._owner = owner
        self._floating_owner = floating_owner
        self._watching = False
        self._clock = clock
        self._engine_declared = engine
        self._elsewhere = set()
        self._creating = set()
        self._died_early = {}
        # Each engine's routers carry a marker of their own: one engine's look for stray
        # routers at start must never take another engine's for its own.
        self._router_marker = f"{owner}/{engine.name if engine else ''}"
        self._address = engine.host if engine else (address or engine_address())
        self._tls, self._tls_problem = None, None
        try:
            self._tls = tls_context(engine) if engine else None
        except PlatformError as exc:
            # Not fatal to Phoenix: the services on this engine cannot start, and say why.
            self._tls_problem = exc.message
        self._client: aiodocker.Docker | None = None
        self._containers: dict[str, ContainerRecord] = {}
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
            env={**env, ROUTER_OWNER_ENV: self._router_marker},
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
            and c.instance.role is InstanceRole.SERVICE
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
        running = self.standby(service.name)
        if running is not None:
            # One backup at a time: a dead standby's quiet replacement and a failover's new
            # standby may both ask for one.
            return running
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

    async def _replace_standby(self, record: ContainerRecord) -> None:
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
            record.starting = True  # its start event is Phoenix's doing, not Docker's policy
            try:
                async with self._errors(f"cannot start container {name} again"):
                    container = self._engine().containers.container(name)
                    await container.start()
                    shown = await container.show()
            finally:
                record.starting = False
            self._running_again(record, shown, InstanceState.STARTING)
            started.append(record.instance)
        return started

    async def _start_one(
        self, service: ServiceSpec, role: InstanceRole = InstanceRole.SERVICE
    ) -> Instance:
        run = run_of(service)
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
        reference = image_of(service)
        image_id = await self._resolve(reference, service)
        config: dict[str, Any] = {
            "Image": image_id,  # never the tag: it may move while this container lives
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {
                **run.labels,
                OWNER_LABEL: self._owner_label(service),
                SERVICE_LABEL: service.name,
                CONFIG_LABEL: service.config_hash,
                INSTANCE_LABEL: instance_id,
                PORT_LABEL: str(port or ""),
                VERSION_LABEL: service.current_version or "",
                IMAGE_LABEL: reference,
                ROLE_LABEL: role.value,
            },
            "StopTimeout": stop_timeout(service),
            "HostConfig": {
                "NetworkMode": "host",
                "Init": run.init,
                "Binds": list(run.volumes),
                **limits_of(service),
            },
        }
        if run.user is not None:
            config["User"] = run.user
        if run.healthcheck is not None:
            config["Healthcheck"] = healthcheck_of(run.healthcheck)
        command = version.command if version and version.command else run.command
        if backup is not None and backup.command:
            command = backup.command
        if command:
            config["Cmd"] = [render(arg, context) for arg in command]
        client = self._engine()
        self._creating.add(instance_id)
        try:
            async with self._errors(f"cannot start a container of '{service.name}'"):
                container = await client.containers.create(config, name=instance_id)
                try:
                    await container.start()
                    shown = await container.show()
                except BaseException:
                    await remove_quietly(container)
                    raise
        except BaseException:
            self._died_early.pop(instance_id, None)
            raise
        finally:
            self._creating.discard(instance_id)
        record = self._record(
            service, instance_id, shown, InstanceState.STARTING, port=port, role=role
        )
        self._emit(InstanceEventKind.STARTED, record.instance)
        if instance_id in self._died_early:
            # Its die event came before its record (it died right after Phoenix looked).
            self._ended(record, self._died_early.pop(instance_id))
        elif not shown["State"].get("Running"):
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
        limits = limits_of(service)
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
            changed.append(f"memory {megabytes(update['Memory'])}")
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
        live = [
            c
            for c in self._containers.values()
            if c.instance.service == service.name and c.instance.role is InstanceRole.SERVICE
        ]
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
            serving = {c.instance.id for c in chosen if c.instance.alive}
            await self.routers.drain_before_stop(service, serving)
        outcomes = await asyncio.gather(
            *(self._stop_one(service, c) for c in chosen), return_exceptions=True
        )
        ended = [o for o in outcomes if isinstance(o, Instance)]
        if service.routed:
            await self.routers.forget(service.name, {i.id for i in ended})
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the first that could not be stopped, said by the step
        return ended

    async def _stop_one(self, service: ServiceSpec, record: ContainerRecord) -> Instance:
        client = self._engine()
        name = record.instance.id
        if record.instance.state is not InstanceState.EXITED:
            was = record.instance.state
            record.stopping = True
            record.instance = replace(record.instance, state=InstanceState.STOPPING)
            try:
                async with self._errors(f"cannot stop container {name}"):
                    container = client.containers.container(name)
                    if self._on_this_host and (suspended := stopped_processes(record.instance.pid)):
                        # A stopped process cannot act on SIGTERM, so the grace would be
                        # spent waiting for nothing: let it run again to take the signal.
                        log.info("%s: continuing its stopped process(es) %s", name, suspended)
                        resume(suspended)
                    await container.stop(t=stop_timeout(service))
                    shown = await container.show()
            except PlatformError:
                if not record.exited.done():
                    # Still running, as far as Phoenix knows: a later death is a crash again.
                    record.stopping = False
                    record.instance = replace(record.instance, state=was)
                raise
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

    async def _remove(self, record: ContainerRecord) -> None:
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
