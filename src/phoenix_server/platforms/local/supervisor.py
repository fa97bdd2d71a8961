"""The local platform: a real process supervisor for services declared ``platform: local``.

A service with a public port is *routed*: Phoenix's router (``routing.py``) holds that port
and each instance listens on a port Phoenix allocates, enters rotation once verified, and is
drained before it is stopped — so replicas can be restarted one by one without losing a
request, and traffic is counted.

Each instance is a process group with its output appended to ``<log_dir>/<service>.log``
(a file, not a pipe, so it outlives Phoenix). Every instance is journalled with its pid
and the OS's start time for that pid, and carries ``PHOENIX_OWNER`` in its environment:
a restarted Phoenix adopts instances still running from the same declaration instead of
restarting healthy services, stops stale ones (declaration changed, service removed), and
finds strays it never journalled (it died between spawn and journal).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import (
    CircuitMode,
    Instance,
    InstanceRole,
    InstanceState,
    PlatformKind,
    ProcessRun,
    RenderContext,
    ServiceSpec,
    StopPolicy,
    render,
)
from phoenix_server.platforms import ports, processes
from phoenix_server.platforms.base import (
    EventListener,
    InstanceEvent,
    InstanceEventKind,
    InstanceJournal,
    Usage,
    describe_exit,
)
from phoenix_server.platforms.local.usage import ProcessUsage
from phoenix_server.platforms.ports import PortAllocator
from phoenix_server.platforms.routing import ListenBackoff, ProblemListener, RouterKeeper
from phoenix_server.support import procinfo
from phoenix_server.support.tasks import SupervisedTasks
from phoenix_server.support.timefmt import iso_ms

log = logging.getLogger("phoenix.platforms.local")

OWNER_ENV = "PHOENIX_OWNER"
"""Marks every process this Phoenix (this data directory) started."""
INSTANCE_ENV = "PHOENIX_INSTANCE"
SERVICE_ENV = "PHOENIX_SERVICE"
STANDBY_RESTART_DELAY = 1.0
"""Seconds before a standby that died is started again (it serves no one meanwhile)."""
STRAY_GRACE = 5.0
"""Seconds a stray process group gets between SIGTERM and SIGKILL."""


@dataclass
class _Managed:
    instance: Instance
    process: processes.Process
    stop_policy: StopPolicy
    routed: bool
    stopping: bool = False


def _process_run(service: ServiceSpec) -> ProcessRun | None:
    """What a local service runs (None: it declares no command)."""
    return service.run if isinstance(service.run, ProcessRun) else None


class LocalPlatform:
    kind = PlatformKind.LOCAL

    def __init__(
        self,
        *,
        log_dir: Path,
        run_dir: Path,
        journal: InstanceJournal,
        clock: Clock,
        owner: str,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        router_backoff: ListenBackoff | None = None,
        ports: PortAllocator | None = None,
    ) -> None:
        self._log_dir = log_dir
        self._journal = journal
        self._clock = clock
        self._owner = owner
        self._python = python
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._base_env.pop("PORT", None)  # the service's own port is set per instance
        self._managed: dict[str, _Managed] = {}
        self._listeners: list[EventListener] = []
        self._writes = SupervisedTasks("local-journal")
        self._ports = ports or PortAllocator()
        self._specs: dict[str, ServiceSpec] = {}
        self._closing = False
        self._usage = ProcessUsage()
        self.routers = RouterKeeper(
            run_dir=run_dir,
            log_dir=log_dir,
            journal=journal,
            clock=clock,
            env={**self._base_env, OWNER_ENV: owner},
            python=python,
            backoff=router_backoff,
        )

    # -- queries --------------------------------------------------------------------------

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        return frozenset(Strategy) - self.unavailable_strategies(service).keys()

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        name = service.name
        if _process_run(service) is None:
            return {s: f"service '{name}' declares no command to run" for s in Strategy}
        missing: dict[Strategy, str] = {}
        if not service.routed:
            why = f"service '{name}' has no router in front of it (declare a port)"
            missing[Strategy.CIRCUIT_BREAK] = f"circuit breaking needs the router: {why}"
            missing[Strategy.SCALE] = f"scaling needs the router: {why}"
            missing[Strategy.FAILOVER] = f"failover needs the router: {why}"
        else:
            live = sum(
                1 for m in self._managed.values() if m.instance.service == name and m.instance.alive
            )
            if live >= service.replicas.max:
                missing[Strategy.SCALE] = (
                    f"service '{name}' already runs {live} replica(s), its declared maximum "
                    f"(replicas.max: {service.replicas.max})"
                )
            if service.backup is None:
                missing[Strategy.FAILOVER] = (
                    f"service '{name}' declares no backup (add backup: {{mode: hot}} or "
                    "{mode: cold} to its service file)"
                )
            elif service.backup.mode == "hot" and not self.standby(name):
                missing[Strategy.FAILOVER] = (
                    f"service '{name}''s hot standby is not running yet; try again once it is"
                )
        if len(service.versions) < 2:
            missing[Strategy.ROLLBACK] = (
                f"service '{name}' declares no earlier version to roll back to "
                "(add a versions: list to its service file)"
            )
        return missing

    async def set_circuit(self, service: ServiceSpec, mode: CircuitMode, admit: float) -> None:
        await self.routers.set_circuit(service.name, mode, admit)

    def port_problems(self) -> dict[str, str]:
        """Each routed service whose public port is not served now (another process holds
        it, say), with the reason; its router is being tried again meanwhile."""
        return self.routers.problems()

    def watch_ports(self, listener: ProblemListener) -> None:
        """Tell ``listener(service, reason)`` when a service's port stops being served, and
        ``listener(service, None)`` when it is served again."""
        self.routers.watch(listener)

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def instances(self, service: str) -> list[Instance]:
        return [
            m.instance
            for m in self._managed.values()
            if m.instance.service == service and m.instance.role is InstanceRole.SERVICE
        ]

    def sample_usage(self, service: str) -> list[Usage]:
        pids = [
            i.pid
            for i in self.instances(service)
            if i.pid is not None and i.state is InstanceState.RUNNING
        ]
        return self._usage.sample(service, pids)

    def standby(self, service: str) -> Instance | None:
        return next(
            (
                m.instance
                for m in self._managed.values()
                if m.instance.service == service
                and m.instance.role is InstanceRole.STANDBY
                and m.instance.alive
            ),
            None,
        )

    def log_path(self, service: str) -> Path:
        return self._log_dir / f"{service}.log"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, service: ServiceSpec, *, count: int = 1) -> list[Instance]:
        self._specs[service.name] = service  # the latest (a deploy changes the version)
        started = []
        for _ in range(count):
            instance = self._spawn(service, InstanceRole.SERVICE)
            await self._journal.save_instance(instance)
            started.append(instance)
        return started

    async def start_standby(self, service: ServiceSpec) -> Instance:
        if service.backup is None:
            raise PlatformError(f"service '{service.name}' declares no backup")
        self._specs[service.name] = service
        instance = self._spawn(service, InstanceRole.STANDBY)
        await self._journal.save_instance(instance)
        return instance

    async def promote(self, service: ServiceSpec, instance_id: str) -> Instance:
        managed = self._managed.get(instance_id)
        if managed is None or not managed.instance.alive:
            raise PlatformError(f"standby {instance_id} of '{service.name}' is not running")
        managed.instance = replace(
            managed.instance, role=InstanceRole.SERVICE, state=InstanceState.RUNNING
        )
        if service.routed:
            await self.routers.admit(service.name, [managed.instance])
        self._emit(InstanceEventKind.PROMOTED, managed.instance)
        await self._journal.save_instance(managed.instance)
        return managed.instance

    async def run_hook(
        self, service: ServiceSpec, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        version = service.version(service.current_version or "")
        context = RenderContext(
            name=service.name,
            python=self._python,
            port=service.port,
            version=service.current_version,
        )
        command = [render(arg, context) for arg in argv]
        run = _process_run(service)
        declared = {**(run.env if run else {}), **(version.env if version else {})}
        env = {**self._base_env, **{k: render(v, context) for k, v in declared.items()}}
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=run.cwd if run else None,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return False, f"cannot run {command[0]!r}: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            processes.kill_group(process.pid)
            await process.wait()
            return False, f"{shlex.join(command)} did not finish within {timeout:g}s"
        finally:
            if process.returncode is None:
                processes.kill_group(process.pid)
        said = output.decode(errors="replace").strip().splitlines()[-1:] if output else []
        tail = f": {said[0][:300]}" if said else ""
        if process.returncode == 0:
            return True, f"{shlex.join(command)} passed{tail}"
        return False, f"{shlex.join(command)} exited {process.returncode}{tail}"

    def _spawn(self, service: ServiceSpec, role: InstanceRole) -> Instance:
        run = _process_run(service)
        if run is None:
            raise PlatformError(f"service '{service.name}' declares no command to start")
        if not service.routed and service.port is not None:
            self._check_own_port(service)
        instance_id = f"{service.name}-{secrets.token_hex(3)}"
        version = next((v for v in service.versions if v.name == service.current_version), None)
        port = self._ports.allocate() if service.routed else service.port
        context = RenderContext(
            name=service.name,
            python=self._python,
            port=port,
            version=version.name if version else None,
            instance=instance_id,
        )
        command = version.command if version and version.command else run.command
        backup = service.backup if role is InstanceRole.STANDBY else None
        if backup is not None and backup.command:
            command = backup.command
        argv = [render(arg, context) for arg in command]
        env = dict(self._base_env)
        env.update({key: render(value, context) for key, value in run.env.items()})
        if version:
            env.update({key: render(value, context) for key, value in version.env.items()})
        if backup is not None:
            env.update({key: render(value, context) for key, value in backup.env.items()})
        if port is not None:
            env["PORT"] = str(port)
        env.update({OWNER_ENV: self._owner, INSTANCE_ENV: instance_id, SERVICE_ENV: service.name})
        cwd = version.cwd if version and version.cwd else run.cwd
        log_path = self.log_path(service.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log_file:
            log_file.write(
                f"--- phoenix {iso_ms(self._clock.now())} starting {instance_id}: "
                f"{shlex.join(argv)}\n"
            )
        try:
            process = processes.spawn(
                argv, cwd=cwd, env=env, log_path=log_path, on_exit=self._on_process_exit
            )
        except PlatformError:
            if service.routed:
                self._ports.release(port)
            raise
        instance = Instance(
            id=instance_id,
            service=service.name,
            platform=PlatformKind.LOCAL,
            state=InstanceState.STARTING,
            started_at=self._clock.now(),
            pid=process.pid,
            port=port,
            version=context.version,
            log_path=str(log_path),
            config_hash=service.config_hash,
            process_start=process.start_time,
            role=role,
        )
        self._managed[instance_id] = _Managed(instance, process, service.stop, service.routed)
        self._set_resources(service, instance)
        log.info("started %s (pid %d)", instance_id, process.pid)
        self._emit(InstanceEventKind.STARTED, instance)
        return instance

    def _check_own_port(self, service: ServiceSpec) -> None:
        """An unrouted service listens on its declared port itself: if another process
        holds it, say who rather than start an instance that cannot bind (or, worse, whose
        checks would reach that other process). Not asked while an instance of the service
        lives: the holder may be that instance."""
        assert service.port is not None
        if any(
            m.instance.service == service.name and m.instance.alive for m in self._managed.values()
        ):
            return
        problem = ports.listen_problem(service.host, service.port)
        if problem is not None:
            raise PlatformError(f"service '{service.name}' cannot listen: {problem}")

    def _set_resources(self, service: ServiceSpec, instance: Instance) -> str:
        """Apply the service's declared resources to ``instance`` (at its start, at its
        adoption, and when a scale-out re-checks them). A failure is logged, not fatal: the
        service runs, with what could be set."""
        if not service.resources.declared or instance.pid is None:
            return "no resources declared"
        try:
            done = processes.apply_resources(instance.pid, service.resources)
        except PlatformError as exc:
            log.error("%s: %s", instance.id, exc.message)
            return exc.message
        return ", ".join(done)

    async def apply_resources(self, service: ServiceSpec) -> str:
        live = [i for i in self.instances(service.name) if i.alive]
        if not service.resources.declared:
            return "no resources declared"
        applied = {i.id: self._set_resources(service, i) for i in live}
        return "; ".join(f"{name}: {what}" for name, what in applied.items()) or "no instance"

    def _on_process_exit(self, process: processes.Process) -> None:
        managed = next((m for m in self._managed.values() if m.process is process), None)
        if managed is None:
            return
        code = process.returncode
        state = InstanceState.STOPPED if managed.stopping else InstanceState.EXITED
        managed.instance = replace(
            managed.instance, state=state, ended_at=self._clock.now(), exit_code=code
        )
        if state is InstanceState.EXITED and managed.instance.role is InstanceRole.STANDBY:
            # A backup that dies is replaced quietly: it served no one, it must just be there.
            log.warning("standby %s %s; replacing it", managed.instance.id, describe_exit(code))
            self._forget(managed)
            spec = self._specs.get(managed.instance.service)
            if spec is not None:
                self._writes.spawn(self._replace_standby(spec), name="replace-standby")
        elif state is InstanceState.EXITED:
            log.warning("%s (pid %d) %s", managed.instance.id, process.pid, describe_exit(code))
            self._emit(InstanceEventKind.EXITED, managed.instance)
            self._writes.spawn(
                self.routers.forget(managed.instance.service, {managed.instance.id}),
                name="leave-rotation",
            )
        else:
            # A deliberate stop is forgotten at once; a crash stays visible until replaced.
            self._forget(managed)
        self._writes.spawn(
            self._journal.remove_instance(managed.instance.id), name="remove-instance"
        )

    async def _replace_standby(self, spec: ServiceSpec) -> None:
        await asyncio.sleep(STANDBY_RESTART_DELAY)
        if self._wants_standby(spec):
            try:
                await self.start_standby(spec)
            except PlatformError as exc:
                log.error("cannot start a standby for %s: %s", spec.name, exc.message)

    def _forget(self, managed: _Managed) -> None:
        self._managed.pop(managed.instance.id, None)
        if managed.routed:
            self._ports.release(managed.instance.port)
        self._emit(InstanceEventKind.STOPPED, managed.instance)

    async def stop(
        self, service: ServiceSpec, instance_ids: Sequence[str] | None = None
    ) -> list[Instance]:
        chosen = [
            m
            for m in list(self._managed.values())
            if m.instance.service == service.name
            and (
                m.instance.id in instance_ids
                if instance_ids is not None
                else m.instance.role is InstanceRole.SERVICE
            )
        ]
        if service.routed:
            serving = {m.instance.id for m in chosen if m.instance.alive}
            await self.routers.drain_before_stop(service, serving)
        ended = list(await asyncio.gather(*(self._stop_one(m) for m in chosen)))
        if service.routed:
            # Already out of rotation (drained, or dead and passed over): tidying the router
            # up need not hold back what comes next, such as starting the replacement.
            self._writes.spawn(
                self.routers.forget(service.name, {m.instance.id for m in chosen}),
                name="leave-rotation",
            )
        return ended

    async def _stop_one(self, managed: _Managed) -> Instance:
        if managed.instance.state is InstanceState.EXITED:
            self._forget(managed)
            return managed.instance
        policy = managed.stop_policy
        managed.stopping = True
        managed.instance = replace(managed.instance, state=InstanceState.STOPPING)
        _, forced = await managed.process.stop(policy.signal, policy.grace)
        if forced:
            log.warning(
                "%s ignored %s for %.1fs and was killed",
                managed.instance.id,
                signal.Signals(policy.signal).name,
                policy.grace,
            )
            managed.instance = replace(managed.instance, exit_code=managed.process.returncode)
        return managed.instance

    async def mark_serving(self, service: ServiceSpec, instance_ids: Sequence[str]) -> None:
        admitted = [
            m for i in instance_ids if (m := self._managed.get(i)) is not None and m.instance.alive
        ]
        if service.routed and admitted:
            # Traffic first: clients may be waiting in the router for this very instance.
            await self.routers.admit(service.name, [m.instance for m in admitted])
        for managed in admitted:
            if managed.instance.state is InstanceState.STARTING:
                managed.instance = replace(managed.instance, state=InstanceState.RUNNING)
                await self._journal.save_instance(managed.instance)

    async def traffic(self, service: ServiceSpec) -> TrafficCounters | None:
        if not service.routed:
            return None
        try:
            return await self.routers.traffic(service.name)
        except PlatformError:
            return None

    async def wait_for_exit(self, instance_ids: Sequence[str]) -> Instance:
        watched = [self._managed[i] for i in instance_ids if i in self._managed]
        for managed in watched:
            if managed.process.exited.done():
                return managed.instance
        if not watched:
            await asyncio.Event().wait()  # nothing to watch: never returns, as documented
        await asyncio.wait(
            [asyncio.shield(m.process.exited) for m in watched],
            return_when=asyncio.FIRST_COMPLETED,
        )
        return next(m.instance for m in watched if m.process.exited.done())

    # -- restart of Phoenix ---------------------------------------------------------------

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        specs = {s.name: s for s in services if s.platform is PlatformKind.LOCAL}
        self._specs = specs
        stale: list[tuple[Instance, StopPolicy]] = []
        routers: dict[str, Instance] = {}
        for record in await self._journal.load_instances(PlatformKind.LOCAL):
            spec = specs.get(record.service)
            if record.role is InstanceRole.ROUTER:
                if spec is not None and spec.routed:
                    routers[record.service] = record
                else:
                    stale.append((record, StopPolicy(grace=5.0)))
            elif not self._still_ours(record):
                await self._journal.remove_instance(record.id)
            elif (
                spec is None
                or record.config_hash != spec.config_hash
                or record.version != spec.current_version
            ):
                if spec is None:
                    why = "no longer declared"
                elif record.config_hash != spec.config_hash:
                    why = "its declaration changed"
                else:
                    why = f"it runs {record.version}, not the deployed {spec.current_version}"
                log.info("stopping %s (pid %s): %s", record.id, record.pid, why)
                stale.append((record, spec.stop if spec else StopPolicy()))
            else:
                self._adopt(record, spec)
        await asyncio.gather(*(self._stop_stale(record, policy) for record, policy in stale))
        failed: dict[str, str] = {}
        for spec in specs.values():
            if spec.routed:
                try:
                    await self.routers.ensure(spec, routers.get(spec.name))
                    running = {
                        m.instance.id
                        for m in self._managed.values()
                        if m.instance.service == spec.name
                    }
                    await self.routers.keep_only(spec.name, running)
                except PlatformError as exc:
                    log.error("cannot run the router of %s: %s", spec.name, exc.message)
                    failed[spec.name] = exc.message
        await self._stop_strays()
        for spec in specs.values():
            live = [
                m
                for m in self._managed.values()
                if m.instance.service == spec.name and m.instance.role is InstanceRole.SERVICE
            ]
            missing = max(spec.replicas.min, 0) - len(live)
            if missing > 0 and spec.name not in failed:
                try:
                    await self.start(spec, count=missing)
                except PlatformError as exc:
                    # One service that cannot start must not keep the others unsupervised.
                    log.error("cannot start %s: %s", spec.name, exc.message)
                    failed[spec.name] = exc.message
            if self._wants_standby(spec) and spec.name not in failed:
                await self.start_standby(spec)
        return failed

    def _wants_standby(self, spec: ServiceSpec) -> bool:
        backup = spec.backup
        return (
            spec.routed
            and backup is not None
            and backup.mode == "hot"
            and self.standby(spec.name) is None
            and not self._closing
        )

    def _still_ours(self, record: Instance) -> bool:
        """The journalled process is alive and is that very instance (pid, start, marker)."""
        return (
            record.pid is not None
            and procinfo.is_running(record.pid, record.process_start)
            and processes.instance_of(record.pid, INSTANCE_ENV) == record.id
        )

    def _adopt(self, record: Instance, spec: ServiceSpec) -> None:
        assert record.pid is not None
        process = processes.adopt(record.pid, on_exit=self._on_process_exit)
        instance = replace(record, state=InstanceState.RUNNING)
        self._managed[record.id] = _Managed(instance, process, spec.stop, spec.routed)
        self._set_resources(spec, instance)  # the declaration may have changed meanwhile
        if spec.routed and record.port is not None:
            self._ports.hold(record.port)
        log.info("adopted %s (pid %d) still running from before", record.id, record.pid)
        self._emit(InstanceEventKind.ADOPTED, instance)

    async def _stop_stale(self, record: Instance, policy: StopPolicy) -> None:
        if record.pid is not None and procinfo.is_running(record.pid, record.process_start):
            stale = processes.adopt(record.pid, on_exit=lambda _process: None)
            await stale.stop(policy.signal, policy.grace)
        await self._journal.remove_instance(record.id)

    async def _stop_strays(self) -> None:
        """Stop processes this installation started but no longer knows (it died between a
        spawn and its journal write), sparing every process of an adopted instance."""
        ours = {m.instance.id for m in self._managed.values()}
        ours |= {f"{service}-router" for service in self.routers.services()}
        known_groups = {m.process.pgid for m in self._managed.values()} | self.routers.pgids()
        groups: set[int] = set()
        for pid, instance_id in processes.marked_processes(OWNER_ENV, self._owner, INSTANCE_ENV):
            if instance_id in ours or pid == os.getpid():
                continue
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pgid not in known_groups:
                groups.add(pgid)
        for pgid in groups:
            log.warning("stopping stray process group %d left by an earlier Phoenix", pgid)
        await asyncio.gather(*(processes.stop_group(pgid, STRAY_GRACE) for pgid in groups))

    async def shutdown(self, *, keep_running: bool) -> None:
        self._closing = True
        # Routers go first: they finish the requests in flight, and nothing new reaches an
        # instance while it stops.
        await self.routers.shutdown(keep_running=keep_running)
        if keep_running:
            for managed in self._managed.values():
                managed.process.close()
            self._managed.clear()
        else:
            await asyncio.gather(*(self._stop_one(m) for m in list(self._managed.values())))
            self._managed.clear()
        await self._writes.drain()
        await self._writes.close()

    def _emit(self, kind: InstanceEventKind, instance: Instance) -> None:
        event = InstanceEvent(kind, instance)
        for listener in self._listeners:
            listener(event)
