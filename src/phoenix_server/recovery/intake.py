"""The intake: from what is seen or said about a service to incidents and recoveries.

Three kinds of news arrive: a service's health as Phoenix's own checks see it (level-
triggered: the orchestrator asks :meth:`Intake.evaluate` on every transition and on every
sweep), an operator's trigger, and a failure reported from outside (Alertmanager, events).
The intake opens, joins, waits on and closes incidents; it decides *whether* to act now
(automatic recovery off, a fleet pause, a deploy holding the service, a dependency that
explains the failure, a port someone else holds, a budget spent, Phoenix having just given
up) and, through :func:`deciding.decide`, *how*. What to act with is handed to the
attempts as a claimed :class:`Run`. Reported failures have their own rules (held reports,
stale ones, copies still firing): :mod:`reported`, which shares this module's gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from phoenix_server.detection.classifying import Diagnosis, cascading, diagnose, diagnose_status
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.alerts import AlertKind
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import (
    ConflictError,
    Problem,
    RecoveryInProgressError,
    UnsupportedStrategyError,
)
from phoenix_server.domain.health import HealthTransition, ServiceStatus
from phoenix_server.domain.incidents import FailureType, Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.playbooks import Playbook, PlaybookStatus, TriggerType
from phoenix_server.domain.recoveries import (
    Decision,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.recovery.alerting import Alerter
from phoenix_server.recovery.attempts import FAILING, Attempts
from phoenix_server.recovery.cases import REPORTED_SOURCES, Cases, Run, is_reported
from phoenix_server.recovery.claims import Activity, Claims
from phoenix_server.recovery.deciding import DecisionInput, decide
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.means import Means
from phoenix_server.recovery.playbook_choice import choose, describe_trigger
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.reported import ReportedFailures
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")

FIRE_COOLDOWN = 60.0
"""Seconds before a playbook that fired on a signal may fire again for the same service
(on top of the crash-loop backoff): a condition that persists is not hammered."""
FIRED_AS = {
    TriggerType.ERROR_RATE: FailureType.HIGH_ERROR_RATE,
    TriggerType.LATENCY: FailureType.LATENCY_DEGRADATION,
    TriggerType.MEMORY: FailureType.MEMORY_LEAK,
    TriggerType.CPU: FailureType.HIGH_LOAD,
    TriggerType.ANOMALY_SCORE: FailureType.UNKNOWN,
}
"""The failure type an incident opened by a fired trigger is filed under."""


@dataclass(frozen=True)
class IntakeLimits:
    auto_recovery: bool
    """Recover on detected failures; when False only operators' triggers act."""
    alert_grace: float = 120.0
    """Seconds after a recovery the alert that reported the failure may still fire on its
    way to resolving; a copy still firing later says the recovery did not fix it."""
    try_again_after: float = 30.0
    """Seconds after giving up on a service that is still failing before Phoenix tries
    again (if its budget allows): the cause may have cleared (a machine out of descriptors,
    a dependency back). Level-triggered: a service that stays down is never forgotten."""


class Intake:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        tracker: HealthTracker,
        recorder: RecoveryRecorder,
        clock: Clock,
        limits: IntakeLimits,
        claims: Claims,
        cases: Cases,
        means: Means,
        attempts: Attempts,
        learning: LearnedPolicy,
        alerter: Alerter | None,
        tasks: SupervisedTasks,
        wake: Callable[[str], None],
    ) -> None:
        self._catalog = catalog
        self._tracker = tracker
        self._recorder = recorder
        self._clock = clock
        self._limits = limits
        self._claims = claims
        self._cases = cases
        self._means = means
        self._attempts = attempts
        self._learning = learning
        self._alerter = alerter
        self._tasks = tasks
        self._wake = wake
        """Ask the orchestrator to look at a service again."""
        self._playbooks: list[Playbook] = []
        """The active playbooks, as the store had them at the last refresh."""
        self._fired_at: dict[tuple[str, str], float] = {}
        """When each (service, playbook) last fired on its own: it waits a cooldown."""
        self._giving_time: dict[str, bool] = {}
        """Failing services with dependencies: True while Phoenix gives the dependencies
        time to show a failure (their detection takes that long), False once it has."""
        self._giving_callers_time: dict[str, bool] = {}
        self._waiting: dict[str, str] = {}
        """Failing services left alone because a dependency's failure explains theirs."""
        self.reported = ReportedFailures(
            catalog=catalog,
            tracker=tracker,
            recorder=recorder,
            clock=clock,
            auto_recovery=limits.auto_recovery,
            alert_grace=limits.alert_grace,
            cases=cases,
            means=means,
            attempts=attempts,
            gate=self,
        )
        """Failures reported from outside: their incidents, held reports, still-firing ones."""

    def busy(self, service: str) -> bool:
        """A recovery, deploy or scale-in of ``service`` is running (or waiting to)."""
        return self._claims.holder(service) is not None

    def held(self, service: str) -> str | None:
        """What other than a recovery is changing ``service`` (``deployed (dep-…)``)."""
        claim = self._claims.holder(service)
        if claim is None or claim.activity is Activity.RECOVERY:
            return None
        return claim.label

    def _refuse_if_held(self, service: str) -> None:
        activity = self.held(service)
        if activity is not None:
            raise ConflictError(f"service '{service}' is being {activity}; wait for it")

    def set_playbooks(self, playbooks: list[Playbook]) -> None:
        """The playbooks that may answer failures from now on (refreshed by the runtime)."""
        self._playbooks = [p for p in playbooks if p.status is PlaybookStatus.ACTIVE]
        ids = {p.id for p in self._playbooks}
        self._fired_at = {k: v for k, v in self._fired_at.items() if k[1] in ids}

    def first_decision(
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
                supported=self._means.supported(spec),
                playbook=playbook,
                playbook_why=why,
                learned=self._learning.decide,
                advice=self._means.advice(spec),
            )
        )

    def matching_playbook(
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

    def report_waiting(self, service: str) -> bool:
        """Whether a report about ``service`` waits to be acted on (a hold or a pause)."""
        return self.reported.waiting(service)

    async def fire_signal_triggers(self) -> None:
        """Playbook triggers on signals fire on their own (a playbook may act on an error
        rate the default rules tolerate): for services nothing acts on (the orchestrator
        calls this once a second)."""
        if not self._limits.auto_recovery or not self._playbooks or self.fleet_pause:
            return
        for spec in list(self._catalog):
            name = spec.name
            if self.busy(name) or name in self._cases.incidents:
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
            if fired is None or not self._means.supported(spec):
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
        incident = self._cases.make_incident(
            name, Diagnosis(kind, summary, ()), IncidentSource.DETECTED
        )
        decision = self.first_decision(spec, incident, playbook, "its trigger fired")
        recovery = self._cases.new_recovery(
            spec, incident, decision, RecoveryTrigger.PLAYBOOK, summary, playbook=playbook
        )
        run = Run(
            spec,
            incident,
            recovery,
            down_since=None,
            playbook=playbook,
            asked=True,
            delay=self.crash_loop_delay(spec),
        )
        await self._attempts.start(run, write_incident=True)
        log.warning("%s: incident %s: %s", name, incident.id, summary)

    def needs_attention(self, name: str) -> bool:
        if not self._claims.acts_on(name):
            return False  # another replica's to look after
        if self.reported.waiting(name):
            return True
        status = self._tracker.status(name)
        if name in self._cases.stabilising:
            return status in FAILING
        incident = self._cases.incidents.get(name)
        if status is ServiceStatus.HEALTHY:
            self._giving_time.pop(name, None)
            self._giving_callers_time.pop(name, None)
            return incident is not None and not is_reported(incident)
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
        since = self._cases.gave_up_at.setdefault(name, now)  # given up before Phoenix started
        if now - since < self._limits.try_again_after:
            return False
        return self._claims.budget_left(self._catalog.get(name))

    async def evaluate(self, name: str, transition: HealthTransition | None) -> None:
        """Act on ``name``'s status now (``transition``, if any, is the evidence)."""
        if self.busy(name) or name not in self._catalog:
            return  # the run (or deployment) looks again when it ends
        if not self._claims.acts_on(name):
            return  # another replica owns it
        if self.reported.waiting(name) and await self.reported.act_on_waiting(name):
            return
        view = self._tracker.view(name)
        incident = self._cases.incidents.get(name)
        if name in self._catalog:
            self._claims.note_health(self._catalog.get(name), view.status)
        if name in self._cases.stabilising:
            if view.status in FAILING and self._tracker.waiting_on(name) is None:
                await self._attempts.relapse(name)
            return
        if view.status is ServiceStatus.HEALTHY:
            self._giving_time.pop(name, None)
            self._giving_callers_time.pop(name, None)
            self._cases.gave_up_at.pop(name, None)
            if incident is not None and not is_reported(incident):
                await self._cases.close_incident(incident, IncidentStatus.RESOLVED, "healthy again")
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
            del self._cases.gave_up_at[name]
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
            incident = self._cases.make_incident(name, diagnosis, IncidentSource.DETECTED)
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
        supported = self._means.supported(spec)
        # A service whose platform has no strategy (an external one) is still recovered by
        # a playbook that answers the failure (it calls the service's own endpoints).
        playbook = self.matching_playbook(name, incident)
        paused = self.check_fleet_floor()
        if not self._limits.auto_recovery or paused or not (supported or playbook):
            self._cases.incidents[name] = incident
            if not supported and playbook is None:
                await self._cases.close_incident(
                    incident,
                    IncidentStatus.UNRESOLVED,
                    "Phoenix can only monitor this service (no playbook answers this failure)",
                )

            elif new_incident:
                await self._cases.writes.write(incident)
                why = "automatic recovery is off" if paused is None else paused
                log.warning("%s: %s; recorded only", name, why)
            return
        delay = self.crash_loop_delay(spec)
        reason = incident.summary
        if delay:
            reason += (
                f"; failed again within {spec.recovery.backoff.reset_after:g}s of its last "
                f"recovery: waiting {delay:g}s first (crash-loop backoff)"
            )
        decision = self.first_decision(spec, incident, playbook)
        recovery = self._cases.new_recovery(
            spec, incident, decision, RecoveryTrigger.AUTOMATIC, reason, playbook=playbook
        )
        # Downtime counts from detection only if nothing was serving (not for a degraded one).
        down_since = incident.detected_at if view.status is ServiceStatus.UNHEALTHY else None
        run = Run(spec, incident, recovery, down_since=down_since, delay=delay, playbook=playbook)
        await self._attempts.start(run, write_incident=new_incident or reopened)

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
        self._wake(name)

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
        supported = self._means.supported(spec)
        if rollback_to is not None and Strategy.ROLLBACK in self._means.platform_can(spec):
            supported |= {Strategy.ROLLBACK}  # a named version needs no known-good one
        self._refuse_if_held(service)
        if strategy is not None and playbook is None and supported and strategy not in supported:
            message = self._means.unavailable_reason(spec, strategy)
            raise UnsupportedStrategyError(message, [Problem("strategy", message)])
        previous = self._cases.runs.get(service)
        if previous is not None and not force:
            raise RecoveryInProgressError(service, previous.recovery.id)
        if not force and not self._claims.budget_left(spec):
            raise ConflictError(f"{self._claims.budget_reason(spec)}; force: true overrides it")
        view = self._tracker.view(service)
        diagnosis = diagnose_status(view.status, view.reason)
        known = self._cases.incidents.get(service)
        incident: Incident | None
        if known is not None:
            incident = replace(known, status=IncidentStatus.OPEN)
        elif view.status is ServiceStatus.HEALTHY:
            incident = None  # maintenance: nothing is failing, so no incident
        else:
            incident = self._cases.make_incident(service, diagnosis, IncidentSource.MANUAL)
        failure_type = incident.failure_type if incident else diagnosis.failure_type
        if strategy is None and playbook is None and policy_reason is None and incident:
            # The operator left the choice to Phoenix: playbook > advice > learned > default.
            playbook = self.matching_playbook(service, incident)
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
                learned=self._learning.decide,
                advice=self._means.advice(spec) if incident else None,
            )
        )
        recovery = self._cases.new_recovery(
            spec, incident, decision, trigger, reason, force=force, playbook=playbook
        )
        if previous is None and self._attempts.slots_free():
            # It starts as soon as this call returns; say so (the seed answers in_progress).
            recovery = replace(
                recovery, status=RecoveryStatus.IN_PROGRESS, started_at=recovery.created_at
            )
        down_since = incident.detected_at if incident and not view.status.serving else None
        run = Run(
            spec,
            incident,
            recovery,
            down_since=down_since,
            asked=True,
            rollback_to=rollback_to,
            playbook=playbook,
        )
        self._attempts.claim(run, replacing=previous)  # before the first await
        self._attempts.supersede_stabilising(service, run)
        try:
            write_incident = incident if incident is not None and incident != known else None
            await self._recorder.save_recovery(recovery, incident=write_incident)
        except BaseException:
            run.done.set()  # a later forced trigger may be waiting on it
            alive = previous is not None and not previous.done.is_set()
            self._attempts.unclaim(run, back_to=previous if alive else None)
            raise
        if incident is not None:
            self._cases.incidents[service] = incident
        if previous is not None:
            previous.cancel.set()
        self._attempts.begin(run, previous)
        return recovery

    @property
    def fleet_pause(self) -> str | None:
        """Why automatic recovery is paused by the fleet floor, while it is."""
        return self._claims.fleet_pause

    def check_fleet_floor(self) -> str | None:
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
            log.warning("automatic recovery resumed: %d service(s) unhealthy", len(down))
        return pause

    def crash_loop_delay(self, spec: ServiceSpec) -> float:
        """API.md's crash semantics: the first recovery after a healthy run is immediate; a
        service that fails again sooner than ``reset_after`` waits, doubling each time."""
        delay = self._claims.crash_loop_delay(spec)
        if delay is None:
            return 0.0
        self._learning.relapsed(spec.name)  # the last "successful" recovery did not hold
        return delay
