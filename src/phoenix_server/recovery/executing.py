"""The executor: runs a plan's steps against a platform, recording each before and after.

The recovery is written as ``in_progress`` with every step ``pending`` before the first
step acts, and each step is written when it starts and when it ends, so a Phoenix killed
mid-recovery leaves an honest record. Every step runs under its own timeout, bounded by
what is left of ``RECOVERY_TIMEOUT``. A cancel request is honoured between steps (the
safe points). Downtime is measured from when serving stopped to when health verified.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import (
    PhoenixError,
    ResourceExhaustedError,
    UnavailableError,
    is_resource_exhaustion,
)
from phoenix_server.domain.health import ServiceStatus, TrafficCounters
from phoenix_server.domain.recoveries import (
    DataIntegrity,
    Outcome,
    PlannedStep,
    Recovery,
    RecoveryMetrics,
    RecoveryStatus,
    Step,
    StepCondition,
    StepStatus,
)
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.platforms.base import ROUTING, Platform, PlatformRegistry
from phoenix_server.recovery.actions import Handler, StepContext, StepOutcome
from phoenix_server.recovery.persisting import EventualWrites
from phoenix_server.recovery.ports import HealthVerifier, RecoveryRecorder
from phoenix_server.recovery.strategies import Plan
from phoenix_server.recovery.workload_actions import STEP_HANDLERS

log = logging.getLogger("phoenix.recovery")

WRITE_PATIENCE = 10.0
"""Seconds a recovery waits for the database before giving up on a write."""
HANDLER_GRACE = 1.0
"""Seconds past a step's timeout before the executor stops a handler that ignored it."""

StatusLookup = Callable[[str], ServiceStatus]
"""The service's current health status (for ``if_healthy``/``if_unhealthy`` conditions)."""


@dataclass(frozen=True)
class ExecutionLimits:
    recovery_timeout: float
    """Seconds one attempt may take in all (``RECOVERY_TIMEOUT``)."""


def should_run(condition: StepCondition, previous_ok: bool | None, status: ServiceStatus) -> bool:
    """Whether a step's condition holds; ``previous_ok`` is None before any step ran."""
    match condition:
        case StepCondition.ALWAYS:
            return True
        case StepCondition.IF_PREVIOUS_FAILED:
            return previous_ok is False
        case StepCondition.IF_PREVIOUS_SUCCEEDED:
            return previous_ok is not False
        case StepCondition.IF_HEALTHY:
            return status.serving
        case StepCondition.IF_UNHEALTHY:
            return not status.serving


async def durably(
    write: Callable[[], Awaitable[None]], clock: Clock, patience: float = WRITE_PATIENCE
) -> None:
    """Retry a write the database refuses for a moment (locked, failing over) for up to
    ``patience`` seconds: a recovery does not act without its record."""
    delay, waited = 0.05, 0.0
    while True:
        try:
            await write()
            return
        except UnavailableError:
            if waited >= patience:
                raise
            await clock.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


async def _traffic(platform: Platform, service: ServiceSpec) -> TrafficCounters | None:
    routing = ROUTING.of(platform)
    return await routing.traffic(service) if routing is not None else None


async def _requests_lost(
    platform: Platform, service: ServiceSpec, before: TrafficCounters | None
) -> int | None:
    """Requests the router failed or rejected since ``before``; None with no router."""
    routing = ROUTING.of(platform)
    if before is None or routing is None:
        return None
    after = await routing.traffic(service)
    return after.lost_since(before) if after is not None else None


class StepLog(Protocol):
    """Where a run's steps are written as they start and end (a recovery's record, or a
    deployment's)."""

    steps: list[Step]

    def set(self, step: Step) -> None: ...

    async def flush(self) -> None:
        """Write what changed since the last flush (called as each step starts)."""
        ...


@dataclass
class StepsRun:
    """How a plan's steps went."""

    aborted_by: Step | None = None
    """The step whose failure stopped the plan (the later ones were skipped)."""
    cancelled: bool = False
    """A cancel request skipped the steps not yet started."""


def planned_steps(plan: Plan, recovery_timeout: float) -> list[Step]:
    """The plan's steps as records, all pending. The timeout shown is the one enforced: no
    step outlives the whole run's."""
    return [
        Step(i, p.name, p.action, StepStatus.PENDING, min(p.timeout, recovery_timeout), p.condition)
        for i, p in enumerate(plan.steps)
    ]


def stopped_steps(steps: list[Step], at: datetime) -> tuple[Step, ...]:
    """The steps as Phoenix leaves them when it stops mid-run: the running one failed."""
    return tuple(
        replace(s, status=StepStatus.FAILED, ended_at=at, detail="Phoenix stopped")
        if s.status is StepStatus.RUNNING
        else s
        for s in steps
    )


class _Progress:
    """The steps of one run and which changed since the last write.

    A step's end is written together with the next step's start (one transaction, and
    nothing happens between the two), and the first write carries the whole recovery.
    """

    def __init__(
        self,
        recorder: RecoveryRecorder,
        clock: Clock,
        recovery: Recovery,
        steps: list[Step],
        journal: EventualWrites | None,
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._recovery = recovery
        self.steps = steps
        self._unsaved: set[int] = set()
        self._written = False
        self._journal = journal
        self.journaled = False
        """The database refused a write of this run: its whole record waits in the
        journal, and every later state of it goes there too (the latest wins)."""

    def set(self, step: Step) -> None:
        self.steps[step.position] = step
        self._unsaved.add(step.position)

    async def flush(self) -> None:
        if self._journal is not None and not self.journaled:
            try:
                await self._flush()
            except UnavailableError as exc:
                # The data plane comes first: the recovery goes on, its record is kept.
                log.warning("%s: recording later (%s)", self._recovery.id, exc.message)
                self.journaled = True
        if self.journaled:
            assert self._journal is not None
            self._journal.keep(replace(self._recovery, steps=tuple(self.steps)))
            self._unsaved.clear()
            return
        await durably(self._flush, self._clock)

    async def _flush(self) -> None:
        if not self._written:
            whole = replace(self._recovery, steps=tuple(self.steps))
            await self._recorder.save_recovery(whole)
            self._written = True
        elif self._unsaved:
            changed = [self.steps[i] for i in sorted(self._unsaved)]
            await self._recorder.save_steps(self._recovery, changed)
        self._unsaved.clear()


class Executor:
    def __init__(
        self,
        *,
        platforms: PlatformRegistry,
        verifier: HealthVerifier,
        recorder: RecoveryRecorder,
        clock: Clock,
        status_of: StatusLookup,
        limits: ExecutionLimits,
        handlers: Mapping[str, Handler] = STEP_HANDLERS,
    ) -> None:
        self._platforms = platforms
        self._verifier = verifier
        self._recorder = recorder
        self._clock = clock
        self._status_of = status_of
        self._limits = limits
        self._handlers = handlers
        self._journal: EventualWrites | None = None

    def use_journal(self, journal: EventualWrites) -> None:
        """Where records the database refuses go (the orchestrator's, so that one place
        holds the latest state of each record): a recovery goes on without them."""
        self._journal = journal

    @property
    def recovery_timeout(self) -> float:
        return self._limits.recovery_timeout

    async def execute(
        self,
        recovery: Recovery,
        service: ServiceSpec,
        plan: Plan,
        *,
        cancel: asyncio.Event,
        down_since: datetime | None,
        prepare_rollback: Callable[[], Awaitable[tuple[ServiceSpec, str]]] | None = None,
    ) -> Recovery:
        """Run ``plan``; return the finished recovery (also saved). Raises UnavailableError
        only if the database stays away longer than :data:`WRITE_PATIENCE`.
        ``prepare_rollback``: how a playbook's rollback step moves the service's version."""
        clock = self._clock
        recovery = replace(
            recovery,
            status=RecoveryStatus.IN_PROGRESS,
            started_at=recovery.started_at or clock.now(),
        )
        progress = _Progress(
            self._recorder,
            clock,
            recovery,
            planned_steps(plan, self._limits.recovery_timeout),
            self._journal,
        )
        ctx = self.context_for(service)
        ctx.prepare_rollback = prepare_rollback
        platform = ctx.platform
        # Sampled alongside the first steps, not before them: every millisecond is downtime.
        traffic_before = asyncio.ensure_future(_traffic(platform, service))
        try:
            ran = await self.run_steps(
                f"{recovery.id} {recovery.service}", plan, ctx, progress, cancel=cancel
            )
        except asyncio.CancelledError:
            # Phoenix is stopping mid-recovery: leave an honest record, then stop.
            ended = clock.now()
            final = replace(
                recovery,
                status=RecoveryStatus.INTERRUPTED,
                ended_at=ended,
                steps=stopped_steps(progress.steps, ended),
            )
            traffic_before.cancel()
            await asyncio.shield(self._recorder.save_recovery(final))
            raise
        lost = await _requests_lost(platform, service, await traffic_before)
        return await self._finish(
            recovery,
            plan,
            progress.steps,
            ctx,
            down_since,
            ran.cancelled,
            ran.aborted_by,
            lost,
            journaled=progress.journaled,
        )

    async def run_steps(
        self,
        label: str,
        plan: Plan,
        ctx: StepContext,
        progress: StepLog,
        *,
        cancel: asyncio.Event | None = None,
    ) -> StepsRun:
        """Run ``plan``'s steps in order, each written to ``progress`` as it starts and
        ends, within ``RECOVERY_TIMEOUT`` in all; skip the rest after a failure that aborts,
        skip what a condition rules out, and stop at the next step once ``cancel`` is set.
        ``label`` names the run in the log (recoveries and deploys both run here)."""
        clock = self._clock
        deadline = clock.monotonic() + self._limits.recovery_timeout
        ran = StepsRun()
        previous_ok: bool | None = None
        for index, planned in enumerate(plan.steps):
            step = progress.steps[index]
            skip_reason = None
            if cancel is not None and cancel.is_set():
                ran.cancelled = True
                skip_reason = "cancelled"
            elif ran.aborted_by is not None:
                skip_reason = f"not run: step '{ran.aborted_by.name}' {ran.aborted_by.status.value}"
            elif not should_run(planned.condition, previous_ok, self._status_of(ctx.service.name)):
                skip_reason = f"condition {planned.condition.value} not met"
            if skip_reason is not None:
                progress.set(replace(step, status=StepStatus.SKIPPED, detail=skip_reason))
                continue
            progress.set(replace(step, status=StepStatus.RUNNING, started_at=clock.now()))
            await progress.flush()
            done = await self.run_step(label, progress.steps[index], planned, ctx, deadline)
            progress.set(done)
            previous_ok = done.status is StepStatus.COMPLETED
            if not previous_ok and planned.abort_on_failure:
                ran.aborted_by = done
        return ran

    def context_for(self, service: ServiceSpec) -> StepContext:
        """What the steps of one run share (the deployer runs steps with it too)."""
        return StepContext(
            service=service,
            platform=self._platforms.for_service(service),
            verifier=self._verifier,
            clock=self._clock,
            status_of=self._status_of,
        )

    async def run_step(
        self,
        label: str,
        step: Step,
        planned: PlannedStep,
        ctx: StepContext,
        deadline: float,
    ) -> Step:
        """Run one (already recorded as running) step under its timeout, bounded by the
        monotonic ``deadline``; return it finished. ``label`` names the run in the log."""
        clock = self._clock
        remaining = deadline - clock.monotonic()
        timeout = min(planned.timeout, max(remaining, 0.0))
        handler = self._handlers.get(planned.action)
        status, detail = StepStatus.FAILED, ""
        try:
            if handler is None:
                raise PhoenixError(f"no handler for action '{planned.action}'")
            if timeout <= 0:
                raise TimeoutError
            async with asyncio.timeout(timeout + HANDLER_GRACE):
                outcome: StepOutcome = await handler(ctx, planned, timeout)
            if outcome.ok:
                status = StepStatus.COMPLETED
            else:
                status = StepStatus.TIMED_OUT if outcome.timed_out else StepStatus.FAILED
            detail = outcome.detail
            if outcome.timed_out and timeout < planned.timeout:
                limit = self._limits.recovery_timeout
                detail = f"stopped at the recovery timeout ({limit:g}s): {detail}"
        except TimeoutError:
            status = StepStatus.TIMED_OUT
            if timeout < planned.timeout:
                detail = f"stopped at the recovery timeout ({self._limits.recovery_timeout:g}s)"
            else:
                detail = f"did not finish within its {planned.timeout:g}s timeout"
        except ResourceExhaustedError as exc:
            detail = ctx.resource_shortage = f"out of resources: {exc.message}"
        except PhoenixError as exc:
            detail = exc.message
        except Exception as exc:  # a bug must not leave the recovery running forever
            if is_resource_exhaustion(exc):
                detail = ctx.resource_shortage = f"out of resources: {exc}"
            else:
                log.exception("step %s of %s failed unexpectedly", planned.name, label)
                detail = f"internal error: {exc.__class__.__name__}: {exc}"
        log.info(
            "%s step %d %s: %s",
            label,
            step.position,
            status.value,
            detail,
        )
        return replace(step, status=status, ended_at=clock.now(), detail=detail)

    async def _finish(
        self,
        recovery: Recovery,
        plan: Plan,
        steps: list[Step],
        ctx: StepContext,
        down_since: datetime | None,
        cancelled: bool,
        aborted_by: Step | None,
        requests_lost: int | None,
        *,
        journaled: bool,
    ) -> Recovery:
        ended = self._clock.now()
        if cancelled:
            status, outcome = RecoveryStatus.CANCELLED, Outcome.FAILURE
        elif aborted_by is None and ctx.verified_at is not None:
            status, outcome = RecoveryStatus.COMPLETED, Outcome.SUCCESS
        elif aborted_by is None and not plan.requires_verification:
            status, outcome = RecoveryStatus.COMPLETED, Outcome.PARTIAL
        else:
            status, outcome = RecoveryStatus.FAILED, Outcome.FAILURE
        down_from = down_since or ctx.down_since
        up_at = (ctx.back_at or ctx.verified_at) if outcome is Outcome.SUCCESS else ended
        downtime = 0.0
        if down_from is not None and up_at is not None:
            downtime = max(0.0, (up_at - down_from).total_seconds())
        reason, shortage = recovery.reason, None
        if ctx.resource_shortage is not None and status is RecoveryStatus.FAILED:
            # Not the strategy's failure: recorded as cancelled (no attempt, no evidence for
            # learning), and the orchestrator tries again once the machine has recovered.
            status, shortage = RecoveryStatus.CANCELLED, ctx.resource_shortage
            reason = f"{reason}; {shortage}: tried again later, not counted as an attempt"
        final = replace(
            recovery,
            status=status,
            outcome=outcome,
            ended_at=ended,
            reason=reason,
            resource_shortage=shortage,
            steps=tuple(steps),
            metrics=RecoveryMetrics(
                downtime=round(downtime, 3),
                requests_lost=requests_lost,
                data_integrity=ctx.integrity or DataIntegrity.UNVERIFIED,
            ),
        )
        await self._record(final, journaled=journaled)
        return final

    async def _record(self, final: Recovery, *, journaled: bool) -> None:
        """The finished record: to the journal if the run's record is there already or the
        database refuses it now (the recovery happened either way); without a journal,
        retried for a while, then the error."""
        if self._journal is None:
            await durably(lambda: self._recorder.save_recovery(final), self._clock)
            return
        if not journaled:
            try:
                await self._recorder.save_recovery(final)
                return
            except UnavailableError as exc:
                log.warning("%s: recording later (%s)", final.id, exc.message)
        self._journal.keep(final)
