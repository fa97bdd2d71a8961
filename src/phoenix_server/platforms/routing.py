"""Keeping the routers of routed services: run (or adopt) them, steer them, read them.

Shared by the platforms whose instances listen on the host (local processes, Docker
containers on the host's network): each keeps its own :class:`RouterKeeper`, and its routers
are journalled under its kind. Each routed service has one router process on its public
port (see ``router/``). This
module starts it (journalled like an instance, so a restarted Phoenix adopts it), restarts
it at once if it dies — it is the data plane — and pushes it a new configuration whenever
the service's backends change: an instance enters rotation once verified, is drained before
it is stopped, and leaves when it ends. Its counters are the service's traffic.

A router that cannot take its port (another process holds it) does not stop Phoenix: the
service is reported with the reason (:meth:`RouterKeeper.problems`, and to the listeners of
:meth:`RouterKeeper.watch`), and one task per service tries again with a growing backoff,
one log line per try, until the port is free. Meanwhile configuration changes are kept and
pushed when the router comes up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.services import (
    CircuitMode,
    Instance,
    InstanceRole,
    InstanceState,
    PlatformKind,
    ServiceSpec,
)
from phoenix_server.platforms import ports, processes
from phoenix_server.platforms.base import InstanceJournal
from phoenix_server.platforms.router.client import RouterClient
from phoenix_server.platforms.router.config import (
    Backend,
    BackendState,
    Fallback,
    RouterConfig,
)
from phoenix_server.platforms.router.config import CircuitMode as RouterCircuit
from phoenix_server.support import procinfo
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.platforms.routing")

READY_WITHIN = 15.0
"""Seconds a new router process has to open its control socket."""
RESTART_DELAY = 0.2
"""Seconds before a router that died while serving is started again (the first try)."""
MAX_SOCKET_PATH = 100
DRAIN_POLL = 0.05

ProblemListener = Callable[[str, str | None], None]
"""Told ``(service, reason)`` when a service's router stops serving its port, and
``(service, None)`` when it serves it again."""


@dataclass(frozen=True)
class ListenBackoff:
    """How a router that could not start (its port held, say) is tried again."""

    first: float = 1.0
    """Seconds before the second try; each later wait doubles."""
    most: float = 60.0
    """The longest wait between two tries, in seconds."""

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.most:
            raise ValueError(
                f"listen backoff: need 0 < first <= most, got first={self.first:g}s, "
                f"most={self.most:g}s"
            )

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failed try in a row (1, 2, …)."""
        return min(self.first * 2.0 ** max(failures - 1, 0), self.most)


@dataclass
class _Kept:
    spec: ServiceSpec
    config: RouterConfig
    client: RouterClient
    instance: Instance | None = None
    process: processes.Process | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    serving: bool = False
    """Its router is up and answered: configuration can be pushed to it."""
    retrying: bool = False
    """A task is starting it again: exits meanwhile are that task's business."""
    problem: str | None = None
    """Why its port is not served (None while it is)."""


def router_hash(spec: ServiceSpec, python: str) -> str:
    """What a running router must match to be adopted: where it listens, what runs it."""
    return hashlib.sha256(f"{spec.host}:{spec.port}\0{python}".encode()).hexdigest()[:16]


class RouterKeeper:
    def __init__(
        self,
        *,
        run_dir: Path,
        log_dir: Path,
        journal: InstanceJournal,
        clock: Clock,
        env: Mapping[str, str],
        python: str = sys.executable,
        backoff: ListenBackoff | None = None,
        kind: PlatformKind = PlatformKind.LOCAL,
    ) -> None:
        self._kind = kind
        self._run_dir = run_dir
        self._log_dir = log_dir
        self._journal = journal
        self._clock = clock
        self._env = dict(env)
        self._python = python
        self._kept: dict[str, _Kept] = {}
        self._tasks = SupervisedTasks("routers")
        self._closing = False
        self._backoff = backoff or ListenBackoff()
        self._listeners: list[ProblemListener] = []

    # -- paths ------------------------------------------------------------------------------

    def _paths(self, service: str) -> tuple[Path, Path]:
        stem = hashlib.sha256(service.encode()).hexdigest()[:12]
        socket_path = self._run_dir / f"{stem}.sock"
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise PlatformError(
                f"the data directory's path is too long for the router control socket "
                f"{socket_path} (at most {MAX_SOCKET_PATH} characters): use a shorter "
                "PHOENIX_DATA_DIR"
            )
        return socket_path, self._run_dir / f"{stem}.json"

    # -- lifecycle --------------------------------------------------------------------------

    async def ensure(self, spec: ServiceSpec, record: Instance | None) -> None:
        """Adopt ``record`` (the journalled router) if it is still this service's router,
        else start one; then learn the configuration it serves. A router that cannot start
        is a problem reported and retried in the background, not an error."""
        socket_path, _ = self._paths(spec.name)
        kept = _Kept(spec, RouterConfig(service=spec.name), RouterClient(str(socket_path)))
        self._kept[spec.name] = kept
        if record is not None and self._adoptable(record, spec):
            assert record.pid is not None
            kept.instance = replace(record, state=InstanceState.RUNNING)
            kept.process = processes.adopt(record.pid, on_exit=self._on_exit)
            log.info("adopted the router of %s (pid %d)", spec.name, record.pid)
            try:
                kept.config = await kept.client.config()
                kept.serving = True
                return
            except PlatformError:
                log.warning("the adopted router of %s does not answer; replacing it", spec.name)
                await kept.process.stop(signal.SIGTERM, 2.0)
        elif record is not None:
            await self.stop_record(record)
        try:
            await self._start(kept)
        except PlatformError as exc:
            # Not fatal: the service's instances still start (and take traffic once the
            # router can), and every other service is still supervised.
            self._failed(kept, exc.message, failures=1)
            self._retry(kept, self._backoff.delay(1), failures=1)

    def _adoptable(self, record: Instance, spec: ServiceSpec) -> bool:
        return (
            record.pid is not None
            and record.config_hash == router_hash(spec, self._python)
            and procinfo.is_running(record.pid, record.process_start)
        )

    async def stop_record(self, record: Instance) -> None:
        """Stop the router ``record`` names (if it still runs) and forget it."""
        if record.pid is not None and procinfo.is_running(record.pid, record.process_start):
            stale = processes.adopt(record.pid, on_exit=lambda _process: None)
            await stale.stop(signal.SIGTERM, 5.0)
        await self._journal.remove_instance(record.id)

    async def _start(self, kept: _Kept) -> None:
        spec = kept.spec
        socket_path, state_path = self._paths(spec.name)
        # Asked before spawning: the reason names the holder, and a held port costs no
        # process per try. The router's own bind still decides (the port may go meanwhile).
        problem = ports.listen_problem(spec.host, spec.port or 0)
        if problem is not None:
            raise PlatformError(problem)
        self._run_dir.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        argv = [
            self._python, "-m", "phoenix_server.platforms.router",
            "--service", spec.name,
            "--listen", f"{spec.host}:{spec.port}",
            "--control", str(socket_path),
            "--state", str(state_path),
        ]  # fmt: skip
        process = processes.spawn(
            argv,
            cwd=None,
            env={**self._env, "PHOENIX_INSTANCE": f"{spec.name}-router"},
            log_path=self._log_dir / f"{spec.name}.router.log",
            on_exit=self._on_exit,
        )
        kept.process = process
        kept.instance = Instance(
            id=f"{spec.name}-router",
            service=spec.name,
            platform=self._kind,
            state=InstanceState.RUNNING,
            started_at=self._clock.now(),
            pid=process.pid,
            port=spec.port,
            config_hash=router_hash(spec, self._python),
            process_start=process.start_time,
            role=InstanceRole.ROUTER,
            log_path=str(self._log_dir / f"{spec.name}.router.log"),
        )
        await self._journal.save_instance(kept.instance)
        try:
            await self._until_ready(kept)
        except PlatformError:
            await process.stop(signal.SIGTERM, 2.0)  # never two routers of one service
            await self._journal.remove_instance(kept.instance.id)
            kept.instance = None
            raise
        kept.serving = True
        log.info("router of %s on %s:%s (pid %d)", spec.name, spec.host, spec.port, process.pid)

    async def _until_ready(self, kept: _Kept) -> None:
        deadline = self._clock.monotonic() + READY_WITHIN
        while True:
            if kept.process is not None and kept.process.exited.done():
                raise PlatformError(self._exited_at_start(kept))
            try:
                served = await kept.client.config()
                kept.config = replace(kept.config, version=max(kept.config.version, served.version))
                await self._push(kept)
                return
            except PlatformError:
                if self._clock.monotonic() > deadline:
                    raise PlatformError(
                        f"the router of {kept.spec.name} did not open its control socket "
                        f"within {READY_WITHIN:g}s"
                    ) from None
                await asyncio.sleep(0.05)

    def _exited_at_start(self, kept: _Kept) -> str:
        """Why a router just spawned is gone: its port, if that is taken now (it was free a
        moment before), else its own last words."""
        spec = kept.spec
        problem = ports.listen_problem(spec.host, spec.port or 0)
        if problem is not None:
            return problem
        log_path = self._log_dir / f"{spec.name}.router.log"
        return f"the router of {spec.name} exited at start; see {log_path}"

    def _on_exit(self, process: processes.Process) -> None:
        kept = next((k for k in self._kept.values() if k.process is process), None)
        if kept is None or self._closing:
            return
        was_serving, kept.serving = kept.serving, False
        if not was_serving or kept.retrying:
            return  # died while being started: whoever started it deals with that
        # Not yet a problem to report: the next try, a moment away, is likely to succeed.
        log.error("the router of %s (pid %d) died; restarting it", kept.spec.name, process.pid)
        self._retry(kept, RESTART_DELAY, failures=0)

    def _failed(self, kept: _Kept, reason: str, *, failures: int) -> None:
        """Say in one line, and record, why ``kept``'s port is not served after
        ``failures`` failed tries in a row."""
        name = kept.spec.name
        log.error(
            "service %s: its router cannot serve %s:%s: %s (try %d; next in %gs)",
            name,
            kept.spec.host,
            kept.spec.port,
            reason,
            failures,
            self._backoff.delay(failures),
        )
        if kept.problem != reason:
            kept.problem = reason
            self._tell(name, reason)

    def _retry(self, kept: _Kept, first_wait: float, *, failures: int) -> None:
        """Start ``kept``'s router again in the background (one task per service), after
        ``failures`` failed tries in a row."""
        if kept.retrying or self._closing:
            return
        kept.retrying = True
        self._tasks.spawn(
            self._keep_trying(kept, first_wait, failures), name=f"router-{kept.spec.name}"
        )

    async def _keep_trying(self, kept: _Kept, wait: float, failures: int) -> None:
        try:
            if kept.instance is not None:
                await self._journal.remove_instance(kept.instance.id)
                kept.instance = None
            while not self._closing:
                await self._clock.sleep(wait)
                try:
                    await self._start(kept)
                except PlatformError as exc:
                    failures += 1
                    self._failed(kept, exc.message, failures=failures)
                    wait = self._backoff.delay(failures)
                    continue
                if kept.problem is not None:
                    log.info("service %s: port %s is served again", kept.spec.name, kept.spec.port)
                    kept.problem = None
                    self._tell(kept.spec.name, None)
                return
        finally:
            kept.retrying = False

    # -- problems ---------------------------------------------------------------------------

    def watch(self, listener: ProblemListener) -> None:
        """Call ``listener`` whenever a service's port stops or starts being served."""
        self._listeners.append(listener)

    def problems(self) -> dict[str, str]:
        """Each service whose public port its router does not serve now, with the reason."""
        return {name: k.problem for name, k in self._kept.items() if k.problem is not None}

    def _tell(self, service: str, problem: str | None) -> None:
        for listener in self._listeners:
            listener(service, problem)

    async def shutdown(self, *, keep_running: bool) -> None:
        self._closing = True
        await self._tasks.close()
        for kept in self._kept.values():
            if kept.process is None:
                await kept.client.close()
                continue
            if keep_running:
                kept.process.close()
            else:
                await kept.process.stop(signal.SIGTERM, 5.0)
                if kept.instance is not None:
                    await self._journal.remove_instance(kept.instance.id)
            await kept.client.close()
        self._kept.clear()

    def instance(self, service: str) -> Instance | None:
        kept = self._kept.get(service)
        return kept.instance if kept else None

    def services(self) -> list[str]:
        return list(self._kept)

    def pgids(self) -> set[int]:
        return {k.process.pgid for k in self._kept.values() if k.process is not None}

    # -- steering ---------------------------------------------------------------------------

    async def _push(self, kept: _Kept) -> None:
        kept.config = replace(kept.config, version=kept.config.version + 1)
        await kept.client.push(kept.config)

    async def _change(self, service: str, backends: tuple[Backend, ...]) -> None:
        kept = self._kept.get(service)
        if kept is None:
            return
        async with kept.lock:
            kept.config = replace(
                kept.config,
                backends=backends,
                fallback=_fallback(kept.spec),
                queue_timeout=kept.spec.circuit.queue_timeout,
            )
            if kept.serving:  # else kept, and pushed when the router comes up
                await self._push(kept)

    async def set_circuit(self, service: str, mode: CircuitMode, admit: float) -> None:
        kept = self._kept.get(service)
        if kept is None:
            raise PlatformError(f"service '{service}' has no router to break the circuit in")
        async with kept.lock:
            kept.config = replace(kept.config, circuit=RouterCircuit(mode.value), admit=admit)
            if kept.serving:  # else kept, and pushed when the router comes up
                await self._push(kept)

    def backends(self, service: str) -> tuple[Backend, ...]:
        kept = self._kept.get(service)
        return kept.config.backends if kept else ()

    async def admit(self, service: str, instances: list[Instance]) -> None:
        """Put these instances in rotation (replacing any backend entry of the same id)."""
        ids = {i.id for i in instances}
        kept = [b for b in self.backends(service) if b.id not in ids]
        added = [Backend(id=i.id, port=i.port or 0) for i in instances if i.port]
        await self._change(service, (*kept, *added))

    async def forget(self, service: str, instance_ids: set[str]) -> None:
        remaining = tuple(b for b in self.backends(service) if b.id not in instance_ids)
        if len(remaining) != len(self.backends(service)):
            await self._change(service, remaining)

    async def keep_only(self, service: str, instance_ids: set[str]) -> None:
        """After adoption: the router serves exactly the instances that still run."""
        await self.forget(
            service, {b.id for b in self.backends(service) if b.id not in instance_ids}
        )

    async def drain_before_stop(self, spec: ServiceSpec, instance_ids: set[str]) -> None:
        """Take these instances out of rotation before they are stopped: nothing new is sent
        to them, and the requests they serve get the service's ``stop.drain`` to finish (a
        warning if some are still in flight then; the stop goes ahead)."""
        if not await self.drain(spec.name, instance_ids, spec.stop.drain):
            log.warning(
                "%s: requests still in flight after %gs of draining", spec.name, spec.stop.drain
            )

    async def drain(self, service: str, instance_ids: set[str], within: float) -> bool:
        """Send these instances nothing new; wait until their requests in flight are done.
        True if they drained in time."""
        backends = tuple(
            replace(b, state=BackendState.DRAINING) if b.id in instance_ids else b
            for b in self.backends(service)
        )
        if not any(b.id in instance_ids for b in backends):
            return True
        await self._change(service, backends)
        kept = self._kept[service]
        if not kept.serving:
            return True  # no router, no request in flight through it
        deadline = self._clock.monotonic() + within
        while self._clock.monotonic() < deadline:
            try:
                stats = await kept.client.stats()
            except PlatformError:
                return False
            if all(
                stats.backends.get(i) is None or stats.backends[i].in_flight == 0
                for i in instance_ids
            ):
                return True
            await asyncio.sleep(DRAIN_POLL)
        return False

    async def traffic(self, service: str) -> TrafficCounters | None:
        kept = self._kept.get(service)
        if kept is None:
            return None
        stats = await kept.client.stats()
        if stats.circuit != kept.config.circuit.value:
            # The router reopened the circuit itself (a failure while half-open).
            kept.config = replace(kept.config, circuit=RouterCircuit(stats.circuit))
        return TrafficCounters(
            epoch=stats.started_at,
            received=stats.received,
            errors=stats.errors,
            lost=stats.lost,
            latency_p50_ms=stats.latency_p50_ms,
            latency_p99_ms=stats.latency_p99_ms,
            latency_p95_ms=stats.latency_p95_ms,
            circuit=stats.circuit,
            reopened=stats.reopened,
        )


def _fallback(spec: ServiceSpec) -> Fallback:
    if spec.fallback is None:
        return Fallback()
    return Fallback(
        status=spec.fallback.status,
        body=spec.fallback.body,
        content_type=spec.fallback.content_type,
        upstream=spec.fallback.upstream,
    )
