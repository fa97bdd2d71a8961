"""The orchestrator: from a service's health (or an operator's trigger) to finished recoveries.

It is *level-triggered*: health transitions only wake it up; what it acts on is the service's
status when it looks, and it looks again whenever a recovery of that service ends and
periodically, so a failure that happens while a recovery finishes, or while the database
is away, is not lost.

It owns the safety rules of one Phoenix: one recovery per service at a time (a second
trigger is a conflict unless forced; the service is claimed before any await), a global
limit on concurrent recoveries, up to ``MAX_RECOVERY_ATTEMPTS`` attempts per incident with
a backoff between them, and crash-loop backoff for a service that fails again soon after a
recovery. Each attempt is its own :class:`Recovery` sharing the incident's id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from phoenix_server.detection.classifying import Diagnosis, cascading, diagnose, diagnose_status
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain import ids
from phoenix_server.domain.alerts import AlertKind
from phoenix_server.domain.clock import Clock, sleep_unless
from phoenix_server.domain.deployments import (
    Deployment,
    DeploymentReason,
    DeploymentStatus,
    no_rollback_reason,
)
from phoenix_server.domain.errors import (
    ConflictError,
    Problem,
    RecoveryInProgressError,
    UnavailableError,
    UnsupportedStrategyError,
)
from phoenix_server.domain.health import HealthTransition, ServiceStatus
from phoenix_server.domain.incidents import (
    FailureType,
    Incident,
    IncidentSource,
    IncidentStatus,
)
from phoenix_server.domain.learning import AttemptOutcome, outcome_of
from phoenix_server.domain.playbooks import Playbook, PlaybookStatus, TriggerType
from phoenix_server.domain.recoveries import (
    Decision,
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin, ReportResult
from phoenix_server.domain.services import Instance, ServiceCatalog, ServiceSpec
from phoenix_server.platforms.base import PlatformRegistry
from phoenix_server.recovery.alerting import Alerter
from phoenix_server.recovery.claims import Activity, Claim, Claims
from phoenix_server.recovery.deciding import DecisionInput, decide
from phoenix_server.recovery.estimating import DurationEstimates
from phoenix_server.recovery.executing import Executor
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.observing import NoObserver, RecoveryObserver
from phoenix_server.recovery.persisting import EventualWrites
from phoenix_server.recovery.playbook_choice import choose, describe_trigger
from phoenix_server.recovery.playbook_runs import plan_playbook
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.reports import KEY_EVIDENCE
from phoenix_server.recovery.strategies import PLANNERS, PlanInput
from phoenix_server.recovery.versions import VersionKeeper
from phoenix_server.support.tasks import SupervisedTasks
from phoenix_server.support.timefmt import iso_ms

log = logging.getLogger("phoenix.recovery")


def _tried(run: _Run, last: Recovery | None) -> tuple[str, ...]:
    """The strategies tried for the run's incident so far, each once, in order: every alert
    about one incident says the same (``last``: the attempt just ended, if any)."""
    strategies = [*run.failed, *((last.strategy,) if last is not None else ())]
    return tuple(dict.fromkeys(s.value for s in strategies))


def _reported(incident: Incident) -> bool:
    """Someone else reported it: their resolution (or a recovery) closes it, not a healthy
    look from Phoenix's own checks, which may not see what they saw — also once Phoenix has
    given up on it (the reporter still sees the failure until it says otherwise)."""
    return incident.source in (IncidentSource.ALERT, IncidentSource.EVENT)


FAILING = frozenset({ServiceStatus.UNHEALTHY, ServiceStatus.DEGRADED})
REPORTED_SOURCES = frozenset({IncidentSource.ALERT, IncidentSource.EVENT})
RESOURCE_RETRY_FIRST = 1.0
RESOURCE_RETRY_MAX = 30.0
"""Seconds before retrying an attempt that met a machine out of resources (doubling)."""
TRIGGER_CHECK = 1.0
FIRE_COOLDOWN = 60.0
"""Seconds before a playbook that fired on a signal may fire again for the same service
(on top of the crash-loop backoff): a condition that persists is not hammered."""
"""Seconds between looks at playbook triggers on signals."""
FIRED_AS = {
    TriggerType.ERROR_RATE: FailureType.HIGH_ERROR_RATE,
    TriggerType.LATENCY: FailureType.LATENCY_DEGRADATION,
    TriggerType.MEMORY: FailureType.MEMORY_LEAK,
    TriggerType.CPU: FailureType.HIGH_LOAD,
    TriggerType.ANOMALY_SCORE: FailureType.UNKNOWN,
}
"""The failure type an incident opened by a fired trigger is filed under."""
"""Statuses Phoenix acts on: nothing serving, or some replicas failing."""


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
    again (if its budget allows): the cause may have cleared (a machine out of descriptors,
    a dependency back). Level-triggered: a service that stays down is never forgotten."""


@dataclass
class _Stabilising:
    """A verified recovery waiting to have held for its stabilisation period."""

    run: _Run
    result: Recovery
    until: float
    """Monotonic time at which it counts as a success."""


@dataclass
class _Run:
    """The recovery work for one service: its current attempt and how to stop it."""

    service: ServiceSpec
    incident: Incident | None
    """None for an operator's restart of a service that was not failing (maintenance)."""
    recovery: Recovery
    down_since: datetime | None
    delay: float = 0.0
    """Crash-loop backoff to wait before the first attempt."""
    rollback_to: str | None = None
    """The version a rollback goes to, when its requester named it (a failed deploy goes
    back to what ran before); otherwise the newest known-good older version."""
    playbook: Playbook | None = None
    """The playbook its first attempt runs (later attempts follow the default policy)."""
    failed: list[Strategy] = field(default_factory=list)
    """Strategies whose attempts failed for this incident: the next attempt escalates."""
    shortages: int = 0
    """Attempts that met a machine out of resources (retried, not counted)."""
    claim: Claim | None = None
    """Its claim of the service, while it holds it."""
    asked: bool = False
    """Someone asked for it (an operator, or Phoenix after a failed deploy): it runs even if
    the service looks healthy by then, unlike one started by detection."""
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
        limits: OrchestratorLimits,
        claims: Claims,
        versions: VersionKeeper,
        observer: RecoveryObserver | None = None,
        alerter: Alerter | None = None,
        learning: LearnedPolicy | None = None,
    ) -> None:
        self._catalog = catalog
        self.learning = learning or LearnedPolicy()
        """What recorded outcomes say about each strategy (read by the API)."""
        self._alerter = alerter
        self._observer: RecoveryObserver = observer or NoObserver()
        self._versions = versions
        self._platforms = platforms
        self._tracker = tracker
        self._executor = executor
        self._recorder = recorder
        self._clock = clock
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._claims = claims
        claims.on_release(self._on_release)
        self._runs: dict[str, _Run] = {}
        """The recovery holding each service's claim (the claims say who holds the others)."""
        self._giving_time: dict[str, bool] = {}
        """Failing services with dependencies: True while Phoenix gives the dependencies
        time to show a failure (their detection takes that long), False once it has."""
        self._giving_callers_time: dict[str, bool] = {}
        self._playbooks: list[Playbook] = []
        self._fired_at: dict[tuple[str, str], float] = {}
        """When each (service, playbook) last fired on its own: it waits a cooldown."""
        """The active playbooks, as the store had them at the last refresh."""
        self._waiting: dict[str, str] = {}
        """Failing services left alone because a dependency's failure explains theirs."""
        self._incidents: dict[str, Incident] = {}
        """Per service, the latest incident not yet resolved."""
        self._last_fixed: dict[str, tuple[_Run, Recovery]] = {}
        """Per service, its latest recovery of an incident that held (with its run): if the
        report that opened the incident still fires well after it, it did not fix it."""
        self._fixed_until: dict[str, tuple[datetime, str]] = {}
        """Per service, when its latest successful recovery ended (and which it was): a
        report of a failure that began before then is about that fixed failure."""
        self._gave_up_at: dict[str, float] = {}
        """Monotonic time Phoenix gave up on each service it has not recovered since."""
        self._stabilising: dict[str, _Stabilising] = {}
        """Services recovered moments ago, until their recovery has held."""
        self._waiting_reports: dict[str, FailureReport] = {}
        """Reports that wanted a recovery Phoenix could not start yet (a deploy, a fleet
        pause, an operator's restart), per service: acted on when that is over."""
        self._held_for_dependency: set[str] = set()
        """Services whose waiting report waits for a failing dependency."""
        self._dependency_back_at: dict[str, float] = {}
        """Services whose report was dropped because they were healthy once their dependency
        came back (monotonic time): if the report still fires past the grace, it is acted on."""
        self._estimates = DurationEstimates()
        self._queue: asyncio.Queue[tuple[str, HealthTransition | None]] = asyncio.Queue()
        self._tasks = SupervisedTasks("recovery")
        self._writes = EventualWrites(recorder, self._tasks)
        executor.use_journal(self._writes)

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
        self._estimates = DurationEstimates(durations)
        self.learning.load(outcomes or [])
        for incident in unresolved:
            if incident.service in self._catalog:
                self._incidents[incident.service] = incident
        self._tasks.keep_running(self._dispatch, name="dispatcher")
        self._tasks.keep_running(self._sweep, name="sweeper")
        self._tasks.keep_running(self._watch_triggers, name="playbook-triggers")

    async def close(self) -> None:
        """Stop: running recoveries are cancelled where they stand and recorded as interrupted."""
        await self._tasks.close(timeout=10.0)
        self._runs.clear()
        # What the cancelled tasks were writing (an incident just closed, a recovery just
        # judged) and what waited for the database: acknowledged, so not to be lost.
        await self._writes.flush(timeout=5.0)

    def on_transition(self, transition: HealthTransition) -> None:
        self._queue.put_nowait((transition.service, transition))

    # -- claims -----------------------------------------------------------------------------

    @property
    def claims(self) -> Claims:
        """Who is changing each service (deploys and scale-ins claim through it too)."""
        return self._claims

    def busy(self, service: str) -> bool:
        """A recovery, deploy or scale-in of ``service`` is running (or waiting to)."""
        return self._claims.holder(service) is not None

    def _held(self, service: str) -> str | None:
        """What other than a recovery is changing ``service`` (``deployed (dep-…)``)."""
        claim = self._claims.holder(service)
        if claim is None or claim.activity is Activity.RECOVERY:
            return None
        return claim.label

    def _refuse_if_held(self, service: str) -> None:
        activity = self._held(service)
        if activity is not None:
            raise ConflictError(f"service '{service}' is being {activity}; wait for it")

    def _on_release(self, claim: Claim) -> None:
        if claim.activity is not Activity.RECOVERY:
            self._queue.put_nowait((claim.service, None))  # look again: nothing holds it

    def _claim(self, run: _Run, *, replacing: _Run | None = None) -> None:
        """Claim the service for ``run`` (before any await: triggers see it at once)."""
        run.claim = self._claims.claim(
            run.service.name,
            Activity.RECOVERY,
            run.recovery.id,
            replacing=replacing.claim if replacing is not None else None,
        )
        self._runs[run.service.name] = run

    def _unclaim(self, run: _Run, *, back_to: _Run | None = None) -> None:
        """``run`` is over (or never started): the service is free, or ``back_to``'s again."""
        name = run.service.name
        if run.claim is not None:
            self._claims.release(run.claim, back_to=back_to.claim if back_to else None)
        if self._runs.get(name) is run:
            if back_to is not None:
                self._runs[name] = back_to
            else:
                del self._runs[name]

    def supported(self, spec: ServiceSpec) -> frozenset[Strategy]:
        """What can be done for ``spec`` now: the platform's means, and a rollback only
        with a known-good version to go to."""
        supported = self._platforms.for_service(spec).supported_strategies(spec)
        if Strategy.ROLLBACK in supported and self._versions.rollback_target(spec) is None:
            supported -= {Strategy.ROLLBACK}
        return supported

    def unavailable_reason(self, spec: ServiceSpec, strategy: Strategy) -> str:
        reasons = self._platforms.for_service(spec).unavailable_strategies(spec)
        if strategy in reasons:
            return reasons[strategy]
        if strategy is Strategy.ROLLBACK:
            return no_rollback_reason(spec, spec.current_version, self._versions.proven(spec.name))
        return f"service '{spec.name}' cannot use strategy '{strategy.value}' now"

    def set_playbooks(self, playbooks: list[Playbook]) -> None:
        """The playbooks that may answer failures from now on (refreshed by the runtime)."""
        self._playbooks = [p for p in playbooks if p.status is PlaybookStatus.ACTIVE]
        ids = {p.id for p in self._playbooks}
        self._fired_at = {k: v for k, v in self._fired_at.items() if k[1] in ids}

    def _decide(
        self,
        spec: ServiceSpec,
        incident: Incident,
        playbook: Playbook | None,
        why: str = "its trigger matches this failure",
    ) -> Decision:
        """The first attempt's decision for a failure Phoenix acts on by itself (``why``:
        what made ``playbook``, if any, answer it)."""
        return decide(
            DecisionInput(
                service=spec.name,
                failure_type=incident.failure_type,
                supported=self.supported(spec),
                playbook=playbook,
                playbook_why=why,
                learned=self.learning.decide,
            )
        )

    def _matching_playbook(
        self, service: str, incident: Incident, *, alert: str | None = None
    ) -> Playbook | None:
        """The active playbook whose trigger answers this incident now, if any."""
        return choose(
            self._playbooks,
            service,
            incident,
            self._tracker.signals(service),
            self._clock.monotonic(),
            alert=alert,
        )

    # -- queries ----------------------------------------------------------------------------

    def report_waiting(self, service: str) -> bool:
        """Whether a report about ``service`` waits to be acted on (a hold or a pause)."""
        return service in self._waiting_reports

    def active_count(self) -> int:
        return len(self._runs)

    def unresolved_incidents(self) -> list[Incident]:
        """The incidents not yet resolved: open, or given up on (a person must act)."""
        return list(self._incidents.values())

    def budget_remaining(self, service: str) -> int:
        """Automatic attempts ``service``'s recovery budget still allows in its window."""
        return self._claims.budget_remaining(self._catalog.get(service))

    def unsettled_ids(self) -> set[str]:
        """Recoveries whose recorded verdict may still change: succeeded but not yet held for
        their stabilisation period (a relapse turns them into failures), or whose latest
        state has not reached the database yet."""
        return {watch.result.id for watch in self._stabilising.values()} | (
            self._writes.unwritten_ids()
        )

    def active_recovery(self, service: str) -> Recovery | None:
        run = self._runs.get(service)
        return run.recovery if run else None

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

    # -- the automatic path -----------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            name, transition = await self._queue.get()
            try:
                await self._evaluate(name, transition)
            except Exception:
                # The sweep looks again; a database blip must not lose the failure.
                log.exception("could not act on %s's status; will look again", name)
            finally:
                self._queue.task_done()

    async def _sweep(self) -> None:
        while True:
            await self._clock.sleep(self._limits.recheck_interval)
            self._check_fleet_floor()  # resumes even when no transition comes
            for spec in self._catalog:
                if spec.name not in self._runs and self._needs_attention(spec.name):
                    self._queue.put_nowait((spec.name, None))

    async def _watch_triggers(self) -> None:
        """Playbook triggers on signals fire on their own (a playbook may act on an error
        rate the default rules tolerate): once a second, for services nothing acts on."""
        while True:
            await self._clock.sleep(TRIGGER_CHECK)
            if not self._limits.auto_recovery or not self._playbooks or self.fleet_pause:
                continue
            for spec in list(self._catalog):
                name = spec.name
                if self.busy(name) or name in self._incidents:
                    continue
                now = self._clock.monotonic()
                fired = choose(
                    [
                        p
                        for p in self._playbooks
                        if p.triggers_on_signals
                        and now - self._fired_at.get((name, p.id), float("-inf")) >= FIRE_COOLDOWN
                    ],
                    name,
                    None,
                    self._tracker.signals(name),
                    now,
                )
                if fired is None or not self.supported(spec):
                    continue
                self._fired_at[(name, fired.id)] = now
                try:
                    await self._run_fired_playbook(spec, fired)
                except Exception:
                    log.exception("%s: could not start playbook '%s'", name, fired.name)

    async def _run_fired_playbook(self, spec: ServiceSpec, playbook: Playbook) -> None:
        name = spec.name
        kind = FIRED_AS.get(playbook.triggers[0].type, FailureType.UNKNOWN)
        summary = f"playbook '{playbook.name}' triggered: " + ", ".join(
            describe_trigger(t) for t in playbook.triggers
        )
        incident = self._make_incident(name, Diagnosis(kind, summary, ()), IncidentSource.DETECTED)
        decision = self._decide(spec, incident, playbook, "its trigger fired")
        recovery = self._new_recovery(
            spec, incident, decision, RecoveryTrigger.PLAYBOOK, summary, playbook=playbook
        )
        run = _Run(
            spec,
            incident,
            recovery,
            down_since=None,
            playbook=playbook,
            asked=True,
            delay=self._crash_loop_delay(spec),
        )
        await self._start(run, write_incident=True)
        log.warning("%s: incident %s: %s", name, incident.id, summary)

    def _needs_attention(self, name: str) -> bool:
        if name in self._waiting_reports:
            return True
        status = self._tracker.status(name)
        if name in self._stabilising:
            return status in FAILING
        incident = self._incidents.get(name)
        if status is ServiceStatus.HEALTHY:
            self._giving_time.pop(name, None)
            self._giving_callers_time.pop(name, None)
            return incident is not None and not _reported(incident)
        if self._tracker.waiting_on(name) is not None:
            return False
        self._waiting.pop(name, None)
        if status not in FAILING:
            return False
        if incident is not None and incident.status is IncidentStatus.UNRESOLVED:
            return self._may_try_again(name)
        return True

    def _may_try_again(self, name: str) -> bool:
        """Phoenix gave up on ``name``, which is still failing: time to try again? Once
        ``try_again_after`` has passed since, if the service's budget allows."""
        now = self._clock.monotonic()
        since = self._gave_up_at.setdefault(name, now)  # given up before Phoenix started
        if now - since < self._limits.try_again_after:
            return False
        return self._claims.budget_left(self._catalog.get(name))

    async def _evaluate(self, name: str, transition: HealthTransition | None) -> None:
        """Act on ``name``'s status now (``transition``, if any, is the evidence)."""
        if self.busy(name) or name not in self._catalog:
            return  # the run (or deployment) looks again when it ends
        if name in self._waiting_reports and await self._act_on_waiting_report(name):
            return
        view = self._tracker.view(name)
        incident = self._incidents.get(name)
        if name in self._catalog:
            self._claims.note_health(self._catalog.get(name), view.status)
        if name in self._stabilising:
            if view.status in FAILING and self._tracker.waiting_on(name) is None:
                await self._relapse(name)
            return
        if view.status is ServiceStatus.HEALTHY:
            self._giving_time.pop(name, None)
            self._giving_callers_time.pop(name, None)
            self._gave_up_at.pop(name, None)
            if incident is not None and not _reported(incident):
                await self._close_incident(incident, IncidentStatus.RESOLVED, "healthy again")
            return
        if view.status not in FAILING:
            return
        if self._give_dependencies_time(name) or self._give_callers_time(name):
            return
        if self._tracker.port_problem(name) is not None:
            # Another process holds its public port: restarting its instances would not
            # help (they pass their checks); the platform retries the port with backoff.
            return
        dependency = self._tracker.waiting_on(name)
        if dependency is not None:
            # Not its failure: restarting it would not help and would cost its warm state.
            if self._waiting.get(name) != dependency:
                log.warning(
                    "%s: failing, but so is its dependency %s: recovering that first, "
                    "leaving %s alone",
                    name,
                    dependency,
                    name,
                )
            self._waiting[name] = dependency
            return
        self._waiting.pop(name, None)
        reopened = False
        if incident is not None and incident.status is IncidentStatus.UNRESOLVED:
            if not self._may_try_again(name):
                return  # Phoenix gave up on this one a moment ago, or its budget is spent
            del self._gave_up_at[name]
            reopened = True
            again = f"; still failing {self._limits.try_again_after:g}s later: trying again"
            summary = incident.summary if again in incident.summary else incident.summary + again
            incident = replace(incident, status=IncidentStatus.OPEN, summary=summary)
            log.warning("%s: still failing after Phoenix gave up: trying again", name)
        spec = self._catalog.get(name)
        new_incident = incident is None
        if incident is not None and incident.source in REPORTED_SOURCES:
            # Someone reported it (perhaps record-only, perhaps as "unknown"); now Phoenix
            # sees the failure itself: its own evidence decides the type and the strategy.
            incident = self._retyped(incident, diagnose(view, transition))
            reopened = True  # written again with the observed type and evidence
        if incident is None:
            diagnosis = diagnose(view, transition)
            callers = [
                (caller.name, self._tracker.view(caller.name).reason)
                for caller in self._catalog.dependents(name)
                if self._tracker.waiting_on(caller.name) == name
            ]
            if callers:
                diagnosis = cascading(name, diagnosis, callers)
            incident = self._make_incident(name, diagnosis, IncidentSource.DETECTED)
            if callers and self._alerter is not None:
                self._alerter.raise_alert(
                    AlertKind.CASCADING, service=name, text=incident.summary, incident=incident
                )
            log.warning(
                "%s: incident %s %s: %s",
                name,
                incident.id,
                incident.failure_type.value,
                incident.summary,
            )
        supported = self.supported(spec)
        paused = self._check_fleet_floor()
        if not self._limits.auto_recovery or paused or not supported:
            self._incidents[name] = incident
            if not supported:
                await self._close_incident(
                    incident, IncidentStatus.UNRESOLVED, "Phoenix can only monitor this service"
                )
            elif new_incident:
                await self._writes.write(incident)
                why = "automatic recovery is off" if paused is None else paused
                log.warning("%s: %s; recorded only", name, why)
            return
        delay = self._crash_loop_delay(spec)
        reason = incident.summary
        if delay:
            reason += (
                f"; failed again within {spec.recovery.backoff.reset_after:g}s of its last "
                f"recovery: waiting {delay:g}s first (crash-loop backoff)"
            )
        playbook = self._matching_playbook(name, incident)
        decision = self._decide(spec, incident, playbook)
        recovery = self._new_recovery(
            spec, incident, decision, RecoveryTrigger.AUTOMATIC, reason, playbook=playbook
        )
        # Downtime counts from detection only if nothing was serving (not for a degraded one).
        down_since = incident.detected_at if view.status is ServiceStatus.UNHEALTHY else None
        run = _Run(spec, incident, recovery, down_since=down_since, delay=delay, playbook=playbook)
        await self._start(run, write_incident=new_incident or reopened)

    async def _start(self, run: _Run, *, write_incident: bool) -> None:
        """Claim the service for ``run`` (before any await: triggers see it at once), record
        it (with its incident if new), then run it. Nothing stays claimed if the record
        cannot be written, and a forced trigger waiting on this run is let go."""
        name = run.service.name
        assert run.incident is not None
        self._claim(run)
        self._supersede_stabilising(name, run)
        try:
            await self._recorder.save_recovery(
                run.recovery, incident=run.incident if write_incident else None
            )
        except UnavailableError as exc:
            # The data plane comes first: the service is recovered now, and its records
            # wait for the database in the journal (/health says so meanwhile).
            log.warning("%s: recovering without the database for now (%s)", name, exc.message)
            if write_incident:
                self._writes.keep(run.incident)
            self._writes.keep(run.recovery)
        except BaseException:
            run.done.set()
            self._unclaim(run)
            raise
        self._incidents[name] = run.incident
        self._tasks.spawn(self._attempts(run, previous=None), name=name)

    @staticmethod
    def _retyped(incident: Incident, observed: Diagnosis) -> Incident:
        """A reported incident with what Phoenix observed: its type, and its evidence
        added to the report's."""
        if observed.summary in incident.summary:
            return incident
        if incident.failure_type is not observed.failure_type:
            log.warning(
                "%s: incident %s re-typed %s -> %s by what Phoenix observed: %s",
                incident.service,
                incident.id,
                incident.failure_type.value,
                observed.failure_type.value,
                observed.summary,
            )
        return replace(
            incident,
            failure_type=observed.failure_type,
            summary=f"{incident.summary}; observed by Phoenix: {observed.summary}",
            evidence=(*incident.evidence, *observed.evidence),
        )

    def _supersede_stabilising(self, name: str, run: _Run) -> None:
        """Another recovery starts (an operator's, a report's) while the last one is
        still proving itself: that one held until now, so it counts as a success; its
        incident is closed unless the new run carries it on."""
        watch = self._stabilising.pop(name, None)
        if watch is None:
            return
        if run.incident is not None and watch.run.incident is not None:
            if run.incident.id == watch.run.incident.id:
                watch = replace(watch, run=replace(watch.run, incident=None))
        self._tasks.spawn(self._stable(watch), name=f"stable-{name}")

    def _give_dependencies_time(self, name: str) -> bool:
        """A service whose checks fail (no crash) may be failing because a dependency is:
        wait, once per failure, as long as the dependencies need to show it. True: wait."""
        spec = self._catalog.get(name)
        if not spec.depends_on or not self._tracker.failing_checks(name):
            return False
        waiting = self._giving_time.get(name)
        if waiting is None:
            wait = max(self._tracker.detection_time(d) for d in spec.depends_on)
            self._giving_time[name] = True
            self._tasks.spawn(self._look_again(name, wait), name=f"blame-{name}")
            return True
        return waiting

    def _give_callers_time(self, name: str) -> bool:
        """The other way round: a service others depend on, failing its checks, waits (once
        per failure) as long as its callers' checks need to show whether they fail with it:
        then it is the root of a cascade, and is treated as one. True: wait."""
        callers = self._catalog.dependents(name)
        if not callers or not self._tracker.failing_checks(name):
            return False
        waiting = self._giving_callers_time.get(name)
        if waiting is None:
            wait = max(self._tracker.detection_time(c.name) for c in callers)
            self._giving_callers_time[name] = True
            self._tasks.spawn(self._look_again(name, wait, callers=True), name=f"cascade-{name}")
            return True
        return waiting

    async def _look_again(self, name: str, delay: float, *, callers: bool = False) -> None:
        await self._clock.sleep(delay)
        waits = self._giving_callers_time if callers else self._giving_time
        if waits.get(name):
            waits[name] = False
        self._queue.put_nowait((name, None))

    # -- the manual path --------------------------------------------------------------------

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
        """Start a recovery now: recorded before this returns. A running recovery of the
        service is a conflict (409) unless ``force``, which cancels it at its next safe point
        once this one is recorded. ``policy_reason``: Phoenix itself asks for ``strategy``
        (a failed deploy rolls back), and this says why."""
        if playbook is not None and trigger is RecoveryTrigger.MANUAL:
            trigger = RecoveryTrigger.PLAYBOOK  # an operator ran a playbook: say which kind
        spec = self._catalog.get(service)
        supported = self.supported(spec)
        if rollback_to is not None and Strategy.ROLLBACK in (
            self._platforms.for_service(spec).supported_strategies(spec)
        ):
            supported |= {Strategy.ROLLBACK}  # a named version needs no known-good one
        self._refuse_if_held(service)
        if strategy is not None and playbook is None and supported and strategy not in supported:
            message = self.unavailable_reason(spec, strategy)
            raise UnsupportedStrategyError(message, [Problem("strategy", message)])
        previous = self._runs.get(service)
        if previous is not None and not force:
            raise RecoveryInProgressError(service, previous.recovery.id)
        if not force and not self._claims.budget_left(spec):
            raise ConflictError(f"{self._claims.budget_reason(spec)}; force: true overrides it")
        view = self._tracker.view(service)
        diagnosis = diagnose_status(view.status, view.reason)
        known = self._incidents.get(service)
        incident: Incident | None
        if known is not None:
            incident = replace(known, status=IncidentStatus.OPEN)
        elif view.status is ServiceStatus.HEALTHY:
            incident = None  # maintenance: nothing is failing, so no incident
        else:
            incident = self._make_incident(service, diagnosis, IncidentSource.MANUAL)
        failure_type = incident.failure_type if incident else diagnosis.failure_type
        if strategy is None and playbook is None and policy_reason is None and incident:
            # The operator left the choice to Phoenix: playbook > learned > default.
            playbook = self._matching_playbook(service, incident)
        decision = decide(
            DecisionInput(
                service=service,
                failure_type=failure_type,
                supported=supported,
                failing=incident is not None,
                requested=strategy,
                policy_reason=policy_reason,
                playbook=playbook,
                playbook_why="run on request",
                learned=self.learning.decide,
            )
        )
        recovery = self._new_recovery(
            spec, incident, decision, trigger, reason, force=force, playbook=playbook
        )
        if previous is None and not self._slots.locked():
            # It starts as soon as this call returns; say so (the seed answers in_progress).
            recovery = replace(
                recovery, status=RecoveryStatus.IN_PROGRESS, started_at=recovery.created_at
            )
        down_since = incident.detected_at if incident and not view.status.serving else None
        run = _Run(
            spec,
            incident,
            recovery,
            down_since=down_since,
            asked=True,
            rollback_to=rollback_to,
            playbook=playbook,
        )
        self._claim(run, replacing=previous)  # before the first await
        self._supersede_stabilising(service, run)
        try:
            write_incident = incident if incident is not None and incident != known else None
            await self._recorder.save_recovery(recovery, incident=write_incident)
        except BaseException:
            run.done.set()  # a later forced trigger may be waiting on it
            alive = previous is not None and not previous.done.is_set()
            self._unclaim(run, back_to=previous if alive else None)
            raise
        if incident is not None:
            self._incidents[service] = incident
        if previous is not None:
            previous.cancel.set()
        self._tasks.spawn(self._attempts(run, previous), name=service)
        return recovery

    # -- failures reported from outside -----------------------------------------------------

    def open_incident_id(self, service: str) -> str | None:
        """The service's incident not yet resolved (open, or given up on), if any."""
        incident = self._incidents.get(service)
        return incident.id if incident is not None else None

    def remember_successes(self, ended: Mapping[str, tuple[datetime, str]]) -> None:
        """When each service's latest successful recovery ended, and which it was, as
        recorded (at start)."""
        for service, last in ended.items():
            self._fixed_until.setdefault(service, last)

    def _stale(self, report: FailureReport, *, repeated: bool = False) -> str | None:
        """Why ``report`` is about a failure already fixed, if it is: it began before the
        service's latest successful recovery ended. One that began after it is news, even
        if Phoenix's own checks say healthy (they may miss what the alert sees) — and so is
        a ``repeated`` copy still firing ``alert_grace`` after that recovery: the recovery
        did not fix what the reporter sees (or its clock is off)."""
        fixed = self._fixed_until.get(report.service)
        if report.started_at is None or fixed is None:
            return None
        until, recovery = fixed
        if report.started_at >= until:
            return None
        if repeated and (self._clock.now() - until).total_seconds() >= self._limits.alert_grace:
            return None
        return (
            f"stale: it started at {iso_ms(report.started_at)}, before {recovery} "
            f"ended at {iso_ms(until)}; that failure is fixed"
        )

    async def open_reported(self, report: FailureReport, *, repeated: bool = False) -> ReportResult:
        """An incident for a failure someone else saw, recorded before this returns, and a
        recovery for it unless Phoenix must not act now. A service already in trouble gets
        no second incident: the report joins the one it has — and starts its recovery if
        that incident was only recorded so far. A report that wanted action but met a
        deploy or a fleet pause is acted on once that is over."""
        name = report.service
        spec = self._catalog.get(name)
        run = self._runs.get(name)
        if run is not None:
            return ReportResult(
                ReportAction.JOINED,
                f"recovery {run.recovery.id} is already under way",
                service=name,
                incident_id=run.incident.id if run.incident else None,
                recovery_id=run.recovery.id,
            )
        known = self._incidents.get(name)
        watch = self._stabilising.get(name)
        if known is not None and watch is not None:
            # Just recovered, still proving itself: a report of the same failure, say a
            # probe that failed during the restart, is no reason for another; one still
            # firing past the grace fails the recovery (``still_firing``).
            return ReportResult(
                ReportAction.JOINED,
                f"recovery {watch.result.id} verified and is proving itself",
                service=name,
                incident_id=known.id,
                recovery_id=watch.result.id,
            )
        if known is None and (stale := self._stale(report, repeated=repeated)) is not None:
            log.info("%s: report not acted on: %s", name, stale)
            return ReportResult(ReportAction.STALE, stale, service=name)
        new = known is None
        if known is not None and not (
            _reported(known) and report.recover and known.status is IncidentStatus.OPEN
        ):
            why = (
                "Phoenix gave up on this service's incident: a person must act"
                if known.status is IncidentStatus.UNRESOLVED
                else "the service already has an open incident"
            )
            return ReportResult(ReportAction.JOINED, why, service=name, incident_id=known.id)
        if known is None:
            source = (
                IncidentSource.ALERT
                if report.origin is ReportOrigin.ALERTMANAGER
                else IncidentSource.EVENT
            )
            evidence = (*report.evidence, *((KEY_EVIDENCE + report.key,) if report.key else ()))
            diagnosis = Diagnosis(report.failure_type, report.summary, evidence)
            incident = self._make_incident(name, diagnosis, source)
        else:
            incident = known
        why_not, later = self._why_not_act(spec, report)
        self._held_for_dependency.discard(name)
        if why_not is not None:
            if later:
                self._waiting_reports[name] = report
                if self._tracker.waiting_on(name) is not None and self._held(name) is None:
                    self._held_for_dependency.add(name)
            if new:
                self._incidents[name] = incident  # claimed before the await
                try:
                    await self._recorder.save_incident(incident)
                except BaseException:
                    if self._incidents.get(name) is incident:
                        del self._incidents[name]
                    raise
            log.warning("%s: incident %s reported; %s", name, incident.id, why_not)
            action = ReportAction.RECORDED if new else ReportAction.JOINED
            return ReportResult(action, why_not, service=name, incident_id=incident.id)
        self._waiting_reports.pop(name, None)
        recovery = await self._act_on_report(spec, incident, report, write_incident=new)
        return ReportResult(
            ReportAction.RECOVERING if new else ReportAction.JOINED,
            recovery.decision.reason,
            service=name,
            incident_id=incident.id,
            recovery_id=recovery.id,
        )

    async def still_firing(self, report: FailureReport, incident_id: str) -> ReportResult | None:
        """A copy of the report that opened (or joined) ``incident_id`` says the failure is
        still there. Within ``alert_grace`` of the recovery that is the report on its way
        to resolving (None: a plain duplicate). Later, the recovery did not fix what the
        reporter sees, whatever Phoenix's own check says: that attempt failed, and the
        incident goes on with the next, escalated attempt — within the attempts limit and
        the budget, as for any failed attempt. The same for a report that was held for a
        failing dependency: still firing past the grace once it is back, it is acted on.
        A hold, a pause or automatic recovery being off keep it a duplicate."""
        name = report.service
        if name in self._runs:
            return None
        why_not, _later = self._why_not_act(self._catalog.get(name), report)
        if why_not is not None:
            return None  # a plain duplicate: the hold or pause decides, as for a new report
        grace = self._limits.alert_grace
        watch = self._stabilising.get(name)
        if watch is not None:
            if watch.run.incident is None or watch.run.incident.id != incident_id:
                return None
            verified = watch.until - watch.run.service.recovery.stabilisation_period
            waited = self._clock.monotonic() - verified
            if waited < grace:
                return None
            why = f"{report.origin.value} still reports it failing {waited:.0f}s after it verified"
            await self._relapse(name, why)
            return self._carried_on(name, incident_id, why)
        open_now = self._incidents.get(name)
        back = self._dependency_back_at.get(name)
        if open_now is not None and open_now.id == incident_id and back is not None:
            waited = self._clock.monotonic() - back
            if waited < grace:
                return None
            del self._dependency_back_at[name]
            why = (
                f"{report.origin.value} still reports it failing {waited:.0f}s after its "
                "dependency came back"
            )
            log.warning("%s: %s", name, why)
            spec = self._catalog.get(name)
            recovery = await self._act_on_report(spec, open_now, report, write_incident=False)
            return ReportResult(
                ReportAction.JOINED,
                f"{why}: {recovery.decision.reason}",
                service=name,
                incident_id=incident_id,
                recovery_id=recovery.id,
            )
        last = self._last_fixed.get(name)
        if last is None or open_now is not None:
            return None
        run, fixed = last
        if run.incident is None or run.incident.id != incident_id or fixed.ended_at is None:
            return None
        waited = (self._clock.now() - fixed.ended_at).total_seconds()
        if waited < grace:
            return None
        del self._last_fixed[name]
        why = (
            f"{report.origin.value} still reports it failing {waited:.0f}s after "
            f"{fixed.id} ({fixed.strategy.value}) ended"
        )
        log.warning("%s: incident %s reopened: %s", name, incident_id, why)
        incident = replace(
            run.incident,
            status=IncidentStatus.OPEN,
            resolved_at=None,
            summary=f"{run.incident.summary}; reopened: {why}",
        )
        reopened = _Run(
            run.service, incident, fixed, down_since=incident.detected_at, failed=list(run.failed)
        )
        self._incidents[name] = incident
        await self._carry_on(reopened, fixed, failed=fixed, write_incident=True)
        return self._carried_on(name, incident_id, why)

    def _carried_on(self, name: str, incident_id: str, why: str) -> ReportResult:
        run = self._runs.get(name)
        if run is None:
            return ReportResult(
                ReportAction.JOINED,
                f"{why}: the recovery did not fix it; Phoenix gave up (a person must act)",
                service=name,
                incident_id=incident_id,
            )
        return ReportResult(
            ReportAction.JOINED,
            f"{why}: the recovery did not fix it; next attempt {run.recovery.id} "
            f"({run.recovery.strategy.value})",
            service=name,
            incident_id=incident_id,
            recovery_id=run.recovery.id,
        )

    def _why_not_act(self, spec: ServiceSpec, report: FailureReport) -> tuple[str | None, bool]:
        """Why Phoenix does not act on ``report`` now (None: it does), and whether it will
        once that passes."""
        if not self.supported(spec):
            return "Phoenix can only monitor this service", False
        if not report.recover:
            return "the report asks Phoenix not to act", False
        if not self._limits.auto_recovery:
            return "automatic recovery is off", False
        if self._check_fleet_floor():
            return f"{self.fleet_pause}; Phoenix acts on it when the pause ends", True
        held = self._held(spec.name)
        if held is not None:
            return f"{held} under way: Phoenix acts on it when that ends", True
        dependency = self._tracker.waiting_on(spec.name)
        if dependency is not None:
            # The same hold as for a failure Phoenix sees itself: restarting it would not
            # help and would cost its warm state.
            return (
                f"its dependency {dependency} is failing: Phoenix acts on it if it still "
                f"fails once {dependency} is back"
            ), True
        if (problem := self._tracker.port_problem(spec.name)) is not None:
            return f"{problem}: restarting its instances would not help", False
        return None, False

    async def _act_on_report(
        self, spec: ServiceSpec, incident: Incident, report: FailureReport, *, write_incident: bool
    ) -> Recovery:
        name = spec.name
        playbook = self._matching_playbook(name, incident, alert=report.alert_name)
        decision = self._decide(spec, incident, playbook, "its trigger matches this report")
        recovery = self._new_recovery(
            spec, incident, decision, RecoveryTrigger.ALERT, report.summary, playbook=playbook
        )
        run = _Run(
            spec,
            incident,
            recovery,
            down_since=None,
            asked=True,
            playbook=playbook,
            delay=self._crash_loop_delay(spec),  # as for a failure Phoenix sees itself
        )
        await self._start(run, write_incident=write_incident)
        log.warning(
            "%s: incident %s reported by %s; %s (%s)",
            name,
            incident.id,
            report.origin.value,
            decision.strategy.value,
            recovery.id,
        )
        return recovery

    async def _act_on_waiting_report(self, name: str) -> bool:
        """A report that had to wait (a deploy, a fleet pause): act on it now if nothing
        stops that any more. True if a recovery started."""
        report = self._waiting_reports.get(name)
        if report is None or self.busy(name):
            return False
        if self._tracker.waiting_on(name) is not None:
            return False  # its dependency still explains it
        if name in self._held_for_dependency and self._tracker.status(name) not in FAILING:
            # It failed because of its dependency and is healthy again now that it is back:
            # nothing to do (the alert's resolution closes the incident) — unless the report
            # still fires past the grace (``still_firing``).
            del self._waiting_reports[name]
            self._held_for_dependency.discard(name)
            self._dependency_back_at[name] = self._clock.monotonic()
            return False
        del self._waiting_reports[name]
        incident = self._incidents.get(name)
        if incident is None or incident.status is not IncidentStatus.OPEN:
            return False  # resolved meanwhile, or given up on: a person acts
        result = await self.open_reported(report)  # still waiting: it is kept again
        return result.recovery_id is not None

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult:
        """The reporter says the failure is over: close its incident, unless a recovery is
        working on it (the recovery's verdict closes it then)."""
        incident = self._incidents.get(service)
        if incident is None or incident.id != incident_id:
            return ReportResult(ReportAction.IGNORED, f"incident {incident_id} is not open")
        run = self._runs.get(service)
        if run is not None:
            return ReportResult(
                ReportAction.IGNORED,
                f"recovery {run.recovery.id} is under way; its verdict closes the incident",
                service=service,
                incident_id=incident_id,
                recovery_id=run.recovery.id,
            )
        self._waiting_reports.pop(service, None)
        self._held_for_dependency.discard(service)
        self._dependency_back_at.pop(service, None)
        del self._incidents[service]  # before the await: nothing starts on it meanwhile
        closed = replace(
            incident,
            status=IncidentStatus.RESOLVED,
            resolved_at=self._clock.now(),
            summary=f"{incident.summary}; {why}",
        )
        await self._writes.write(closed)
        return ReportResult(ReportAction.RESOLVED, why, service=service, incident_id=incident_id)

    # -- running ----------------------------------------------------------------------------

    @property
    def fleet_pause(self) -> str | None:
        """Why automatic recovery is paused by the fleet floor, while it is."""
        return self._claims.fleet_pause

    def _check_fleet_floor(self) -> str | None:
        """The fleet floor now (see ``guards``): alerts once per pause, logs its end."""
        was = self._claims.fleet_pause
        began, down = self._claims.check_fleet(self._catalog, self._tracker)
        pause = self._claims.fleet_pause
        if began:
            log.error("%s (%s)", pause, ", ".join(down))
            if self._alerter is not None:
                self._alerter.raise_alert(
                    AlertKind.FLEET_PAUSED,
                    service="*",
                    text=f"{pause}: {', '.join(down)}",
                    event=self._clock.now().isoformat(),
                )
        elif was is not None and pause is None:
            log.warning(
                "automatic recovery resumed: %d of %d services unhealthy",
                len(down),
                len(self._catalog),
            )
        return pause

    async def _stop_for_budget(self, run: _Run) -> None:
        """The budget is spent: no attempt now; say so once, and leave it to a person."""
        spec = run.service
        why = self._claims.budget_reason(spec)
        self._gave_up_at[spec.name] = self._clock.monotonic()
        log.error("%s: %s", spec.name, why)
        await self._end_unstarted(run, why)
        incident = run.incident
        if incident is None:
            view = self._tracker.view(spec.name)
            diagnosis = diagnose_status(view.status, view.reason)
            incident = self._make_incident(spec.name, diagnosis, IncidentSource.MANUAL)
        await self._close_incident(incident, IncidentStatus.UNRESOLVED, why)
        if self._alerter is not None and self._claims.first_budget_alert(spec):
            self._alerter.raise_alert(
                AlertKind.BUDGET_SPENT,
                service=spec.name,
                text=f"{why} — {incident.summary}",
                recovery=run.recovery,
                incident=incident,
                tried=_tried(run, None),
            )

    def _crash_loop_delay(self, spec: ServiceSpec) -> float:
        """API.md's crash semantics: the first recovery after a healthy run is immediate; a
        service that fails again sooner than ``reset_after`` waits, doubling each time."""
        delay = self._claims.crash_loop_delay(spec)
        if delay is None:
            return 0.0
        self.learning.relapsed(spec.name)  # the last "successful" recovery did not hold
        return delay

    async def _attempts(self, run: _Run, previous: _Run | None) -> None:
        name = run.service.name
        try:
            if previous is not None:
                await previous.done.wait()
            if run.delay and await sleep_unless(self._clock, run.cancel, run.delay):
                await self._end_unstarted(run, "cancelled while waiting (crash-loop backoff)")
                return
            while True:
                if run.cancel.is_set():
                    await self._end_unstarted(run, "cancelled before it started")
                    return
                needed = run.asked or self._tracker.status(name) is not ServiceStatus.HEALTHY
                if not needed and run.recovery.attempt == 1:
                    await self._end_unstarted(run, "not needed: the service is healthy again")
                    await self._resolve(run, "healthy again before Phoenix acted")
                    return
                if not run.recovery.force:
                    if not self._claims.budget_left(run.service):
                        await self._stop_for_budget(run)
                        return
                    self._claims.spend(run.service)
                result = await self._execute(run)
                if result.resource_shortage is not None:
                    if not await self._wait_for_resources(run, result):
                        return
                    continue
                self._observer.recovery_ended(result, run.incident)
                if result.status is not RecoveryStatus.COMPLETED:
                    # A success is judged (learned, alerted) once it has held: see _stable.
                    self._learn(run, result)
                    self._alert_after(run, result)
                if result.status is RecoveryStatus.COMPLETED:
                    # New processes: judge them on what they do from now on.
                    self._tracker.reset_symptoms(name, self._catalog.get(name))
                    self._claims.recovered(name)
                    self._watch_stability(run, result)
                    return
                if result.status is RecoveryStatus.CANCELLED:
                    return
                if self._tracker.status(name) is ServiceStatus.HEALTHY:
                    await self._resolve(run, f"healthy again after {result.id}")
                    return
                run.failed.append(result.strategy)
                if result.attempt >= self._limits.max_attempts:
                    await self._give_up(run, result)
                    return
                delay = run.service.recovery.backoff.delay(result.attempt)
                if await sleep_unless(self._clock, run.cancel, delay):
                    return
                if self._tracker.status(name) is ServiceStatus.HEALTHY:
                    await self._resolve(run, f"healthy again after {result.id}")
                    return
                try:
                    run.recovery = self._next_attempt(run, result)
                except UnsupportedStrategyError as exc:
                    log.error("%s: no strategy left to try: %s", name, exc.message)
                    await self._give_up(run, result)
                    return
                await self._recorder.save_recovery(run.recovery)
        except Exception:
            # A bug or a database gone for good must not leave the service unwatched with a
            # dead task: say so, and let the next look start afresh.
            log.exception("%s: recovery %s stopped by an error", name, run.recovery.id)
        finally:
            run.done.set()
            self._unclaim(run)
            self._queue.put_nowait((name, None))  # look again now that nothing runs

    def _learn(self, run: _Run, result: Recovery) -> None:
        outcome = outcome_of(result, run.incident.failure_type if run.incident else None)
        if outcome is not None:
            self.learning.record(outcome)

    def _watch_stability(self, run: _Run, result: Recovery) -> None:
        """A verified recovery counts as a success once the service has stayed healthy for
        the stabilisation period; its incident stays open until then, and a relapse inside
        it is that attempt failing (see :meth:`_relapse`), not a new incident."""
        period = run.service.recovery.stabilisation_period
        watch = _Stabilising(run, result, self._clock.monotonic() + period)
        if period <= 0 or run.incident is None:
            self._tasks.spawn(self._stable(watch), name=f"stable-{result.service}")
            return
        self._stabilising[result.service] = watch
        self._tasks.spawn(self._confirm_later(watch, period), name=f"stable-{result.service}")

    async def _confirm_later(self, watch: _Stabilising, period: float) -> None:
        await self._clock.sleep(period)
        name = watch.result.service
        if self._stabilising.get(name) is not watch:
            return  # relapsed, or superseded by another recovery
        if self._tracker.status(name) in FAILING and name not in self._runs:
            await self._relapse(name)
            return
        del self._stabilising[name]
        await self._stable(watch)

    async def _stable(self, watch: _Stabilising) -> None:
        run, result = watch.run, watch.result
        if result.ended_at is not None:
            self._fixed_until[result.service] = (result.ended_at, result.id)
        if run.incident is not None:
            self._last_fixed[result.service] = (run, result)
        self._estimates.record(result)
        self._learn(run, result)
        self._alert_after(run, result)
        await self._resolve(run, f"recovered by {result.strategy.value} ({result.id})")

    async def _relapse(self, name: str, why: str | None = None) -> None:
        """The service failed again inside its stabilisation period (``why``: the evidence,
        if not Phoenix's own view of it): the attempt that "recovered" it did not, so it is
        recorded as failed and the incident goes on with the next attempt (after the
        backoff), up to ``MAX_RECOVERY_ATTEMPTS``."""
        watch = self._stabilising.pop(name)
        run, result = watch.run, watch.result
        why = why or self._tracker.view(name).reason
        held = self._clock.monotonic() - (watch.until - run.service.recovery.stabilisation_period)
        failed = replace(
            result,
            status=RecoveryStatus.FAILED,
            outcome=Outcome.FAILURE,
            reason=(
                f"{result.reason}; relapsed {held:.1f}s after it verified (within the "
                f"{run.service.recovery.stabilisation_period:g}s stabilisation period): "
                f"{why}"
            ),
        )
        await self._writes.write(failed)
        log.warning("%s: %s relapsed after %.1fs: %s", name, result.id, held, why)
        self._learn(run, failed)
        self._alert_after(run, failed)
        await self._carry_on(run, result, failed=failed, write_incident=False)

    async def _carry_on(
        self, run: _Run, last: Recovery, *, failed: Recovery, write_incident: bool
    ) -> None:
        """``failed`` did not fix ``run``'s incident: its next attempt, escalated, after the
        backoff — or give up past ``MAX_RECOVERY_ATTEMPTS`` or with no strategy left.
        ``last`` is the attempt whose reason the next keeps (not the relapse's)."""
        name = run.service.name
        run.failed.append(failed.strategy)
        if failed.attempt >= self._limits.max_attempts:
            await self._give_up(run, failed)
            return
        try:
            recovery = self._next_attempt(run, last)
        except UnsupportedStrategyError as exc:
            log.error("%s: no strategy left to try: %s", name, exc.message)
            await self._give_up(run, failed)
            return
        spec = self._catalog.get(name)
        again = _Run(
            spec,
            run.incident,
            recovery,
            down_since=run.incident.detected_at if run.incident else None,
            delay=spec.recovery.backoff.delay(failed.attempt),
            failed=list(run.failed),
        )
        await self._start(again, write_incident=write_incident)

    async def _wait_for_resources(self, run: _Run, result: Recovery) -> bool:
        """The attempt met a machine out of descriptors or memory: give its budget back,
        wait (doubling), and set up the same attempt again. False: cancelled meanwhile."""
        if not run.recovery.force:
            self._claims.refund(run.service)
        run.shortages += 1
        delay = min(RESOURCE_RETRY_FIRST * 2 ** (run.shortages - 1), RESOURCE_RETRY_MAX)
        log.warning(
            "%s: %s (%s); trying the same attempt again in %gs",
            run.service.name,
            result.resource_shortage,
            result.id,
            delay,
        )
        if await sleep_unless(self._clock, run.cancel, delay):
            return False
        run.recovery = self._new_recovery(
            run.service,
            run.incident,
            result.decision,
            result.trigger,
            result.reason.partition("; out of resources")[0],
            attempt=result.attempt,
            force=result.force,
            playbook=run.playbook if result.playbook_id else None,
        )
        await self._recorder.save_recovery(run.recovery)
        return True

    async def _execute(self, run: _Run) -> Recovery:
        """One attempt; a failure to record it is an attempt that failed, not a lost task."""
        platform = self._platforms.for_service(run.service)
        view = self._tracker.view(run.service.name)
        only = None
        if (
            run.recovery.trigger is RecoveryTrigger.AUTOMATIC
            and view.status is ServiceStatus.DEGRADED
        ):
            # Some replicas serve: replace the failing ones, leave the others alone (all of
            # them, one at a time, when none fails its checks: a symptom such as errors).
            failing = frozenset(t for t, s in view.targets.items() if s is ServiceStatus.UNHEALTHY)
            only = failing or None
        try:
            spec = self._catalog.get(run.service.name)
            instances = tuple(platform.instances(spec.name))
            playbook = run.playbook
            if playbook is not None and run.recovery.playbook_id == playbook.id:
                return await self._run_playbook(run, spec, playbook)
            if run.recovery.strategy is Strategy.ROLLBACK:
                return await self._roll_back(run, spec, instances)
            plan = PLANNERS[run.recovery.strategy](PlanInput(spec, instances, only))
            async with self._slots:
                return await self._executor.execute(
                    run.recovery, spec, plan, cancel=run.cancel, down_since=run.down_since
                )
        except Exception as exc:
            log.exception(
                "%s: attempt %s could not run to its end", run.service.name, run.recovery.id
            )
            failed = replace(
                run.recovery,
                status=RecoveryStatus.FAILED,
                outcome=Outcome.FAILURE,
                ended_at=self._clock.now(),
                reason=f"{run.recovery.reason}; stopped by an error: {exc}",
            )
            await self._writes.write(failed)
            return failed

    async def _run_playbook(self, run: _Run, spec: ServiceSpec, playbook: Playbook) -> Recovery:
        """The playbook's steps as written, then its verdict (a health verification)."""
        name = spec.name
        opened: list[Deployment] = []

        async def prepare_rollback() -> tuple[ServiceSpec, str]:
            current = self._catalog.get(name)
            target = self._versions.rollback_target(current)
            if target is None:
                raise UnsupportedStrategyError(
                    no_rollback_reason(
                        current, current.current_version, self._versions.proven(name)
                    )
                )
            deployment, moved = await self._versions.begin(
                name, target, DeploymentReason.ROLLBACK, recovery_id=run.recovery.id
            )
            opened.append(deployment)
            return moved, target

        result = run.recovery
        async with self._slots:
            try:
                result = await self._executor.execute(
                    run.recovery,
                    spec,
                    plan_playbook(playbook, spec),
                    cancel=run.cancel,
                    down_since=run.down_since,
                    prepare_rollback=prepare_rollback,
                )
            finally:
                for deployment in opened:
                    await self._end_rollback(deployment, result)
        return result

    async def _roll_back(
        self, run: _Run, spec: ServiceSpec, instances: tuple[Instance, ...]
    ) -> Recovery:
        """Move the service to its last known-good version (recorded as a deployment first,
        so anything started from now on runs it), then carry out the rollback plan."""
        target = run.rollback_to or self._versions.rollback_target(spec)
        if target is None:
            raise UnsupportedStrategyError(
                no_rollback_reason(spec, spec.current_version, self._versions.proven(spec.name))
            )
        result = run.recovery
        async with self._slots:
            deployment, moved = await self._versions.begin(
                spec.name, target, DeploymentReason.ROLLBACK, recovery_id=run.recovery.id
            )
            try:
                plan = PLANNERS[Strategy.ROLLBACK](PlanInput(moved, instances, version=target))
                result = await self._executor.execute(
                    run.recovery, moved, plan, cancel=run.cancel, down_since=run.down_since
                )
            finally:
                await self._end_rollback(deployment, result)
        return result

    async def _end_rollback(self, deployment: Deployment, result: Recovery) -> None:
        """Close the rollback's deployment record. A write that fails here is logged: it
        must not turn the recovery's own (already recorded) outcome into a failure."""
        try:
            if result.status is RecoveryStatus.COMPLETED:
                status = DeploymentStatus.COMPLETED
            elif result.status.terminal:
                status = DeploymentStatus.FAILED
            else:
                status = DeploymentStatus.INTERRUPTED
            await self._versions.save(
                replace(
                    deployment,
                    status=status,
                    ended_at=self._clock.now(),
                    detail=f"rolled back from {deployment.previous_version} by {result.id}",
                )
            )
        except UnavailableError as exc:
            log.error("%s: could not record the end of %s: %s", result.service, deployment.id, exc)

    def _next_attempt(self, run: _Run, last: Recovery) -> Recovery:
        """The next attempt: the operator's strategy again, else the policy's choice. A
        rollback is not repeated (that would go one version further back each time): the
        service now runs the known-good version, so the next attempt restarts it."""
        spec = self._catalog.get(run.service.name)
        decision = decide(
            DecisionInput(
                service=spec.name,
                failure_type=run.incident.failure_type if run.incident else FailureType.UNKNOWN,
                supported=self.supported(spec),
                learned=self.learning.decide,
                previous=last,
                failed=tuple(run.failed),
                current_version=spec.current_version,
            )
        )
        return self._new_recovery(
            spec,
            run.incident,
            decision,
            last.trigger,
            last.reason,
            attempt=last.attempt + 1,
            force=last.force,  # a forced run's later attempts bypass the budget too
        )

    async def _end_unstarted(self, run: _Run, why: str) -> None:
        run.recovery = replace(
            run.recovery,
            status=RecoveryStatus.CANCELLED,
            outcome=Outcome.FAILURE,
            ended_at=self._clock.now(),
            reason=f"{run.recovery.reason}; {why}" if run.recovery.reason else why,
        )
        await self._writes.write(run.recovery)

    async def _resolve(self, run: _Run, summary: str) -> None:
        if run.incident is not None:
            await self._close_incident(run.incident, IncidentStatus.RESOLVED, summary)

    def _alert_after(self, run: _Run, result: Recovery) -> None:
        if self._alerter is None:
            return
        tried = _tried(run, result)
        if result.status is RecoveryStatus.COMPLETED:
            self._alerter.raise_alert(
                AlertKind.RECOVERY_SUCCEEDED,
                service=result.service,
                text=f"recovered by {result.strategy.value} ({result.id})",
                recovery=result,
                incident=run.incident,
                tried=tried,
            )
        elif result.status is RecoveryStatus.FAILED:
            failed = next(
                (s for s in result.steps if s.status.value in ("failed", "timed_out")), None
            )
            why = (
                f"step '{failed.name}' {failed.status.value}: {failed.detail}"
                if failed
                else result.reason
            )
            kind = AlertKind.PLAYBOOK_ERROR if result.playbook_id else AlertKind.RECOVERY_FAILED
            what = f"playbook {result.playbook_id}" if result.playbook_id else result.strategy.value
            self._alerter.raise_alert(
                kind,
                service=result.service,
                text=f"attempt {result.attempt} ({what}, {result.id}) failed: {why}",
                recovery=result,
                incident=run.incident,
                tried=tried,
            )

    async def _give_up(self, run: _Run, last: Recovery) -> None:
        self._gave_up_at[last.service] = self._clock.monotonic()
        log.error(
            "%s: giving up after %d attempt(s); last: %s", last.service, last.attempt, last.id
        )
        incident = run.incident
        if incident is None:
            # An operator's restart of a working service left it broken: record that, so the
            # next look does not start a fresh series of automatic attempts on top.
            view = self._tracker.view(last.service)
            diagnosis = diagnose_status(view.status, view.reason)
            incident = self._make_incident(last.service, diagnosis, IncidentSource.MANUAL)
        await self._close_incident(
            incident,
            IncidentStatus.UNRESOLVED,
            f"gave up after {last.attempt} recovery attempt(s); last {last.id}",
        )
        if self._alerter is not None:
            tried = _tried(run, last)
            self._alerter.raise_alert(
                AlertKind.ATTEMPTS_EXHAUSTED,
                service=last.service,
                text=(
                    f"gave up after {last.attempt} attempt(s) (tried: {', '.join(tried)}); "
                    f"a person must act — {incident.summary}"
                ),
                recovery=last,
                incident=incident,
                tried=tried,
            )

    # -- records ----------------------------------------------------------------------------

    def _make_incident(
        self, service: str, diagnosis: Diagnosis, source: IncidentSource
    ) -> Incident:
        return Incident(
            id=ids.new_id(ids.INCIDENT),
            service=service,
            failure_type=diagnosis.failure_type,
            status=IncidentStatus.OPEN,
            detected_at=self._clock.now(),
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
        current = self._incidents.get(incident.service)
        if status is IncidentStatus.RESOLVED:
            if current is not None and current.id == incident.id:
                del self._incidents[incident.service]
        elif current is None or current.id == incident.id:
            self._incidents[incident.service] = closed
        await self._writes.write(closed)

    def _new_recovery(
        self,
        spec: ServiceSpec,
        incident: Incident | None,
        decision: Decision,
        trigger: RecoveryTrigger,
        reason: str,
        *,
        attempt: int = 1,
        force: bool = False,
        playbook: Playbook | None = None,
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
            incident_id=incident.id if incident else None,
            attempt=attempt,
            force=force,
            estimated_duration=self._estimates.estimate(spec.name, decision.strategy),
            playbook_id=playbook.id if playbook else None,
            playbook_version=playbook.version if playbook else None,
        )
