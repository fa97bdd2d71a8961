"""The orchestrator: from a service's health (or an operator's trigger) to finished recoveries.

It is *level-triggered*: health transitions only wake it up; what it acts on is the service's
status when it looks, and it looks again whenever a recovery of that service ends, whenever
a deploy or scale-in releases it, and periodically, so a failure that happens while a
recovery finishes, or while the database is away, is not lost.

It keeps the queue and the dispatch, and puts the parts together:

- the **claims** (``claims``): one activity per service at a time, with the budgets, the
  crash-loop backoff and the fleet floor behind them;
- the **intake** (``intake``): opens, joins, waits on and closes incidents — from health
  transitions, operators' triggers and reports — and decides whether and how to act;
- the **attempts** (``attempts``): carry a claimed recovery through its attempts to a
  verdict that has held, escalating, retrying or giving up;
- the **cases** (``cases``): the per-service state both of them work on.

Each attempt is its own :class:`Recovery` sharing the incident's id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.health import HealthTransition
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.learning import AttemptOutcome
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import Recovery, RecoveryTrigger, Strategy
from phoenix_server.domain.reports import FailureReport, ReportResult
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.platforms.base import PlatformRegistry
from phoenix_server.recovery.alerting import Alerter
from phoenix_server.recovery.attempts import Attempts
from phoenix_server.recovery.cases import Cases
from phoenix_server.recovery.claims import Activity, Claim, Claims
from phoenix_server.recovery.estimating import DurationEstimates
from phoenix_server.recovery.executing import Executor
from phoenix_server.recovery.intake import Intake, IntakeLimits
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.means import Means
from phoenix_server.recovery.observing import NoObserver, RecoveryObserver
from phoenix_server.recovery.persisting import EventualWrites
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.versions import VersionKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")

TRIGGER_CHECK = 1.0
"""Seconds between looks at playbook triggers on signals."""


@dataclass(frozen=True)
class OrchestratorLimits:
    auto_recovery: bool
    """Recover on detected failures; when False only operators' triggers act."""
    max_attempts: int
    """Attempts per incident (``MAX_RECOVERY_ATTEMPTS``)."""
    max_concurrent: int
    """Recoveries running at once across all services."""
    recheck_interval: float = 5.0
    """Seconds between sweeps for unhealthy services nothing is recovering."""
    alert_grace: float = 120.0
    """Seconds after a recovery the alert that reported the failure may still fire on its
    way to resolving; a copy still firing later says the recovery did not fix it."""
    try_again_after: float = 30.0
    """Seconds after giving up on a service that is still failing before Phoenix tries
    again (if its budget allows)."""


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
        limits: OrchestratorLimits,
        claims: Claims,
        versions: VersionKeeper,
        observer: RecoveryObserver | None = None,
        alerter: Alerter | None = None,
        learning: LearnedPolicy | None = None,
    ) -> None:
        self._catalog = catalog
        self._clock = clock
        self._limits = limits
        self.learning = learning or LearnedPolicy()
        """What recorded outcomes say about each strategy (read by the API)."""
        self._claims = claims
        claims.on_release(self._on_release)
        self._queue: asyncio.Queue[tuple[str, HealthTransition | None]] = asyncio.Queue()
        self._tasks = SupervisedTasks("recovery")
        self._writes = EventualWrites(recorder, self._tasks)
        executor.use_journal(self._writes)
        self._means = Means(platforms, versions)
        self._cases = Cases(clock, self._writes)
        self._attempts = Attempts(
            catalog=catalog,
            platforms=platforms,
            tracker=tracker,
            executor=executor,
            recorder=recorder,
            clock=clock,
            claims=claims,
            cases=self._cases,
            means=self._means,
            versions=versions,
            learning=self.learning,
            observer=observer or NoObserver(),
            alerter=alerter,
            tasks=self._tasks,
            max_attempts=limits.max_attempts,
            max_concurrent=limits.max_concurrent,
            look_again=self._look_again,
        )
        self._intake = Intake(
            catalog=catalog,
            tracker=tracker,
            recorder=recorder,
            clock=clock,
            limits=IntakeLimits(
                auto_recovery=limits.auto_recovery,
                alert_grace=limits.alert_grace,
                try_again_after=limits.try_again_after,
            ),
            claims=claims,
            cases=self._cases,
            means=self._means,
            attempts=self._attempts,
            learning=self.learning,
            alerter=alerter,
            tasks=self._tasks,
            wake=self._look_again,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(
        self,
        unresolved: list[Incident],
        durations: dict[tuple[str, Strategy], list[float]],
        outcomes: list[AttemptOutcome] | None = None,
    ) -> None:
        """Begin. ``unresolved``: incidents a previous run left open; ``durations``: recent
        successful recovery durations, newest first (for estimates); ``outcomes``: recorded
        attempts the learned policy starts from."""
        self._cases.estimates = DurationEstimates(durations)
        self.learning.load(outcomes or [])
        for incident in unresolved:
            if incident.service in self._catalog:
                self._cases.incidents[incident.service] = incident
        self._tasks.keep_running(self._dispatch, name="dispatcher")
        self._tasks.keep_running(self._sweep, name="sweeper")
        self._tasks.keep_running(self._watch_triggers, name="playbook-triggers")

    async def close(self) -> None:
        """Stop: running recoveries are cancelled where they stand and recorded as interrupted."""
        await self._tasks.close(timeout=10.0)
        self._cases.runs.clear()
        # What the cancelled tasks were writing (an incident just closed, a recovery just
        # judged) and what waited for the database: acknowledged, so not to be lost.
        await self._writes.flush(timeout=5.0)

    def take_over(self, service: str, unresolved: list[Incident]) -> None:
        """This replica owns ``service`` from now (several replicas): the incident its
        previous owner left open, if any, is carried on here, and the service is looked at
        afresh (its recoveries left in progress were closed as interrupted)."""
        self._writes.forget_service(service)
        for incident in unresolved:
            if incident.service == service:
                self._cases.incidents[service] = incident
        self._look_again(service)

    def let_go(self, service: str) -> None:
        """Another replica owns ``service`` now, or will within the rest of the lease: its
        case leaves this one. A recovery running here stops where it is — in the middle of a
        step, not at its end, since the new owner may act on the service as soon as the
        lease runs out — and the database refuses whatever it still tries to record (the
        new owner closes it as interrupted)."""
        run = self._cases.runs.get(service)
        if run is not None:
            run.cancel.set()
            self._tasks.cancel_named(service)
        # A recovery proving itself here is proven (or not) by the new owner, not here.
        self._tasks.cancel_named(f"stable-{service}")
        self._cases.incidents.pop(service, None)
        self._cases.stabilising.pop(service, None)
        self._cases.gave_up_at.pop(service, None)
        self._cases.last_fixed.pop(service, None)

    def on_transition(self, transition: HealthTransition) -> None:
        self._queue.put_nowait((transition.service, transition))

    def set_playbooks(self, playbooks: list[Playbook]) -> None:
        """The playbooks that may answer failures from now on (refreshed by the runtime)."""
        self._intake.set_playbooks(playbooks)

    def remember_successes(self, ended: Mapping[str, tuple[datetime, str]]) -> None:
        """When each service's latest successful recovery ended, and which it was, as
        recorded (at start)."""
        self._intake.reported.remember_successes(ended)

    # -- the queue --------------------------------------------------------------------------

    def _look_again(self, name: str) -> None:
        self._queue.put_nowait((name, None))

    def _on_release(self, claim: Claim) -> None:
        if claim.activity is not Activity.RECOVERY:
            self._look_again(claim.service)  # a deploy or scale-in ended: nothing holds it

    async def _dispatch(self) -> None:
        while True:
            name, transition = await self._queue.get()
            try:
                await self._intake.evaluate(name, transition)
            except Exception:
                # The sweep looks again; a database blip must not lose the failure.
                log.exception("could not act on %s's status; will look again", name)
            finally:
                self._queue.task_done()

    async def _sweep(self) -> None:
        while True:
            await self._clock.sleep(self._limits.recheck_interval)
            self._intake.check_fleet_floor()  # resumes even when no transition comes
            for spec in self._catalog:
                if spec.name not in self._cases.runs and self._intake.needs_attention(spec.name):
                    self._look_again(spec.name)

    async def _watch_triggers(self) -> None:
        while True:
            await self._clock.sleep(TRIGGER_CHECK)
            await self._intake.fire_signal_triggers()

    async def evaluate(self, name: str) -> None:
        """Look at ``name`` now, as the periodic sweep does."""
        await self._intake.evaluate(name, None)

    # -- operations -------------------------------------------------------------------------

    async def trigger(
        self,
        *,
        service: str,
        strategy: Strategy | None,
        reason: str,
        force: bool,
        trigger: RecoveryTrigger = RecoveryTrigger.MANUAL,
        policy_reason: str | None = None,
        rollback_to: str | None = None,
        playbook: Playbook | None = None,
    ) -> Recovery:
        """Start a recovery now (see :meth:`Intake.trigger`)."""
        return await self._intake.trigger(
            service=service,
            strategy=strategy,
            reason=reason,
            force=force,
            trigger=trigger,
            policy_reason=policy_reason,
            rollback_to=rollback_to,
            playbook=playbook,
        )

    async def open_reported(self, report: FailureReport, *, repeated: bool = False) -> ReportResult:
        return await self._intake.reported.open_reported(report, repeated=repeated)

    async def still_firing(self, report: FailureReport, incident_id: str) -> ReportResult | None:
        return await self._intake.reported.still_firing(report, incident_id)

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult:
        return await self._intake.reported.close_reported(service, incident_id, why)

    # -- views ------------------------------------------------------------------------------

    @property
    def claims(self) -> Claims:
        """Who is changing each service (deploys and scale-ins claim through it too)."""
        return self._claims

    def busy(self, service: str) -> bool:
        """A recovery, deploy or scale-in of ``service`` is running (or waiting to)."""
        return self._claims.holder(service) is not None

    def engaged(self, service: str) -> bool:
        """Busy, or a recovery of it is proving itself, or an incident of it is open: with
        several replicas, a service this replica must not hand over now."""
        cases = self._cases
        return self.busy(service) or service in cases.stabilising or service in cases.incidents

    def engaged_services(self) -> set[str]:
        """Every service :meth:`engaged` says is (a few at a time: no walk over the fleet)."""
        cases = self._cases
        return self._claims.held() | set(cases.stabilising) | set(cases.incidents)

    def supported(self, spec: ServiceSpec) -> frozenset[Strategy]:
        """What can be done for ``spec`` now."""
        return self._means.supported(spec)

    def unavailable_reason(self, spec: ServiceSpec, strategy: Strategy) -> str:
        return self._means.unavailable_reason(spec, strategy)

    @property
    def fleet_pause(self) -> str | None:
        """Why automatic recovery is paused by the fleet floor, while it is."""
        return self._claims.fleet_pause

    def report_waiting(self, service: str) -> bool:
        """Whether a report about ``service`` waits to be acted on (a hold or a pause)."""
        return self._intake.report_waiting(service)

    def open_incident_id(self, service: str) -> str | None:
        """The service's incident not yet resolved (open, or given up on), if any."""
        incident = self._cases.incidents.get(service)
        return incident.id if incident is not None else None

    def active_count(self) -> int:
        return len(self._cases.runs)

    def active_recovery(self, service: str) -> Recovery | None:
        run = self._cases.runs.get(service)
        return run.recovery if run else None

    def unresolved_incidents(self) -> list[Incident]:
        """The incidents not yet resolved: open, or given up on (a person must act)."""
        return list(self._cases.incidents.values())

    def budget_remaining(self, service: str) -> int:
        """Automatic attempts ``service``'s recovery budget still allows in its window."""
        return self._claims.budget_remaining(self._catalog.get(service))

    def unsettled_ids(self) -> set[str]:
        """Recoveries whose recorded verdict may still change: succeeded but not yet held for
        their stabilisation period (a relapse turns them into failures), or whose latest
        state has not reached the database yet."""
        return {watch.result.id for watch in self._cases.stabilising.values()} | (
            self._writes.unwritten_ids()
        )

    @property
    def tasks(self) -> SupervisedTasks:
        """Its background tasks (their deaths are reported by /health)."""
        return self._tasks

    @property
    def dropped(self) -> int:
        """Records dropped because the database refused them for too long."""
        return self._writes.dropped

    @property
    def unwritten(self) -> int:
        """Records still waiting for the database."""
        return self._writes.pending
