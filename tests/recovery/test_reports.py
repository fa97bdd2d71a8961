"""Reported failures against the running engine: a report that was only recorded is acted
on by a later one that asks for action, or when the deploy that held it ends; two copies
of one alert arriving together open one incident; a late copy after the resolution changes
nothing; a monitor-only service's report is closed by its resolution; keys survive a
restart in the incidents' evidence."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from phoenix_server.domain.incidents import FailureType, IncidentStatus
from phoenix_server.domain.recoveries import Recovery, RecoveryStatus, RecoveryTrigger, Strategy
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin, ReportResult
from phoenix_server.recovery.claims import Activity
from phoenix_server.runtime import Runtime
from phoenix_server.store import incidents, recoveries
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import REPO, eventually, free_port, web_service_yaml

pytestmark = pytest.mark.e2e  # starts real processes

EXTERNAL = """
  - name: outside
    platform: external
    health: {tcp: "127.0.0.1:1", interval: 1s}
"""


def alert(key: str, *, recover: bool = True, firing: bool = True) -> FailureReport:
    return FailureReport(
        service="web",
        firing=firing,
        origin=ReportOrigin.ALERTMANAGER,
        key=key,
        summary="Alertmanager alert X",
        recover=recover,
    )


async def alert_recoveries(runtime: object) -> list[Recovery]:
    found = await history(runtime, service="web")  # type: ignore[arg-type]
    return [r for r in found if r.trigger is RecoveryTrigger.ALERT]


async def test_a_recorded_report_is_acted_on_when_asked_or_when_the_hold_ends(
    tmp_path: Path,
) -> None:
    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        await healthy(runtime, "web")
        intake = runtime.reports
        informing = await intake.receive(alert("k1", recover=False))
        assert informing.action is ReportAction.RECORDED
        acting = await intake.receive(alert("k2"))
        assert acting.action is ReportAction.JOINED and acting.recovery_id is not None
        assert acting.incident_id == informing.incident_id
        recovery = await finished(runtime, acting.recovery_id)
        assert recovery.incident_id == informing.incident_id
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the incident closed once the recovery held",
        )

        # A deploy holds the service: recorded now, acted on when the hold ends.
        deploy = runtime.orchestrator.claims.claim("web", Activity.DEPLOY, "a deploy")
        held = await intake.receive(alert("k3"))
        assert held.action is ReportAction.RECORDED and "when that ends" in held.reason
        assert len(await alert_recoveries(runtime)) == 1
        runtime.orchestrator.claims.release(deploy)

        async def second() -> Recovery | None:
            found = [r for r in await alert_recoveries(runtime) if r.id != recovery.id]
            return found[0] if found else None

        after = await eventually(second, timeout=10, message="acted on after the hold")
        assert after.incident_id == held.incident_id


async def test_copies_of_one_alert_open_one_incident_and_a_late_copy_changes_nothing(
    tmp_path: Path,
) -> None:
    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        await healthy(runtime, "web")
        intake = runtime.reports
        first, second = await asyncio.gather(
            intake.receive(alert("k", recover=False)), intake.receive(alert("k", recover=False))
        )
        assert {first.action, second.action} == {ReportAction.RECORDED, ReportAction.DUPLICATE}
        opened = [
            i
            for i in (
                await runtime.store.read(
                    incidents.list_incidents, service="web", status=None, limit=10, offset=0
                )
            )[0]
        ]
        assert len(opened) == 1
        resolved = await intake.receive(alert("k", recover=False, firing=False))
        assert resolved.action is ReportAction.RESOLVED
        late = await intake.receive(alert("k", recover=False))
        assert late.action is ReportAction.DUPLICATE and "resolved" in late.reason


async def test_a_monitor_only_services_report_is_closed_by_its_resolution(
    tmp_path: Path,
) -> None:
    async with engine(tmp_path, EXTERNAL) as runtime:
        report = replace(alert("e1"), service="outside")
        recorded = await runtime.reports.receive(report)
        assert recorded.action is ReportAction.RECORDED and "only monitor" in recorded.reason
        closed = await runtime.reports.receive(replace(report, firing=False))
        assert closed.action is ReportAction.RESOLVED


async def test_report_keys_survive_a_restart(tmp_path: Path) -> None:
    yaml = web_service_yaml("web", free_port())
    async with engine(tmp_path, yaml) as runtime:
        await healthy(runtime, "web")
        recorded = await runtime.reports.receive(alert("kept", recover=False))
        assert recorded.incident_id is not None
    async with engine(tmp_path, yaml) as runtime:
        again = await runtime.reports.receive(alert("kept", recover=False))
        assert again.action is ReportAction.DUPLICATE
        closed = await runtime.reports.receive(alert("kept", recover=False, firing=False))
        assert closed.action is ReportAction.RESOLVED
        incident = await runtime.store.read(incidents.get_incident, recorded.incident_id)
        assert incident.status is IncidentStatus.RESOLVED


async def test_a_crash_phoenix_sees_retypes_a_record_only_unknown_incident(
    tmp_path: Path,
) -> None:
    """A record-only report of type ``unknown`` is open when the service really crashes:
    the incident takes the type and evidence Phoenix observed, and the decision follows
    them (not "unknown → restart" on the report's word)."""
    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        await healthy(runtime, "web")
        recorded = await runtime.reports.receive(alert("k1", recover=False))
        assert recorded.action is ReportAction.RECORDED and recorded.incident_id is not None
        [pid] = [i.pid for i in runtime.local.instances("web") if i.alive and i.pid]
        os.kill(pid, signal.SIGKILL)

        async def acted() -> Recovery | None:
            found = [r for r in await history(runtime, service="web")]
            return found[0] if found else None

        recovery = await eventually(acted, timeout=15, message="a recovery of the crash")
        assert recovery.incident_id == recorded.incident_id, "the open incident goes on"
        assert "unknown" not in recovery.decision.reason, recovery.decision
        assert (await finished(runtime, recovery.id)).status is RecoveryStatus.COMPLETED
        incident = await runtime.store.read(incidents.get_incident, recorded.incident_id)
        assert incident.failure_type is FailureType.SERVICE_DOWN
        assert any("killed by SIGKILL" in e for e in incident.evidence), incident.evidence
        assert "observed by Phoenix" in incident.summary


async def test_an_alert_about_a_fixed_failure_is_stale_and_a_newer_one_is_news(
    tmp_path: Path,
) -> None:
    """After a Phoenix restart Alertmanager re-sends what fired before: an alert that began
    before the service's last successful recovery ended is about that fixed failure (not
    acted on, also after a restart); one that began after it is news, acted on even though
    Phoenix's own check says healthy (a SIGSTOPped database passes a TCP check)."""
    yaml = web_service_yaml("web", free_port())
    async with engine(tmp_path, yaml) as runtime:
        await healthy(runtime, "web")
        began = datetime.now(UTC)
        first = await runtime.reports.receive(replace(alert("a@1"), started_at=began))
        assert first.action is ReportAction.RECOVERING and first.recovery_id is not None
        fixed = await finished(runtime, first.recovery_id)
        assert fixed.status is RecoveryStatus.COMPLETED and fixed.ended_at is not None
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the incident closed once the recovery held",
        )

        late = replace(alert("a@2"), started_at=fixed.ended_at - timedelta(milliseconds=5))
        stale = await runtime.reports.receive(late)
        assert stale.action is ReportAction.STALE, stale
        assert fixed.id in stale.reason and stale.incident_id is None
        assert len(await alert_recoveries(runtime)) == 1, "nothing acted on"

        news = await runtime.reports.receive(
            replace(alert("b@1"), started_at=fixed.ended_at + timedelta(seconds=1))
        )
        assert news.action is ReportAction.RECOVERING and news.recovery_id is not None
        await finished(runtime, news.recovery_id)
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the second incident closed",
        )

    async with engine(tmp_path, yaml) as runtime:  # Phoenix restarted: read from the store
        await healthy(runtime, "web")
        again = await runtime.reports.receive(replace(alert("c@1"), started_at=began))
        assert again.action is ReportAction.STALE, again
        assert news.recovery_id in again.reason and "ended at" in again.reason


def _dependent_pair(flag: Path) -> str:
    check = (
        f'["{{python}}", "-c", "import os, sys; sys.exit(os.path.exists(sys.argv[1]))", "{flag}"]'
    )
    return f"""
  - name: db
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    health: {{command: {check}, interval: 0.3s, timeout: 1s, failure_threshold: 2}}
    stop: {{grace: 2s}}
  - name: app
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    depends_on: [db]
    health: {{command: {check}, interval: 0.3s, timeout: 1s, failure_threshold: 1}}
    stop: {{grace: 2s}}
"""


async def test_an_alert_about_a_service_held_for_its_dependency_waits_like_its_own_failure(
    tmp_path: Path,
) -> None:
    """An alert about ``app`` while Phoenix holds it for its failing dependency ``db`` used
    to restart it at once; now it is recorded and held the same way, and once ``db`` is
    back and ``app`` healthy again nothing is done to ``app``."""
    flag = tmp_path / "db-is-broken"
    async with engine(tmp_path, _dependent_pair(flag), PHOENIX_ALERT_GRACE="1s") as runtime:
        await healthy(runtime, "db")
        await healthy(runtime, "app")
        # db is not recovered: the hold is app's.
        held_db = runtime.orchestrator.claims.claim("db", Activity.DEPLOY, "a test")
        flag.touch()
        await eventually(
            lambda: runtime.tracker.waiting_on("app") == "db",
            timeout=15,
            message="app held for db",
        )
        report = replace(alert("dep@1"), service="app")
        held = await runtime.reports.receive(report)
        assert held.action is ReportAction.RECORDED, held
        assert "its dependency db is failing" in held.reason and held.recovery_id is None
        assert runtime.orchestrator.report_waiting("app")

        flag.unlink()
        runtime.orchestrator.claims.release(held_db)
        await healthy(runtime, "app")
        await eventually(
            lambda: not runtime.orchestrator.report_waiting("app"),
            timeout=10,
            message="the held report dropped once app is healthy with db back",
        )
        assert runtime.orchestrator.active_recovery("app") is None
        assert [r for r in await history(runtime, service="app")] == [], "app not restarted"

        # Yet the alert keeps firing past the grace: what it sees was not db's doing.
        acted = await _repeated_until_acted_on(runtime, report)
        assert acted.action is ReportAction.JOINED and acted.recovery_id is not None
        assert "after its dependency came back" in acted.reason
        assert acted.incident_id == held.incident_id


async def test_an_incident_stays_open_while_any_alert_that_joined_it_fires(
    tmp_path: Path,
) -> None:
    """Two alerts of one group about a monitor-only service: the first opens the incident,
    the second joins it. The first's resolution leaves it open (the second still fires; its
    copies name the incident); the second's closes it."""
    async with engine(tmp_path, EXTERNAL) as runtime:
        first = replace(alert("g@1"), service="outside")
        second = replace(alert("g@2"), service="outside")
        opened = await runtime.reports.receive(first)
        joined = await runtime.reports.receive(second)
        assert opened.action is ReportAction.RECORDED and opened.incident_id is not None
        assert joined.action is ReportAction.JOINED
        assert joined.incident_id == opened.incident_id

        kept = await runtime.reports.receive(replace(first, firing=False))
        assert kept.action is ReportAction.IGNORED, kept
        assert "stays open: 1 other report(s)" in kept.reason
        assert runtime.orchestrator.open_incident_id("outside") == opened.incident_id
        repeat = await runtime.reports.receive(second)
        assert repeat.action is ReportAction.DUPLICATE
        assert repeat.incident_id == opened.incident_id

        closed = await runtime.reports.receive(replace(second, firing=False))
        assert closed.action is ReportAction.RESOLVED, closed
        assert runtime.orchestrator.open_incident_id("outside") is None
        again = await runtime.reports.receive(replace(second, firing=False))
        assert again.action is ReportAction.IGNORED and "already resolved" in again.reason


async def test_an_alert_phoenix_acted_on_is_still_a_duplicate_after_a_restart(
    tmp_path: Path,
) -> None:
    """The incident it opened is long closed, yet Alertmanager re-sends the firing alert
    after Phoenix restarts: the key comes back from the store, so nothing is restarted
    again. (No ``startsAt``: the stale rule cannot be what stops it.)"""
    yaml = web_service_yaml("web", free_port())
    async with engine(tmp_path, yaml) as runtime:
        await healthy(runtime, "web")
        first = await runtime.reports.receive(alert("once@1"))
        assert first.action is ReportAction.RECOVERING and first.recovery_id is not None
        await finished(runtime, first.recovery_id)
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the incident closed once the recovery held",
        )
        resolved_early = await runtime.reports.receive(alert("gone@1", firing=False))
        assert resolved_early.action is ReportAction.IGNORED

    async with engine(tmp_path, yaml) as runtime:
        await healthy(runtime, "web")
        again = await runtime.reports.receive(alert("once@1"))
        assert again.action is ReportAction.DUPLICATE, again
        assert again.incident_id == first.incident_id
        late = await runtime.reports.receive(alert("gone@1"))
        assert late.action is ReportAction.DUPLICATE and "resolved" in late.reason
        assert len(await alert_recoveries(runtime)) == 1, "nothing restarted again"


def _alert_only_service(stabilisation: str) -> str:
    """Phoenix checks only that the port accepts connections: the alert sees more."""
    return f"""
  - name: web
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {REPO}
    port: {free_port()}
    health: {{tcp: "127.0.0.1:{{port}}", interval: 0.3s}}
    recovery: {{stabilisation: {stabilisation}}}
    replicas: {{max: 2}}
    stop: {{grace: 2s}}
"""


async def _repeated_until_acted_on(runtime: Runtime, report: FailureReport) -> ReportResult:
    """Alertmanager's repeats of a firing alert, until one is more than a duplicate."""

    async def repeat() -> ReportResult | None:
        result = await runtime.reports.receive(report)
        return None if result.action is ReportAction.DUPLICATE else result

    return await eventually(repeat, timeout=15, interval=0.2, message="a repeat acted on")


async def test_an_alert_still_firing_after_the_grace_fails_a_recovery_still_proving_itself(
    tmp_path: Path,
) -> None:
    """Phoenix's check passes after the restart, but the alert that opened the incident keeps
    firing: within the grace that is a duplicate (the alert may be resolving); after it, the
    restart did not fix it — recorded failed, and the next attempt escalates."""
    async with engine(tmp_path, _alert_only_service("60s"), PHOENIX_ALERT_GRACE="1s") as runtime:
        await healthy(runtime, "web")
        # Slow answers: the table says scale out first, then restart.
        report = replace(alert("still@1"), failure_type=FailureType.LATENCY_DEGRADATION)
        first = await runtime.reports.receive(report)
        assert first.action is ReportAction.RECOVERING and first.recovery_id is not None
        scaled = await finished(runtime, first.recovery_id)
        assert scaled.status is RecoveryStatus.COMPLETED and scaled.strategy is Strategy.SCALE
        soon = await runtime.reports.receive(report)
        assert soon.action is ReportAction.DUPLICATE, "within the grace"

        later = await _repeated_until_acted_on(runtime, report)
        assert later.action is ReportAction.JOINED and later.incident_id == first.incident_id
        assert "did not fix it" in later.reason and later.recovery_id is not None
        failed = await runtime.store.read(recoveries.get_recovery, first.recovery_id)
        assert failed.status is RecoveryStatus.FAILED
        assert "still reports it failing" in failed.reason
        escalated = await finished(runtime, later.recovery_id)
        assert escalated.attempt == 2 and escalated.incident_id == first.incident_id
        assert escalated.strategy is Strategy.RESTART, "the next strategy"

        resolved = await runtime.reports.receive(replace(report, firing=False))
        assert resolved.action is ReportAction.RESOLVED, resolved
        incident = await runtime.store.read(incidents.get_incident, first.incident_id or "")
        assert incident.status is IncidentStatus.RESOLVED


async def test_an_alert_still_firing_after_its_incident_closed_reopens_it(
    tmp_path: Path,
) -> None:
    """The restart held for its stabilisation period and closed the incident; the alert's
    next repeat, past the grace, says it fixed nothing: the incident is reopened and the
    next attempt runs (the first stays a success: its verdict was final and counted)."""
    async with engine(tmp_path, _alert_only_service("0.3s"), PHOENIX_ALERT_GRACE="1s") as runtime:
        await healthy(runtime, "web")
        report = alert("persisting@1")
        first = await runtime.reports.receive(report)
        assert first.recovery_id is not None
        await finished(runtime, first.recovery_id)
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the incident closed once the restart held",
        )

        later = await _repeated_until_acted_on(runtime, report)
        assert later.action is ReportAction.JOINED and "did not fix it" in later.reason
        assert later.incident_id == first.incident_id and later.recovery_id is not None
        assert runtime.orchestrator.open_incident_id("web") == first.incident_id
        reopened = await runtime.store.read(incidents.get_incident, first.incident_id or "")
        assert reopened.status is IncidentStatus.OPEN and "reopened" in reopened.summary
        second = await finished(runtime, later.recovery_id)
        assert second.attempt == 2
        kept = await runtime.store.read(recoveries.get_recovery, first.recovery_id)
        assert kept.status is RecoveryStatus.COMPLETED


async def test_a_second_alert_while_the_recovery_proves_itself_joins_it(tmp_path: Path) -> None:
    """A probe that failed during Phoenix's own restart fires a second alert (another key)
    while the restart is proving itself: it joins that incident and restarts nothing."""
    async with engine(tmp_path, _alert_only_service("60s")) as runtime:
        await healthy(runtime, "web")
        first = await runtime.reports.receive(alert("p@1"))
        assert first.recovery_id is not None
        await finished(runtime, first.recovery_id)
        second = await runtime.reports.receive(alert("p@2"))
        assert second.action is ReportAction.JOINED, second
        assert "proving itself" in second.reason
        assert (second.incident_id, second.recovery_id) == (first.incident_id, first.recovery_id)
        assert len(await alert_recoveries(runtime)) == 1


async def test_a_stale_alert_still_firing_past_the_grace_is_news(tmp_path: Path) -> None:
    """Stale when it arrives (it began before the last recovery ended), but Alertmanager
    keeps re-sending it well after that recovery: the recovery did not fix what it sees
    (or the two clocks disagree), so it is acted on."""
    async with engine(tmp_path, _alert_only_service("0.3s"), PHOENIX_ALERT_GRACE="1s") as runtime:
        await healthy(runtime, "web")
        first = await runtime.reports.receive(alert("s@1"))
        assert first.recovery_id is not None
        fixed = await finished(runtime, first.recovery_id)
        assert fixed.ended_at is not None
        await eventually(
            lambda: runtime.orchestrator.open_incident_id("web") is None,
            timeout=20,
            message="the incident closed once the recovery held",
        )
        late = replace(alert("s@2"), started_at=fixed.ended_at - timedelta(milliseconds=5))
        assert (await runtime.reports.receive(late)).action is ReportAction.STALE
        acted = await _repeated_until_acted_on(runtime, late)
        assert acted.action is ReportAction.RECOVERING and acted.recovery_id is not None
        assert acted.incident_id != first.incident_id
