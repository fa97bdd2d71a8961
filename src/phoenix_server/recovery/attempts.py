"""The attempts: carrying a claimed recovery to its end.

One attempt after another for an incident: execute the plan (a playbook's steps, a
rollback through a recorded deployment, or a strategy's plan), judge it, and then either
watch the recovered service through its stabilisation period, escalate to the next
attempt after a backoff, wait for a machine out of resources, or give up and alert a
person. A success counts only once it has held; a relapse inside the stabilisation period
is that attempt failing. Budgets are spent here, through the claims.

Where a failure comes from and whether to act on it is the intake's business; the
orchestrator dispatches. This module starts from a :class:`Run` that is to be carried out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from phoenix_server.detection.classifying import diagnose_status
from phoenix_server.detection.health_tracking import HealthTracker
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
    StaleOwnerError,
    UnavailableError,
    UnsupportedStrategyError,
)
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.incidents import FailureType, IncidentSource, IncidentStatus
from phoenix_server.domain.learning import outcome_of
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import (
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.services import Instance, ServiceCatalog, ServiceSpec
from phoenix_server.platforms.base import PlatformRegistry
from phoenix_server.recovery.alerting import Alerter
from phoenix_server.recovery.cases import Cases, Run, Stabilising
from phoenix_server.recovery.claims import Activity, Claims
from phoenix_server.recovery.deciding import DecisionInput, decide
from phoenix_server.recovery.executing import Executor
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.means import Means
from phoenix_server.recovery.observing import RecoveryObserver
from phoenix_server.recovery.playbook_runs import plan_playbook
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.recovery.strategies import PlanInput, plan_for
from phoenix_server.recovery.versions import VersionKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")

FAILING = frozenset({ServiceStatus.UNHEALTHY, ServiceStatus.DEGRADED})
"""Statuses Phoenix acts on: nothing serving, or some replicas failing."""
RESOURCE_RETRY_FIRST = 1.0
RESOURCE_RETRY_MAX = 30.0
"""Seconds before retrying an attempt that met a machine out of resources (doubling)."""


class Attempts:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        executor: Executor,
        recorder: RecoveryRecorder,
        clock: Clock,
        claims: Claims,
        cases: Cases,
        means: Means,
        versions: VersionKeeper,
        learning: LearnedPolicy,
        observer: RecoveryObserver,
        alerter: Alerter | None,
        tasks: SupervisedTasks,
        max_attempts: int,
        max_concurrent: int,
        look_again: Callable[[str], None],
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._tracker = tracker
        self._executor = executor
        self._recorder = recorder
        self._clock = clock
        self._claims = claims
        self._cases = cases
        self._means = means
        self._versions = versions
        self._learning = learning
        self._observer = observer
        self._alerter = alerter
        self._tasks = tasks
        self._max_attempts = max_attempts
        self._slots = asyncio.Semaphore(max_concurrent)
        self._look_again = look_again
        """Ask the orchestrator to look at a service again (a run of it ended)."""

    def slots_free(self) -> bool:
        """A recovery started now would not wait for one of the others to end."""
        return not self._slots.locked()

    def begin(self, run: Run, previous: Run | None) -> None:
        """Carry out the claimed and recorded ``run`` (after ``previous``, which a forced
        trigger cancelled, has stopped at its safe point)."""
        self._tasks.spawn(self._attempts(run, previous), name=run.service.name)

    def _attempting(self, run: Run, recovery: Recovery) -> None:
        """``run`` goes on with ``recovery`` (its next attempt): its claim says so."""
        run.recovery = recovery
        if run.claim is not None:
            run.claim = self._claims.relabel(run.claim, recovery.id)

    def claim(self, run: Run, *, replacing: Run | None = None) -> None:
        """Claim the service for ``run`` (before any await: triggers see it at once)."""
        run.claim = self._claims.claim(
            run.service.name,
            Activity.RECOVERY,
            run.recovery.id,
            replacing=replacing.claim if replacing is not None else None,
        )
        self._cases.runs[run.service.name] = run

    def unclaim(self, run: Run, *, back_to: Run | None = None) -> None:
        """``run`` is over (or never started): the service is free, or ``back_to``'s again."""
        name = run.service.name
        if run.claim is not None:
            self._claims.release(run.claim, back_to=back_to.claim if back_to else None)
        if self._cases.runs.get(name) is run:
            if back_to is not None:
                self._cases.runs[name] = back_to
            else:
                del self._cases.runs[name]

    async def start(self, run: Run, *, write_incident: bool) -> None:
        """Claim the service for ``run`` (before any await: triggers see it at once), record
        it (with its incident if new), then run it. Nothing stays claimed if the record
        cannot be written, and a forced trigger waiting on this run is let go."""
        name = run.service.name
        assert run.incident is not None
        self.claim(run)
        self.supersede_stabilising(name, run)
        try:
            await self._recorder.save_recovery(
                run.recovery, incident=run.incident if write_incident else None
            )
        except UnavailableError as exc:
            # The data plane comes first: the service is recovered now, and its records
            # wait for the database in the journal (/health says so meanwhile).
            log.warning("%s: recovering without the database for now (%s)", name, exc.message)
            if write_incident:
                self._cases.writes.keep(run.incident)
            self._cases.writes.keep(run.recovery)
        except BaseException:
            run.done.set()
            self.unclaim(run)
            raise
        self._cases.incidents[name] = run.incident
        self.begin(run, previous=None)

    def _claim_lost(self, run: Run) -> bool:
        """Something other than Phoenix's own recoveries holds the service now (a lease
        lost, with several replicas): acting would be acting twice. A forced trigger that
        took the claim is not that: it cancels this run once it is recorded, or hands the
        claim back if it cannot be."""
        if run.claim is None or self._claims.holds(run.claim):
            return False
        current = self._claims.holder(run.service.name)
        return current is None or current.activity is not Activity.RECOVERY

    def supersede_stabilising(self, name: str, run: Run) -> None:
        """Another recovery starts (an operator's, a report's) while the last one is
        still proving itself: that one held until now, so it counts as a success; its
        incident is closed unless the new run carries it on."""
        watch = self._cases.stabilising.pop(name, None)
        if watch is None:
            return
        if run.incident is not None and watch.run.incident is not None:
            if run.incident.id == watch.run.incident.id:
                watch = replace(watch, run=replace(watch.run, incident=None))
        self._tasks.spawn(self._stable(watch), name=f"stable-{name}")

    async def _stop_for_budget(self, run: Run) -> None:
        """The budget is spent: no attempt now; say so once, and leave it to a person."""
        spec = run.service
        why = self._claims.budget_reason(spec)
        self._cases.gave_up_at[spec.name] = self._clock.monotonic()
        log.error("%s: %s", spec.name, why)
        await self._end_unstarted(run, why)
        incident = run.incident
        if incident is None:
            view = self._tracker.view(spec.name)
            diagnosis = diagnose_status(view.status, view.reason)
            incident = self._cases.make_incident(spec.name, diagnosis, IncidentSource.MANUAL)
        await self._cases.close_incident(incident, IncidentStatus.UNRESOLVED, why)
        if self._alerter is not None and self._claims.first_budget_alert(spec):
            self._alerter.raise_alert(
                AlertKind.BUDGET_SPENT,
                service=spec.name,
                text=f"{why} — {incident.summary}",
                recovery=run.recovery,
                incident=incident,
                tried=run.tried(None),
            )

    async def _attempts(self, run: Run, previous: Run | None) -> None:
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
                if self._claim_lost(run):
                    await self._end_unstarted(run, "its claim of the service is no longer held")
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
                if result.attempt >= self._max_attempts:
                    await self._give_up(run, result)
                    return
                delay = run.service.recovery.backoff.delay(result.attempt)
                if await sleep_unless(self._clock, run.cancel, delay):
                    return
                if self._tracker.status(name) is ServiceStatus.HEALTHY:
                    await self._resolve(run, f"healthy again after {result.id}")
                    return
                try:
                    self._attempting(run, self._next_attempt(run, result))
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
            self.unclaim(run)
            self._look_again(name)  # look again now that nothing runs

    def _learn(self, run: Run, result: Recovery) -> None:
        outcome = outcome_of(result, run.incident.failure_type if run.incident else None)
        if outcome is not None:
            self._learning.record(outcome)

    def _watch_stability(self, run: Run, result: Recovery) -> None:
        """A verified recovery counts as a success once the service has stayed healthy for
        the stabilisation period; its incident stays open until then, and a relapse inside
        it is that attempt failing (see :meth:`relapse`), not a new incident."""
        period = run.service.recovery.stabilisation_period
        watch = Stabilising(run, result, self._clock.monotonic() + period)
        if period <= 0 or run.incident is None:
            self._tasks.spawn(self._stable(watch), name=f"stable-{result.service}")
            return
        self._cases.stabilising[result.service] = watch
        self._tasks.spawn(self._confirm_later(watch, period), name=f"stable-{result.service}")

    async def _confirm_later(self, watch: Stabilising, period: float) -> None:
        await self._clock.sleep(period)
        name = watch.result.service
        if self._cases.stabilising.get(name) is not watch:
            return  # relapsed, or superseded by another recovery
        if self._tracker.status(name) in FAILING and name not in self._cases.runs:
            await self.relapse(name)
            return
        del self._cases.stabilising[name]
        await self._stable(watch)

    async def _stable(self, watch: Stabilising) -> None:
        run, result = watch.run, watch.result
        if result.ended_at is not None:
            self._cases.fixed_until[result.service] = (result.ended_at, result.id)
        if run.incident is not None:
            self._cases.last_fixed[result.service] = (run, result)
        self._cases.estimates.record(result)
        self._learn(run, result)
        self._alert_after(run, result)
        await self._resolve(run, f"recovered by {result.strategy.value} ({result.id})")

    async def relapse(self, name: str, why: str | None = None) -> None:
        """The service failed again inside its stabilisation period (``why``: the evidence,
        if not Phoenix's own view of it): the attempt that "recovered" it did not, so it is
        recorded as failed and the incident goes on with the next attempt (after the
        backoff), up to ``MAX_RECOVERY_ATTEMPTS``."""
        watch = self._cases.stabilising.pop(name)
        run, result = watch.run, watch.result
        why = why or self._tracker.view(name).reason
        held = self._clock.monotonic() - watch.verified_at
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
        await self._cases.writes.write(failed)
        log.warning("%s: %s relapsed after %.1fs: %s", name, result.id, held, why)
        self._learn(run, failed)
        self._alert_after(run, failed)
        await self.carry_on(run, result, failed=failed, write_incident=False)

    async def carry_on(
        self, run: Run, last: Recovery, *, failed: Recovery, write_incident: bool
    ) -> None:
        """``failed`` did not fix ``run``'s incident: its next attempt, escalated, after the
        backoff — or give up past ``MAX_RECOVERY_ATTEMPTS`` or with no strategy left.
        ``last`` is the attempt whose reason the next keeps (not the relapse's)."""
        name = run.service.name
        run.failed.append(failed.strategy)
        if failed.attempt >= self._max_attempts:
            await self._give_up(run, failed)
            return
        try:
            recovery = self._next_attempt(run, last)
        except UnsupportedStrategyError as exc:
            log.error("%s: no strategy left to try: %s", name, exc.message)
            await self._give_up(run, failed)
            return
        spec = self._catalog.get(name)
        again = Run(
            spec,
            run.incident,
            recovery,
            down_since=run.incident.detected_at if run.incident else None,
            delay=spec.recovery.backoff.delay(failed.attempt),
            failed=list(run.failed),
        )
        try:
            await self.start(again, write_incident=write_incident)
        except ConflictError as exc:
            # Something else claimed the service meanwhile (an operator's trigger, a
            # deploy): it acts now; the incident stays open for the next look.
            log.warning("%s: next attempt not started: %s", name, exc.message)

    async def _wait_for_resources(self, run: Run, result: Recovery) -> bool:
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
        again = self._cases.new_recovery(
            run.service,
            run.incident,
            result.decision,
            result.trigger,
            result.reason.partition("; out of resources")[0],
            attempt=result.attempt,
            force=result.force,
            playbook=run.playbook if result.playbook_id else None,
        )
        self._attempting(run, again)
        await self._recorder.save_recovery(run.recovery)
        return True

    async def _execute(self, run: Run) -> Recovery:
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
            plan = plan_for(run.recovery.strategy, PlanInput(spec, instances, only))
            async with self._slots:
                return await self._executor.execute(
                    run.recovery, spec, plan, cancel=run.cancel, down_since=run.down_since
                )
        except Exception as exc:
            if isinstance(exc, StaleOwnerError):
                # Its replica lost the service meanwhile: the database refused the record,
                # as it should; the new owner looks after the service.
                log.warning("%s: attempt %s stopped: %s", run.service.name, run.recovery.id, exc)
            else:
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
            await self._cases.writes.write(failed)
            return failed

    async def _run_playbook(self, run: Run, spec: ServiceSpec, playbook: Playbook) -> Recovery:
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
        self, run: Run, spec: ServiceSpec, instances: tuple[Instance, ...]
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
                plan = plan_for(Strategy.ROLLBACK, PlanInput(moved, instances, version=target))
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

    def _next_attempt(self, run: Run, last: Recovery) -> Recovery:
        """The next attempt: the operator's strategy again, else the policy's choice. A
        rollback is not repeated (that would go one version further back each time): the
        service now runs the known-good version, so the next attempt restarts it."""
        spec = self._catalog.get(run.service.name)
        decision = decide(
            DecisionInput(
                service=spec.name,
                failure_type=run.incident.failure_type if run.incident else FailureType.UNKNOWN,
                supported=self._means.supported(spec),
                learned=self._learning.decide,
                previous=last,
                failed=tuple(run.failed),
                current_version=spec.current_version,
            )
        )
        return self._cases.new_recovery(
            spec,
            run.incident,
            decision,
            last.trigger,
            last.reason,
            attempt=last.attempt + 1,
            force=last.force,  # a forced run's later attempts bypass the budget too
        )

    async def _end_unstarted(self, run: Run, why: str) -> None:
        run.recovery = replace(
            run.recovery,
            status=RecoveryStatus.CANCELLED,
            outcome=Outcome.FAILURE,
            ended_at=self._clock.now(),
            reason=f"{run.recovery.reason}; {why}" if run.recovery.reason else why,
        )
        await self._cases.writes.write(run.recovery)

    async def _resolve(self, run: Run, summary: str) -> None:
        if run.incident is not None:
            await self._cases.close_incident(run.incident, IncidentStatus.RESOLVED, summary)

    def _alert_after(self, run: Run, result: Recovery) -> None:
        if self._alerter is None:
            return
        tried = run.tried(result)
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

    async def _give_up(self, run: Run, last: Recovery) -> None:
        self._cases.gave_up_at[last.service] = self._clock.monotonic()
        log.error(
            "%s: giving up after %d attempt(s); last: %s", last.service, last.attempt, last.id
        )
        incident = run.incident
        if incident is None:
            # An operator's restart of a working service left it broken: record that, so the
            # next look does not start a fresh series of automatic attempts on top.
            view = self._tracker.view(last.service)
            diagnosis = diagnose_status(view.status, view.reason)
            incident = self._cases.make_incident(last.service, diagnosis, IncidentSource.MANUAL)
        await self._cases.close_incident(
            incident,
            IncidentStatus.UNRESOLVED,
            f"gave up after {last.attempt} recovery attempt(s); last {last.id}",
        )
        if self._alerter is not None:
            tried = run.tried(last)
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
