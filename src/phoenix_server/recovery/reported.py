"""Failures reported from outside (Alertmanager, events) into incidents and recoveries.

A report opens an incident (or joins the one the service has) and starts a recovery unless
Phoenix must not act now; one that met a deploy, a fleet pause or a failing dependency waits
and is acted on when that is over. A report about a failure that began before the service's
latest successful recovery ended is stale. A copy still firing well after the recovery that
answered it (``alert_grace``) says that recovery did not fix what the reporter sees: that
attempt failed, and the incident goes on. The reporter's resolution closes the incident it
opened, unless a recovery is working on it. (Deduplication of the reports themselves is
``reports.ReportIntake``'s; this is what happens to a report that is news.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from phoenix_server.detection.classifying import Diagnosis
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.incidents import Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import Decision, Recovery, RecoveryTrigger
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin, ReportResult
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.recovery.attempts import FAILING, Attempts
from phoenix_server.recovery.cases import Cases, Run, is_reported
from phoenix_server.recovery.means import Means
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.reports import KEY_EVIDENCE
from phoenix_server.support.timefmt import iso_ms

log = logging.getLogger("phoenix.recovery")


class Gate(Protocol):
    """What reported failures share with the intake's other paths: whether Phoenix may act
    now, and how it decides a first attempt."""

    @property
    def fleet_pause(self) -> str | None: ...

    def busy(self, service: str) -> bool: ...

    def held(self, service: str) -> str | None: ...

    def check_fleet_floor(self) -> str | None: ...

    def first_decision(
        self, spec: ServiceSpec, incident: Incident, playbook: Playbook | None, why: str = ...
    ) -> Decision: ...

    def matching_playbook(
        self, service: str, incident: Incident, *, alert: str | None = None
    ) -> Playbook | None: ...

    def crash_loop_delay(self, spec: ServiceSpec) -> float: ...


class ReportedFailures:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        tracker: HealthTracker,
        recorder: RecoveryRecorder,
        clock: Clock,
        auto_recovery: bool,
        alert_grace: float,
        cases: Cases,
        means: Means,
        attempts: Attempts,
        gate: Gate,
    ) -> None:
        self._catalog = catalog
        self._tracker = tracker
        self._recorder = recorder
        self._clock = clock
        self._auto_recovery = auto_recovery
        self._alert_grace = alert_grace
        """Seconds after a recovery a report's copies may still fire on its way to resolving."""
        self._cases = cases
        self._means = means
        self._attempts = attempts
        self._gate = gate
        self._waiting_reports: dict[str, FailureReport] = {}
        """Reports that wanted a recovery Phoenix could not start yet (a deploy, a fleet
        pause, an operator's restart), per service: acted on when that is over."""
        self._held_for_dependency: set[str] = set()
        """Services whose waiting report waits for a failing dependency."""
        self._dependency_back_at: dict[str, float] = {}
        """Services whose report was dropped because they were healthy once their dependency
        came back (monotonic time): if the report still fires past the grace, it is acted on."""

    def waiting(self, service: str) -> bool:
        """Whether a report about ``service`` waits to be acted on (a hold or a pause)."""
        return service in self._waiting_reports

    def remember_successes(self, ended: Mapping[str, tuple[datetime, str]]) -> None:
        """When each service's latest successful recovery ended, and which it was, as
        recorded (at start)."""
        for service, last in ended.items():
            self._cases.fixed_until.setdefault(service, last)

    def _stale(self, report: FailureReport, *, repeated: bool = False) -> str | None:
        """Why ``report`` is about a failure already fixed, if it is: it began before the
        service's latest successful recovery ended. One that began after it is news, even
        if Phoenix's own checks say healthy (they may miss what the alert sees) — and so is
        a ``repeated`` copy still firing ``alert_grace`` after that recovery: the recovery
        did not fix what the reporter sees (or its clock is off)."""
        fixed = self._cases.fixed_until.get(report.service)
        if report.started_at is None or fixed is None:
            return None
        until, recovery = fixed
        if report.started_at >= until:
            return None
        if repeated and (self._clock.now() - until).total_seconds() >= self._alert_grace:
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
        run = self._cases.runs.get(name)
        if run is not None:
            return ReportResult(
                ReportAction.JOINED,
                f"recovery {run.recovery.id} is already under way",
                service=name,
                incident_id=run.incident.id if run.incident else None,
                recovery_id=run.recovery.id,
            )
        known = self._cases.incidents.get(name)
        watch = self._cases.stabilising.get(name)
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
            is_reported(known) and report.recover and known.status is IncidentStatus.OPEN
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
            incident = self._cases.make_incident(name, diagnosis, source)
        else:
            incident = known
        why_not, later = self._why_not_act(spec, report, incident)
        self._held_for_dependency.discard(name)
        if why_not is not None:
            if later:
                self._waiting_reports[name] = report
                if self._tracker.waiting_on(name) is not None and self._gate.held(name) is None:
                    self._held_for_dependency.add(name)
            if new:
                self._cases.incidents[name] = incident  # claimed before the await
                try:
                    await self._recorder.save_incident(incident)
                except BaseException:
                    if self._cases.incidents.get(name) is incident:
                        del self._cases.incidents[name]
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
        if name in self._cases.runs:
            return None
        incident = self._cases.incidents.get(name)
        why_not, _later = self._why_not_act(self._catalog.get(name), report, incident)
        if why_not is not None:
            return None  # a plain duplicate: the hold or pause decides, as for a new report
        grace = self._alert_grace
        watch = self._cases.stabilising.get(name)
        if watch is not None:
            if watch.run.incident is None or watch.run.incident.id != incident_id:
                return None
            waited = self._clock.monotonic() - watch.verified_at
            if waited < grace:
                return None
            why = f"{report.origin.value} still reports it failing {waited:.0f}s after it verified"
            await self._attempts.relapse(name, why)
            return self._carried_on(name, incident_id, why)
        open_now = self._cases.incidents.get(name)
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
        last = self._cases.last_fixed.get(name)
        if last is None or open_now is not None:
            return None
        run, fixed = last
        if run.incident is None or run.incident.id != incident_id or fixed.ended_at is None:
            return None
        waited = (self._clock.now() - fixed.ended_at).total_seconds()
        if waited < grace:
            return None
        del self._cases.last_fixed[name]
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
        reopened = Run(
            run.service, incident, fixed, down_since=incident.detected_at, failed=list(run.failed)
        )
        self._cases.incidents[name] = incident
        await self._attempts.carry_on(reopened, fixed, failed=fixed, write_incident=True)
        return self._carried_on(name, incident_id, why)

    def _carried_on(self, name: str, incident_id: str, why: str) -> ReportResult:
        run = self._cases.runs.get(name)
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

    def _why_not_act(
        self, spec: ServiceSpec, report: FailureReport, incident: Incident | None
    ) -> tuple[str | None, bool]:
        """Why Phoenix does not act on ``report`` now (None: it does), and whether it will
        once that passes."""
        if not self._means.supported(spec) and (
            # A playbook of endpoint calls still answers it (an external service's).
            incident is None
            or self._gate.matching_playbook(spec.name, incident, alert=report.alert_name) is None
        ):
            return "Phoenix can only monitor this service", False
        if not report.recover:
            return "the report asks Phoenix not to act", False
        if not self._auto_recovery:
            return "automatic recovery is off", False
        if self._gate.check_fleet_floor():
            return f"{self._gate.fleet_pause}; Phoenix acts on it when the pause ends", True
        held = self._gate.held(spec.name)
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
        playbook = self._gate.matching_playbook(name, incident, alert=report.alert_name)
        decision = self._gate.first_decision(
            spec, incident, playbook, "its trigger matches this report"
        )
        recovery = self._cases.new_recovery(
            spec, incident, decision, RecoveryTrigger.ALERT, report.summary, playbook=playbook
        )
        run = Run(
            spec,
            incident,
            recovery,
            down_since=None,
            asked=True,
            playbook=playbook,
            delay=self._gate.crash_loop_delay(spec),  # as for a failure Phoenix sees itself
        )
        await self._attempts.start(run, write_incident=write_incident)
        log.warning(
            "%s: incident %s reported by %s; %s (%s)",
            name,
            incident.id,
            report.origin.value,
            decision.strategy.value,
            recovery.id,
        )
        return recovery

    async def act_on_waiting(self, name: str) -> bool:
        """A report that had to wait (a deploy, a fleet pause): act on it now if nothing
        stops that any more. True if a recovery started."""
        report = self._waiting_reports.get(name)
        if report is None or self._gate.busy(name):
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
        incident = self._cases.incidents.get(name)
        if incident is None or incident.status is not IncidentStatus.OPEN:
            return False  # resolved meanwhile, or given up on: a person acts
        result = await self.open_reported(report)  # still waiting: it is kept again
        return result.recovery_id is not None

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult:
        """The reporter says the failure is over: close its incident, unless a recovery is
        working on it (the recovery's verdict closes it then)."""
        incident = self._cases.incidents.get(service)
        if incident is None or incident.id != incident_id:
            return ReportResult(ReportAction.IGNORED, f"incident {incident_id} is not open")
        run = self._cases.runs.get(service)
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
        del self._cases.incidents[service]  # before the await: nothing starts on it meanwhile
        closed = replace(
            incident,
            status=IncidentStatus.RESOLVED,
            resolved_at=self._clock.now(),
            summary=f"{incident.summary}; {why}",
        )
        await self._cases.writes.write(closed)
        return ReportResult(ReportAction.RESOLVED, why, service=service, incident_id=incident_id)
