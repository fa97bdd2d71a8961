"""Step handlers: what each planned action does, against a platform, when it runs.

A handler takes the run's :class:`StepContext`, the planned step and its time limit, acts,
and returns a :class:`StepOutcome` with a sentence for the record. Failures it can explain
are returned (``ok=False``) or raised as ``PhoenixError``; the executor records either.
Handlers are registered by action name in :data:`HANDLERS`.

Steps may name the instances they act on (``params["instances"]``): a rolling restart is
the same four steps once per instance. Instances a ``start_instances`` step starts are
*fresh* until a ``restore_traffic`` step puts them in rotation; ``verify_health`` checks
the fresh ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.recoveries import DataIntegrity, PlannedStep
from phoenix_server.domain.services import (
    CircuitMode,
    Instance,
    InstanceState,
    PlatformKind,
    ServiceSpec,
)
from phoenix_server.platforms.base import (
    HOOKS,
    LIFECYCLE,
    RESOURCE_CONTROL,
    ROUTING,
    STANDBYS,
    Hooks,
    Platform,
    ProcessLifecycle,
    ResourceControl,
    Routing,
    Standbys,
    describe_end,
)
from phoenix_server.recovery.ports import HealthVerifier


@dataclass(frozen=True)
class StepOutcome:
    ok: bool
    detail: str
    timed_out: bool = False
    """The handler gave up at the step's timeout (recorded as ``timed_out``)."""


@dataclass
class StepContext:
    """State shared by the steps of one recovery attempt."""

    service: ServiceSpec
    platform: Platform
    verifier: HealthVerifier
    clock: Clock
    fresh: list[Instance] = field(default_factory=list)
    """Started by this attempt and not yet in rotation."""
    down_since: datetime | None = None
    """When this attempt took the last serving instance away (downtime begins)."""
    back_at: datetime | None = None
    """When an instance was verified after that (downtime ends)."""
    verified_at: datetime | None = None
    """When the last verification passed."""
    status_of: Callable[[str], ServiceStatus] = lambda _name: ServiceStatus.UNKNOWN
    """The service's health status now (for steps that watch it)."""
    integrity: DataIntegrity | None = None
    """What a consistency check or validation found (None: nothing checked)."""
    resource_shortage: str | None = None
    """A step failed because the machine ran out of something it gets back (descriptors,
    memory): the attempt is retried later and not counted."""
    prepare_rollback: Callable[[], Awaitable[tuple[ServiceSpec, str]]] | None = None
    """For a playbook's rollback step: records the move to the last known-good version and
    returns the spec naming it, and the version (None: no rollback possible in this run)."""

    # The platform's capabilities a step needs: a PlatformError naming what the service's
    # platform cannot do if it lacks one (the step fails with that sentence).

    @property
    def lifecycle(self) -> ProcessLifecycle:
        return LIFECYCLE.require(self.platform, self.service)

    @property
    def routing(self) -> Routing:
        return ROUTING.require(self.platform, self.service)

    @property
    def standbys(self) -> Standbys:
        return STANDBYS.require(self.platform, self.service)

    @property
    def hooks(self) -> Hooks:
        return HOOKS.require(self.platform, self.service)

    @property
    def resource_control(self) -> ResourceControl:
        return RESOURCE_CONTROL.require(self.platform, self.service)


Handler = Callable[[StepContext, PlannedStep, float], Awaitable[StepOutcome]]
"""``(context, step, timeout)``: a handler that can wait honours ``timeout`` itself, so it
can say what it saw when time ran out; the executor's own timer is only a backstop."""


def _describe_ended(instance: Instance) -> str:
    return f"{instance.id} (pid {instance.pid}) {describe_end(instance)}"


def _named(step: PlannedStep) -> set[str] | None:
    names = step.params.get("instances")
    if names is None:
        return None
    assert isinstance(names, list | tuple)
    return {str(name) for name in names}


async def stop_instances(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    named = _named(step)
    current = ctx.platform.instances(ctx.service.name)
    chosen = [i for i in current if named is None or i.id in named]
    if not chosen:
        return StepOutcome(True, "no instance was running")
    serving_after = [i for i in current if i.state is InstanceState.RUNNING and i not in chosen]
    if not serving_after and any(i.state is InstanceState.RUNNING for i in chosen):
        # Downtime starts when the graceful stop begins, not when it has finished.
        ctx.down_since = ctx.down_since or ctx.clock.now()
    already = {i.id for i in chosen if i.state is InstanceState.EXITED}
    ended = await ctx.lifecycle.stop(ctx.service, [i.id for i in chosen])
    parts = []
    for instance in ended:
        if instance.id in already:
            parts.append(f"{_describe_ended(instance)} before the recovery")
        else:
            parts.append(f"stopped {instance.id} (pid {instance.pid})")
    return StepOutcome(True, "; ".join(parts))


async def start_instances(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    count = step.params.get("count", 1)
    assert isinstance(count, int)
    started = await ctx.lifecycle.start(ctx.service, count=count)
    ctx.fresh.extend(started)
    described = "; ".join(
        f"started {i.id} (pid {i.pid}{f', port {i.port}' if i.port else ''})" for i in started
    )
    return StepOutcome(True, described or "nothing started")


async def verify_health(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    instances = ctx.fresh or ctx.platform.instances(ctx.service.name)
    live = [i for i in instances if i.alive]
    if not live and ctx.service.platform is not PlatformKind.EXTERNAL:
        return StepOutcome(False, "no live instance to verify")  # (external: its own check)
    # Where Phoenix runs the instances, one that exits fails the verification at once; a
    # cluster restarts its own (their problems show in the probes and the rollout instead).
    lifecycle = LIFECYCLE.of(ctx.platform)
    verifying = asyncio.ensure_future(ctx.verifier.verify(ctx.service, live, timeout=timeout))
    tasks: list[asyncio.Future[Any]] = [verifying]
    exiting: asyncio.Future[Instance] | None = None
    if lifecycle is not None:
        exiting = asyncio.ensure_future(lifecycle.wait_for_exit([i.id for i in live]))
        tasks.append(exiting)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if verifying in done:
        verification = verifying.result()
        if verification.ok:
            ctx.verified_at = ctx.clock.now()
            if ctx.down_since is not None and ctx.back_at is None:
                ctx.back_at = ctx.verified_at
        return StepOutcome(verification.ok, verification.detail, verification.timed_out)
    assert exiting is not None  # nothing else ends the wait first
    dead = exiting.result()
    where = f"; see {dead.log_path}" if dead.log_path else ""
    return StepOutcome(False, f"{_describe_ended(dead)} before passing its health check{where}")


async def restore_traffic(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    fresh, ctx.fresh = ctx.fresh, []
    ids = [i.id for i in fresh]
    if not ids:
        return StepOutcome(False, "no new instance to put in rotation")
    await ctx.lifecycle.mark_serving(ctx.service, ids)
    if ctx.service.routed:
        detail = f"{', '.join(ids)} in rotation behind port {ctx.service.port}"
        traffic = await ctx.routing.traffic(ctx.service)
        if traffic is not None and traffic.circuit != CircuitMode.CLOSED.value:
            # A restarted service is given its traffic back, even if its circuit was open.
            await ctx.routing.set_circuit(ctx.service, CircuitMode.CLOSED, 1.0)
            detail += f"; circuit closed (was {traffic.circuit})"
        return StepOutcome(True, detail)
    port = f" on port {ctx.service.port}" if ctx.service.port else ""
    return StepOutcome(True, f"{', '.join(ids)} serving{port}")


def _share(admit: float) -> str:
    return f"{admit * 100:g}%"


async def set_circuit(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    mode = CircuitMode(str(step.params["mode"]))
    admit = float(str(step.params.get("admit", 1.0)))
    await ctx.routing.set_circuit(ctx.service, mode, admit)
    waited = f"{ctx.service.circuit.queue_timeout:g}s"
    described = {
        CircuitMode.OPEN: f"circuit open: requests wait up to {waited}, then get the fallback",
        CircuitMode.HALF_OPEN: f"circuit half-open: {_share(admit)} of requests go through",
        CircuitMode.CLOSED: "circuit closed: all traffic flows again",
    }
    return StepOutcome(True, described[mode])


async def wait(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    seconds = float(str(step.params.get("seconds", 0)))
    await ctx.clock.sleep(seconds)
    return StepOutcome(True, f"waited {seconds:g}s")


async def hold(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Watch the service for ``seconds``: a failure reopening the circuit, or the service
    turning unhealthy, fails the step."""
    seconds = float(str(step.params.get("seconds", 0)))
    before = await ctx.routing.traffic(ctx.service)
    deadline = ctx.clock.monotonic() + seconds
    while True:
        now = await ctx.routing.traffic(ctx.service)
        if now is not None and (
            now.circuit == CircuitMode.OPEN.value
            or (before is not None and now.epoch == before.epoch and now.reopened > before.reopened)
        ):
            return StepOutcome(False, "a failed request while half-open reopened the circuit")
        if ctx.status_of(ctx.service.name) is ServiceStatus.UNHEALTHY:
            return StepOutcome(False, "the service turned unhealthy")
        if ctx.clock.monotonic() >= deadline:
            return StepOutcome(True, f"held for {seconds:g}s without a failure")
        await ctx.clock.sleep(HOLD_POLL)


async def verify_capacity(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Every instance the service should have is running and in rotation."""
    expected = step.params.get("replicas")
    assert isinstance(expected, int)
    running = [
        i for i in ctx.platform.instances(ctx.service.name) if i.state is InstanceState.RUNNING
    ]
    if len(running) < expected:
        return StepOutcome(False, f"{len(running)} of {expected} instances serving")
    return StepOutcome(True, f"{len(running)} instances serving")


async def promote_backup(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Switch the traffic to the backup: the hot standby, or (cold) one started now."""
    service = ctx.service
    standby = ctx.standbys.standby(service.name)
    started = ""
    if standby is None:
        if service.backup is None or service.backup.mode != "cold":
            return StepOutcome(False, "no standby is running to take over")
        standby = await ctx.standbys.start_standby(service)
        started = f"started cold backup {standby.id} (pid {standby.pid}); "
    verification = await ctx.verifier.verify(service, [standby], timeout=timeout)
    if not verification.ok:
        return StepOutcome(
            False, f"{started}backup not healthy: {verification.detail}", verification.timed_out
        )
    promoted = await ctx.standbys.promote(service, standby.id)
    ctx.verified_at = ctx.clock.now()
    if ctx.down_since is not None and ctx.back_at is None:
        ctx.back_at = ctx.verified_at
    return StepOutcome(True, f"{started}{promoted.id} (pid {promoted.pid}) now serves")


async def run_hook(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Run one of the service's declared hooks (data_sync, consistency_check, ...)."""
    hook = str(step.params["hook"])
    argv = ctx.service.hooks.get(hook)
    if argv is None:
        return StepOutcome(False, f"no {hook} hook declared")
    ok, detail = await ctx.hooks.run_hook(ctx.service, argv, timeout)
    if hook in VALIDATING_HOOKS:
        ctx.integrity = DataIntegrity.VERIFIED if ok else DataIntegrity.FAILED
    return StepOutcome(ok, detail)


async def start_standby(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    standby = await ctx.standbys.start_standby(ctx.service)
    return StepOutcome(
        True, f"new standby {standby.id} (pid {standby.pid}) starting, out of rotation"
    )


async def apply_resources(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """The declared resources (nice, CPUs, memory and file limits) on every instance."""
    return StepOutcome(True, await ctx.resource_control.apply_resources(ctx.service))


async def replace_standby(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """A new standby of the service as it is now (a deploy changed its version)."""
    old = ctx.standbys.standby(ctx.service.name)
    if old is not None:
        await ctx.lifecycle.stop(ctx.service, [old.id])
    new = await ctx.standbys.start_standby(ctx.service)
    replaced = f"replaced {old.id}: " if old is not None else ""
    return StepOutcome(True, f"{replaced}standby {new.id} (pid {new.pid}) runs {new.version}")


VALIDATING_HOOKS = frozenset({"consistency_check", "smoke"})
"""Hooks whose verdict is the recovery's dataIntegrity."""
HOLD_POLL = 0.25

HANDLERS: dict[str, Handler] = {
    "stop_instances": stop_instances,
    "start_instances": start_instances,
    "verify_health": verify_health,
    "restore_traffic": restore_traffic,
    "set_circuit": set_circuit,
    "wait": wait,
    "hold": hold,
    "verify_capacity": verify_capacity,
    "promote_backup": promote_backup,
    "run_hook": run_hook,
    "start_standby": start_standby,
    "replace_standby": replace_standby,
    "apply_resources": apply_resources,
}
"""Every action a planned step may name."""
