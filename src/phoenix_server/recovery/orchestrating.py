"""The orchestrator: from a health transition (or an operator's trigger) to finished recoveries.

It owns the safety rules of one Phoenix: one recovery per service at a time (a second
trigger is a conflict unless forced), a global limit on concurrent recoveries, and up to
``MAX_RECOVERY_ATTEMPTS`` attempts per incident with a backoff between them. Each attempt
is its own :class:`Recovery` sharing the incident's id. Transitions arrive through
:meth:`Orchestrator.on_transition` (a plain callback) and are handled in order by one
dispatcher task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime

from phoenix_server.detection.classifying import Diagnosis, diagnose_status, diagnose_transition
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain import ids
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import RecoveryInProgressError
from phoenix_server.domain.health import HealthTransition, ServiceStatus
from phoenix_server.domain.incidents import Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.recoveries import (
    Decision,
    DecisionSource,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.platforms.base import PlatformRegistry
from phoenix_server.recovery.executing import Executor
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.selecting import decide
from phoenix_server.recovery.strategies import DEFAULT_ESTIMATES, PLANNERS
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")

DURATIONS_KEPT = 20
"""Successful recoveries per (service, strategy) behind ``estimatedDuration``."""


@dataclass(frozen=True)
class RecoveryPolicy:
    auto_recovery: bool
    """Recover on detected failures; when False only operators' triggers act."""
    max_attempts: int
    """Attempts per incident (``MAX_RECOVERY_ATTEMPTS``)."""
    max_concurrent: int
    """Recoveries running at once across all services."""


@dataclass
class _Run:
    """The recovery work for one service: its current attempt and how to stop it."""

    service: ServiceSpec
    incident: Incident
    recovery: Recovery
    unwritten_incident: Incident | None = None
    """A just-detected incident, recorded with the first attempt's first write."""
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Orchestrator:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        executor: Executor,
        recorder: RecoveryRecorder,
        clock: Clock,
        policy: RecoveryPolicy,
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._tracker = tracker
        self._executor = executor
        self._recorder = recorder
        self._clock = clock
        self._policy = policy
        self._recovered_at: dict[str, float] = {}
        """Monotonic time each service last came back healthy from a recovery."""
        self._quick_failures: dict[str, int] = {}
        """Failures in a row that came sooner than ``reset_after`` after a recovery."""
        self._slots = asyncio.Semaphore(policy.max_concurrent)
        self._runs: dict[str, _Run] = {}
        self._incidents: dict[str, Incident] = {}
        """Per service, the latest incident not yet resolved."""
        self._durations: dict[tuple[str, Strategy], list[float]] = {}
        """Recent successful durations per (service, strategy), for estimates without I/O."""
        self._queue: asyncio.Queue[HealthTransition] = asyncio.Queue()
        self._tasks = SupervisedTasks("recovery")

    # -- lifecycle --------------------------------------------------------------------------

    def start(
        self,
        unresolved: list[Incident],
        durations: dict[tuple[str, Strategy], list[float]],
    ) -> None:
        """Begin handling transitions. ``unresolved``: incidents a previous run left open;
        ``durations``: recent successful recovery durations, newest first (for estimates)."""
        self._durations = {key: list(values[:DURATIONS_KEPT]) for key, values in durations.items()}
        for incident in unresolved:
            if incident.service in self._catalog:
                self._incidents[incident.service] = incident
        self._tasks.spawn(self._dispatch(), name="dispatcher")

    async def close(self) -> None:
        """Stop: running recoveries are cancelled where they stand and recorded as interrupted."""
        await self._tasks.close(timeout=10.0)
        self._runs.clear()

    def on_transition(self, transition: HealthTransition) -> None:
        if transition.service in self._runs:
            return  # a running recovery causes (and judges) its own transitions
        self._queue.put_nowait(transition)

    async def drain(self) -> None:
        """Wait until every transition received so far has been handled (for tests, shutdown)."""
        await self._queue.join()

    # -- queries ----------------------------------------------------------------------------

    def active_count(self) -> int:
        return len(self._runs)

    def active_recovery(self, service: str) -> Recovery | None:
        run = self._runs.get(service)
        return run.recovery if run else None

    # -- automatic path ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            transition = await self._queue.get()
            try:
                await self._handle(transition)
            except Exception:
                log.exception(
                    "could not handle %s becoming %s", transition.service, transition.current
                )
            finally:
                self._queue.task_done()

    async def _handle(self, transition: HealthTransition) -> None:
        name = transition.service
        if name in self._runs or name not in self._catalog:
            return
        # Act on the status *now*: the transition may have waited behind a recovery that has
        # since changed everything; it remains the evidence of what was seen.
        current = self._tracker.status(name)
        incident = self._incidents.get(name)
        if current.serving:
            if incident is not None:
                await self._close_incident(
                    incident, IncidentStatus.RESOLVED, f"healthy again: {transition.reason}"
                )
            return
        if (
            current is not ServiceStatus.UNHEALTHY
            or transition.current is not ServiceStatus.UNHEALTHY
        ):
            return
        if incident is not None and incident.status is IncidentStatus.UNRESOLVED:
            return  # Phoenix gave up on this one; a person (or a healthy spell) must come first
        unwritten = None
        if incident is None:
            incident = self._make_incident(
                name, diagnose_transition(transition), transition.at, IncidentSource.DETECTED
            )
            self._incidents[name] = incident
            unwritten = incident
            log.warning(
                "%s: incident %s %s: %s",
                name,
                incident.id,
                incident.failure_type.value,
                incident.summary,
            )
        spec = self._catalog.get(name)
        supported = self._platforms.for_service(spec).supported_strategies(spec)
        if not self._policy.auto_recovery or not supported:
            if unwritten is not None:
                await self._recorder.save_incident(incident)
            if not self._policy.auto_recovery:
                log.warning("%s: automatic recovery is off; recorded only", name)
            else:
                await self._close_incident(
                    incident,
                    IncidentStatus.UNRESOLVED,
                    "Phoenix can only monitor this service",
                )
            return
        decision = decide(service=name, failure_type=incident.failure_type, supported=supported)
        delay = self._crash_loop_delay(spec)
        reason = incident.summary
        if delay:
            reason += (
                f"; failed again within {spec.recovery.backoff.reset_after:g}s of its last "
                f"recovery: waiting {delay:g}s first (crash-loop backoff)"
            )
        recovery = self._new_recovery(
            spec, incident, decision, RecoveryTrigger.AUTOMATIC, reason, attempt=1
        )
        if delay or self._slots.locked():
            # It must wait: record it (and its incident) as pending now.
            await self._recorder.save_recovery(recovery, incident=unwritten)
            unwritten = None
        run = _Run(spec, incident, recovery, unwritten_incident=unwritten)
        self._begin(run, previous=None, down_since=incident.detected_at, delay=delay)

    # -- manual path ------------------------------------------------------------------------

    async def trigger(
        self,
        *,
        service: str,
        strategy: Strategy | None,
        reason: str,
        force: bool,
        trigger: RecoveryTrigger = RecoveryTrigger.MANUAL,
    ) -> Recovery:
        """Start a recovery now; refuse (409) if one runs unless ``force`` replaces it."""
        spec = self._catalog.get(service)
        supported = self._platforms.for_service(spec).supported_strategies(spec)
        previous = self._runs.get(service)
        if previous is not None and not force:
            raise RecoveryInProgressError(service, previous.recovery.id)
        view = self._tracker.view(service)
        known = self._incidents.get(service)
        if known is None:
            diagnosis = diagnose_status(view.status, view.reason)
            incident = self._make_incident(
                service, diagnosis, self._clock.now(), IncidentSource.MANUAL
            )
        else:
            incident = replace(known, status=IncidentStatus.OPEN)
        decision = decide(
            service=service,
            failure_type=incident.failure_type,
            supported=supported,
            requested=strategy,
        )
        # Claim the service before the first await, so concurrent triggers see the claim.
        recovery = self._recovery_record(spec, incident, decision, trigger, reason, 1, force)
        if previous is None and not self._slots.locked():
            # It starts as soon as this call returns; say so (the seed answers in_progress).
            recovery = replace(
                recovery, status=RecoveryStatus.IN_PROGRESS, started_at=recovery.created_at
            )
        run = _Run(spec, incident, recovery)
        self._runs[service] = run
        if previous is not None:
            previous.cancel.set()
        try:
            if known is None or known.status is not IncidentStatus.OPEN:
                await self._recorder.save_incident(incident)
                self._incidents[service] = incident
            recovery = replace(
                recovery, estimated_duration=self._estimate(service, decision.strategy)
            )
            run.recovery = recovery
            await self._recorder.save_recovery(recovery)
        except BaseException:
            if self._runs.get(service) is run:
                del self._runs[service]
            raise
        down_since = incident.detected_at if not view.status.serving else None
        self._begin(run, previous=previous, down_since=down_since, registered=True)
        return recovery

    # -- running ----------------------------------------------------------------------------

    def _crash_loop_delay(self, spec: ServiceSpec) -> float:
        """API.md's crash semantics: the first recovery after a healthy run is immediate; a
        service that fails again sooner than ``reset_after`` waits, doubling each time."""
        backoff = spec.recovery.backoff
        recovered_at = self._recovered_at.get(spec.name)
        if recovered_at is None or self._clock.monotonic() - recovered_at >= backoff.reset_after:
            self._quick_failures[spec.name] = 0
            return 0.0
        count = self._quick_failures[spec.name] = self._quick_failures.get(spec.name, 0) + 1
        return float(min(backoff.max, backoff.initial * 2 ** (count - 1)))

    def _begin(
        self,
        run: _Run,
        *,
        previous: _Run | None,
        down_since: datetime | None,
        registered: bool = False,
        delay: float = 0.0,
    ) -> None:
        if not registered:
            self._runs[run.service.name] = run
        self._tasks.spawn(self._attempts(run, previous, down_since, delay), name=run.service.name)

    async def _attempts(
        self, run: _Run, previous: _Run | None, down_since: datetime | None, delay: float
    ) -> None:
        name = run.service.name
        try:
            if previous is not None:
                await previous.done.wait()
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.cancel.wait(), delay)
            attempt = run.recovery.attempt
            while True:
                if run.cancel.is_set():
                    await self._cancel_unstarted(run)
                    return
                async with self._slots:
                    plan = PLANNERS[run.recovery.strategy](run.service)
                    result = await self._executor.execute(
                        run.recovery,
                        run.service,
                        plan,
                        cancel=run.cancel,
                        down_since=down_since,
                        new_incident=run.unwritten_incident,
                    )
                    run.unwritten_incident = None
                run.recovery = result
                if result.status is RecoveryStatus.COMPLETED:
                    self._remember_duration(result)
                    self._recovered_at[name] = self._clock.monotonic()
                    await self._close_incident(
                        run.incident,
                        IncidentStatus.RESOLVED,
                        f"recovered by {result.strategy.value} ({result.id})",
                    )
                    return
                if result.status is RecoveryStatus.CANCELLED:
                    return
                if attempt >= self._policy.max_attempts:
                    log.error(
                        "%s: giving up after %d attempt(s); last: %s", name, attempt, result.id
                    )
                    await self._close_incident(
                        run.incident,
                        IncidentStatus.UNRESOLVED,
                        f"gave up after {attempt} recovery attempt(s); last {result.id}",
                    )
                    return
                delay = self._backoff(run.service, attempt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.cancel.wait(), delay)
                if run.cancel.is_set():
                    return
                attempt += 1
                spec = run.service
                supported = self._platforms.for_service(spec).supported_strategies(spec)
                decision = decide(
                    service=name,
                    failure_type=run.incident.failure_type,
                    supported=supported,
                    requested=result.strategy
                    if result.decision.source is DecisionSource.MANUAL
                    else None,
                )
                run.recovery = self._new_recovery(
                    spec, run.incident, decision, result.trigger, result.reason, attempt
                )
                if self._slots.locked():
                    await self._recorder.save_recovery(run.recovery)
        finally:
            run.done.set()
            if self._runs.get(name) is run:
                del self._runs[name]

    def _backoff(self, service: ServiceSpec, attempt: int) -> float:
        backoff = service.recovery.backoff
        return float(min(backoff.max, backoff.initial * 2 ** (attempt - 1)))

    async def _cancel_unstarted(self, run: _Run) -> None:
        run.recovery = replace(
            run.recovery, status=RecoveryStatus.CANCELLED, ended_at=self._clock.now()
        )
        await self._recorder.save_recovery(run.recovery)

    # -- records ----------------------------------------------------------------------------

    def _make_incident(
        self, service: str, diagnosis: Diagnosis, at: datetime, source: IncidentSource
    ) -> Incident:
        return Incident(
            id=ids.new_id(ids.INCIDENT),
            service=service,
            failure_type=diagnosis.failure_type,
            status=IncidentStatus.OPEN,
            detected_at=at,
            source=source,
            summary=diagnosis.summary,
            evidence=diagnosis.evidence,
        )

    async def _close_incident(
        self, incident: Incident, status: IncidentStatus, summary: str
    ) -> None:
        closed = replace(
            incident,
            status=status,
            resolved_at=self._clock.now() if status is IncidentStatus.RESOLVED else None,
            summary=f"{incident.summary}; {summary}",
        )
        if status is IncidentStatus.RESOLVED:
            current = self._incidents.get(incident.service)
            if current is not None and current.id == incident.id:
                del self._incidents[incident.service]
        else:
            self._incidents[incident.service] = closed
        await self._recorder.save_incident(closed)

    def _recovery_record(
        self,
        spec: ServiceSpec,
        incident: Incident,
        decision: Decision,
        trigger: RecoveryTrigger,
        reason: str,
        attempt: int,
        force: bool = False,
    ) -> Recovery:
        return Recovery(
            id=ids.new_id(ids.RECOVERY),
            service=spec.name,
            strategy=decision.strategy,
            status=RecoveryStatus.PENDING,
            trigger=trigger,
            decision=decision,
            created_at=self._clock.now(),
            reason=reason,
            incident_id=incident.id,
            attempt=attempt,
            force=force,
        )

    def _new_recovery(
        self,
        spec: ServiceSpec,
        incident: Incident,
        decision: Decision,
        trigger: RecoveryTrigger,
        reason: str,
        attempt: int,
    ) -> Recovery:
        """The next attempt's record (written by the caller or by the executor's first write)."""
        recovery = self._recovery_record(spec, incident, decision, trigger, reason, attempt)
        return replace(recovery, estimated_duration=self._estimate(spec.name, decision.strategy))

    def _estimate(self, service: str, strategy: Strategy) -> float:
        """Median of this service's recent successful recoveries by ``strategy``, else a default."""
        durations = self._durations.get((service, strategy))
        if durations:
            return round(statistics.median(durations), 3)
        return DEFAULT_ESTIMATES[strategy]

    def _remember_duration(self, recovery: Recovery) -> None:
        if recovery.duration is not None:
            durations = self._durations.setdefault((recovery.service, recovery.strategy), [])
            durations.insert(0, recovery.duration)
            del durations[DURATIONS_KEPT:]
