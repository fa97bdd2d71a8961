"""The engine end to end in one process: real services, real probes, real SQLite.

These drive :class:`Runtime` directly (no HTTP) so each recovery rule can be checked
against the records it leaves: incidents, attempts, steps, timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from phoenix_server.domain.errors import RecoveryInProgressError, UnsupportedStrategyError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.domain.recoveries import (
    DecisionSource,
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    StepStatus,
    Strategy,
)
from phoenix_server.recovery.claims import Activity
from phoenix_server.store import incidents, recoveries
from tests.recovery.engine import engine, finished, healthy, history, live_pid
from tests.support import REPO, eventually, free_port, web_service_yaml

pytestmark = pytest.mark.e2e  # starts real processes


async def test_a_killed_service_is_restarted_and_every_step_recorded(tmp_path: Path) -> None:
    port = free_port()
    async with engine(tmp_path, web_service_yaml("web", port)) as runtime:
        await healthy(runtime, "web")
        old_pid = live_pid(runtime, "web")
        os.kill(old_pid, signal.SIGKILL)
        [recovery] = await eventually(lambda: history(runtime, service="web"), message="recovery")
        recovery = await finished(runtime, recovery.id)
        assert recovery.status is RecoveryStatus.COMPLETED and recovery.outcome is Outcome.SUCCESS
        assert recovery.trigger is RecoveryTrigger.AUTOMATIC and recovery.attempt == 1
        assert recovery.decision.source is DecisionSource.DEFAULT
        assert recovery.decision.strategy is Strategy.RESTART
        assert [s.name for s in recovery.steps] == [
            "Graceful shutdown",
            "Service restart",
            "Health verification",
            "Traffic restoration",
        ]
        assert all(s.status is StepStatus.COMPLETED for s in recovery.steps)
        assert all(s.duration is not None and s.duration >= 0 for s in recovery.steps)
        assert "killed by SIGKILL" in (recovery.steps[0].detail or "")
        assert recovery.metrics.downtime is not None and 0 < recovery.metrics.downtime < 5
        assert recovery.duration is not None and recovery.duration < recovery.metrics.downtime + 1
        assert live_pid(runtime, "web") != old_pid
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        incident = await runtime.store.read(incidents.get_incident, recovery.incident_id or "")
        assert incident.failure_type is FailureType.SERVICE_DOWN
        assert incident.status is IncidentStatus.OPEN, "open until the recovery has held"

        async def resolved() -> Incident | None:
            found = await runtime.store.read(incidents.get_incident, incident.id)
            return found if found.status is IncidentStatus.RESOLVED else None

        # Healthy for the stabilisation period (reset_after, 10 s by default): a success.
        incident = await eventually(resolved, timeout=20, interval=0.1, message="resolved")
        assert incident.resolved_at is not None
        [running] = runtime.local.instances("web")
        assert running.state.value == "running", "verified instances are put in rotation"


NEVER_HEALTHY = f"""
  - name: mute
    command: ["{{python}}", "-c", "import time; time.sleep(600)"]
    cwd: {REPO}
    port: {free_port()}
    health: {{tcp: "127.0.0.1:{{port}}", interval: 100ms, timeout: 100ms, startup_timeout: 500ms}}
    stop: {{grace: 1s}}
    recovery: {{backoff: {{initial: 100ms}}}}
"""


async def test_failed_attempts_are_retried_then_given_up(tmp_path: Path) -> None:
    async with engine(tmp_path, NEVER_HEALTHY, MAX_RECOVERY_ATTEMPTS="2") as runtime:

        async def gave_up() -> bool:
            found = await runtime.store.read(
                incidents.list_incidents, service="mute", status=None, limit=5, offset=0
            )
            return bool(found[0]) and found[0][0].status is IncidentStatus.UNRESOLVED

        await eventually(gave_up, timeout=20, interval=0.1, message="gave up")
        attempts = [
            await runtime.store.read(recoveries.get_recovery, r.id)
            for r in sorted(await history(runtime, service="mute"), key=lambda r: r.attempt)
        ]
        assert [r.attempt for r in attempts] == [1, 2]
        assert len({r.incident_id for r in attempts}) == 1, "attempts share their incident"
        for attempt in attempts:
            assert attempt.status is RecoveryStatus.FAILED and attempt.outcome is Outcome.FAILURE
            verification = attempt.steps[2]
            assert verification.status is StepStatus.TIMED_OUT
            assert "not healthy within 0.5s" in (verification.detail or "")
            assert "connection refused" in (verification.detail or "")
            assert attempt.steps[3].status is StepStatus.SKIPPED
            assert "not run: step 'Health verification' timed_out" in (
                attempt.steps[3].detail or ""
            )
        assert attempts[0].ended_at is not None
        gap = (attempts[1].start_time - attempts[0].ended_at).total_seconds()
        assert gap >= 0.09, "backoff between attempts"
        await asyncio.sleep(0.5)
        assert len(await history(runtime, service="mute")) == 2, "nothing more after giving up"


CRASH_LOOP = f"""
  - name: crasher
    command: ["{{python}}", "-c", "import sys, time; time.sleep(0.3); sys.exit(3)"]
    cwd: {REPO}
    health: {{process: true, interval: 100ms}}
    recovery: {{backoff: {{initial: 200ms, max: 800ms, reset_after: 10s}}}}
"""


async def test_a_crash_loop_is_one_incident_of_failed_attempts_not_a_run_of_successes(
    tmp_path: Path,
) -> None:
    """Each restart verifies, then the process dies 0.3 s later, inside the stabilisation
    period: that attempt failed (it is not a success), the incident goes on with the next
    attempt after the backoff, and MAX_RECOVERY_ATTEMPTS ends it."""
    async with engine(tmp_path, CRASH_LOOP, MAX_RECOVERY_ATTEMPTS="4") as runtime:

        async def at_least(count: int) -> list[Recovery] | None:
            found = await history(runtime, service="crasher")
            ended = [r for r in found if r.status.terminal]
            return sorted(ended, key=lambda r: r.created_at) if len(ended) >= count else None

        loop = await eventually(lambda: at_least(4), timeout=20, interval=0.1, message="4 runs")
        assert [r.attempt for r in loop] == [1, 2, 3, 4]
        assert len({r.incident_id for r in loop}) == 1, "one incident, not one per crash"
        assert all(r.status is RecoveryStatus.FAILED for r in loop[:3]), loop
        assert all("relapsed" in r.reason for r in loop[:3])
        assert all(r.outcome is Outcome.FAILURE for r in loop[:3])
        for index, expected in ((1, 0.2), (2, 0.4), (3, 0.8)):
            waited = (loop[index].start_time - loop[index].created_at).total_seconds()
            assert waited >= expected - 0.02, f"attempt {index + 1} waited {waited:.3f}s"

        async def given_up() -> Incident | None:
            found = await runtime.store.read(incidents.get_incident, loop[0].incident_id or "")
            return found if found.status is IncidentStatus.UNRESOLVED else None

        await eventually(given_up, timeout=10, message="the incident given up on")
        summary = await runtime.store.read(recoveries.recovery_totals)
        successes = sum(n for _s, _st, _status, outcome, n in summary if outcome == "success")
        assert successes == 0, "no crash counted as a recovery"


async def test_a_run_that_lost_its_claim_stops_before_acting(tmp_path: Path) -> None:
    """The claim's token is what lets a run act: a run waiting out its backoff whose claim
    is taken by someone else (a lease lost, with several replicas) ends without acting, and
    Phoenix starts nothing on the service while the other holder has it."""
    slow_backoff = CRASH_LOOP.replace("initial: 200ms, max: 800ms", "initial: 3s, max: 3s")
    async with engine(tmp_path, slow_backoff, MAX_RECOVERY_ATTEMPTS="4") as runtime:
        claims = runtime.orchestrator.claims

        async def second_attempt_waiting() -> Recovery | None:
            found = await history(runtime, service="crasher")
            return next((r for r in found if r.attempt == 2 and not r.status.terminal), None)

        waiting = await eventually(second_attempt_waiting, timeout=20, message="attempt 2")
        held = claims.holder("crasher")
        assert held is not None and held.label == waiting.id
        claims.release(held)
        taken = claims.claim("crasher", Activity.DEPLOY, "deployed (by another replica)")
        ended = await finished(runtime, waiting.id)
        assert ended.status is RecoveryStatus.CANCELLED, ended
        assert "its claim of the service is no longer held" in ended.reason
        assert ended.steps == () or all(s.status is StepStatus.PENDING for s in ended.steps)
        await runtime.orchestrator.evaluate("crasher")  # what the sweep does: still held
        assert [r.id for r in await history(runtime, service="crasher") if r.attempt > 2] == []
        assert claims.holder("crasher") == taken
        claims.release(taken)


SHORT_LIVED = f"""
  - name: crasher
    command: ["{{python}}", "-c", "import sys, time; time.sleep(1.0); sys.exit(3)"]
    cwd: {REPO}
    health: {{process: true, interval: 100ms}}
    recovery: {{backoff: {{initial: 200ms, max: 800ms, reset_after: 10s}}, stabilisation: 2s}}
"""


async def test_a_relapse_while_a_deploy_holds_the_service_waits_for_it(tmp_path: Path) -> None:
    """A recovery still proving itself fails (the process dies) while a deploy holds the
    service: the attempt is recorded failed, the next one is not forced in on top of the
    deploy (nor does the watch die trying), and once the deploy ends Phoenix acts again
    on the same incident."""
    async with engine(tmp_path, SHORT_LIVED, MAX_RECOVERY_ATTEMPTS="4") as runtime:
        orchestrator = runtime.orchestrator
        proving = await eventually(
            lambda: next(iter(orchestrator.unsettled_ids()), None),
            timeout=20,
            interval=0.005,
            message="a recovery proving itself",
        )
        deploy = orchestrator.claims.claim("crasher", Activity.DEPLOY, "deployed (dep-test)")

        async def relapsed() -> Recovery | None:
            found = await runtime.store.read(recoveries.get_recovery, proving)
            return found if found.status is RecoveryStatus.FAILED else None

        failed = await eventually(relapsed, timeout=10, message="the attempt relapsed")
        assert "relapsed" in failed.reason and failed.incident_id is not None
        assert orchestrator.active_recovery("crasher") is None
        assert orchestrator.open_incident_id("crasher") == failed.incident_id
        assert runtime.dead_tasks() == []
        assert [r.id for r in await history(runtime, service="crasher")] == [proving]

        orchestrator.claims.release(deploy)

        async def acted_again() -> Recovery | None:
            found = await history(runtime, service="crasher")
            return next((r for r in found if r.id != proving), None)

        again = await eventually(acted_again, timeout=10, message="a recovery after the deploy")
        assert again.incident_id == failed.incident_id


async def test_a_manual_restart_of_a_healthy_service(tmp_path: Path) -> None:
    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        await healthy(runtime, "web")
        recovery = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.RESTART, reason="rotate credentials", force=False
        )
        assert recovery.status is RecoveryStatus.IN_PROGRESS
        assert recovery.decision.source is DecisionSource.MANUAL
        stored = await runtime.store.read(recoveries.get_recovery, recovery.id)
        assert stored.reason == "rotate credentials", "acknowledged means recorded"
        done = await finished(runtime, recovery.id)
        assert done.status is RecoveryStatus.COMPLETED
        assert done.metrics.downtime is not None and 0 < done.metrics.downtime < 5
        assert done.estimated_duration == 10.0, "the default until there is history"
        again = await runtime.orchestrator.trigger(
            service="web", strategy=None, reason="", force=False
        )
        assert again.decision.source is DecisionSource.DEFAULT
        assert again.estimated_duration == pytest.approx(done.duration, abs=0.01)
        await finished(runtime, again.id)


async def test_a_service_lost_to_another_replica_stops_its_recovery_mid_step(
    tmp_path: Path,
) -> None:
    """Losing the lease (let_go) is no operator's cancel: the step under way is not run to
    its end — the new owner may act once the lease runs out — and nothing of it is recorded
    as done here."""
    slow_stop = (
        web_service_yaml("web", free_port())
        .replace('"--name", "{name}"]', '"--name", "{name}", "--ignore-sigterm"]')
        .replace("stop: {grace: 2s}", "stop: {grace: 8s}")
    )
    async with engine(tmp_path, slow_stop) as runtime:
        await healthy(runtime, "web")
        first = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.RESTART, reason="first", force=False
        )

        async def stopping() -> bool:
            stored = await runtime.store.read(recoveries.get_recovery, first.id)
            return bool(stored.steps) and stored.steps[0].status is StepStatus.RUNNING

        await eventually(stopping, message="the recovery in its 8 s shutdown step")
        runtime.orchestrator.let_go("web")
        await eventually(
            lambda: not runtime.orchestrator.busy("web"),
            timeout=2,
            message="the run ended at once, not after the step's 8 s grace",
        )
        stored = await runtime.store.read(recoveries.get_recovery, first.id)
        # Without a cluster nothing fences this record; with one, the database refuses it
        # once the lease has run out and the new owner closes it as interrupted.
        assert stored.status is RecoveryStatus.INTERRUPTED, stored
        assert stored.steps[0].status is not StepStatus.COMPLETED, "the step was not run out"


async def test_one_recovery_per_service_unless_forced(tmp_path: Path) -> None:
    slow_stop = web_service_yaml("web", free_port()).replace(
        '"--name", "{name}"]', '"--name", "{name}", "--ignore-sigterm"]'
    )
    async with engine(tmp_path, slow_stop) as runtime:
        await healthy(runtime, "web")
        first = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.RESTART, reason="first", force=False
        )
        with pytest.raises(RecoveryInProgressError) as refused:
            await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.RESTART, reason="second", force=False
            )
        assert refused.value.recovery_id == first.id
        # What the heartbeat keeps from being handed to another replica meanwhile.
        assert runtime.orchestrator.engaged("web")
        assert runtime.orchestrator.engaged_services() == {"web"}

        async def stopping() -> bool:
            stored = await runtime.store.read(recoveries.get_recovery, first.id)
            return bool(stored.steps) and stored.steps[0].status is StepStatus.RUNNING

        await eventually(stopping, message="first recovery in its shutdown step")
        forced = await runtime.orchestrator.trigger(
            service="web", strategy=Strategy.RESTART, reason="forced", force=True
        )
        assert forced.status is RecoveryStatus.PENDING, "waits for the cancelled one's step"
        cancelled = await finished(runtime, first.id)
        assert cancelled.status is RecoveryStatus.CANCELLED
        assert cancelled.outcome is Outcome.FAILURE, "a cancelled recovery did not recover"
        assert cancelled.steps[0].status is StepStatus.COMPLETED, "its current step finished"
        assert {s.status for s in cancelled.steps[1:]} == {StepStatus.SKIPPED}
        done = await finished(runtime, forced.id)
        assert done.status is RecoveryStatus.COMPLETED and done.force


async def test_an_unsupported_strategy_is_refused_before_anything_happens(tmp_path: Path) -> None:
    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        with pytest.raises(UnsupportedStrategyError, match="declares no backup"):
            await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.FAILOVER, reason="", force=False
            )
        assert await history(runtime) == []


async def test_with_auto_recovery_off_failures_are_only_recorded(tmp_path: Path) -> None:
    async with engine(
        tmp_path, web_service_yaml("web", free_port()), AUTO_RECOVERY="false"
    ) as runtime:
        await healthy(runtime, "web")
        os.kill(live_pid(runtime, "web"), signal.SIGKILL)

        async def opened() -> list[object]:
            found, _ = await runtime.store.read(
                incidents.list_incidents,
                service="web",
                status=IncidentStatus.OPEN,
                limit=5,
                offset=0,
            )
            return list(found)

        await eventually(opened, message="incident recorded")
        await asyncio.sleep(0.5)
        assert await history(runtime) == []
        assert runtime.tracker.status("web") is ServiceStatus.UNHEALTHY


HANGER = """
  - name: hanger
    command: ["{python}", "-m", "examples.services.web", "--port", "{port}", "--hang-after", "1"]
    cwd: REPO
    port: PORT
    health: {http: "http://127.0.0.1:{port}/health", interval: 200ms, timeout: 200ms, failure_threshold: 2, startup_timeout: 5s}
    stop: {grace: 500ms}
"""


async def test_a_hung_service_is_found_by_its_probe_and_restarted(tmp_path: Path) -> None:
    yaml = HANGER.replace("REPO", str(REPO)).replace("PORT", str(free_port()))
    async with engine(tmp_path, yaml) as runtime:
        await healthy(runtime, "hanger")
        first_pid = live_pid(runtime, "hanger")
        [recovery] = await eventually(
            lambda: history(runtime, service="hanger"), timeout=10, message="recovery"
        )
        done = await finished(runtime, recovery.id)
        assert done.status is RecoveryStatus.COMPLETED
        assert "health check failing" in done.reason and "no answer within 0.2s" in done.reason
        assert "stopped hanger-" in (done.steps[0].detail or "")
        assert first_pid != live_pid(runtime, "hanger")


SLOW_START = f"""
  - name: sluggish
    command: ["{{python}}", "-c", "import time; time.sleep(600)"]
    cwd: {REPO}
    port: {free_port()}
    health: {{tcp: "127.0.0.1:{{port}}", interval: 100ms, startup_timeout: 30s}}
    stop: {{grace: 1s}}
"""


async def test_an_attempt_stops_at_the_recovery_timeout(tmp_path: Path) -> None:
    async with engine(tmp_path, SLOW_START, RECOVERY_TIMEOUT="1s") as runtime:
        recovery = await runtime.orchestrator.trigger(
            service="sluggish", strategy=Strategy.RESTART, reason="", force=False
        )
        done = await finished(runtime, recovery.id, timeout=10)
        assert done.status is RecoveryStatus.FAILED
        verification = done.steps[2]
        assert verification.status is StepStatus.TIMED_OUT
        assert (verification.detail or "").startswith("stopped at the recovery timeout (1s)")
        assert done.duration is not None and done.duration < 2.5, "bounded by RECOVERY_TIMEOUT"


FLASH = f"""
  - name: flash
    command: ["{{python}}", "-c", "import socket, time, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {{port}})); s.listen(); time.sleep(0.01); sys.exit(4)"]
    cwd: {REPO}
    port: {free_port()}
    health: {{tcp: "127.0.0.1:{{port}}", interval: 1s}}
    recovery: {{backoff: {{initial: 100ms, max: 200ms, reset_after: 5s}}}}
"""


async def test_a_failure_while_a_recovery_finishes_is_not_lost(tmp_path: Path) -> None:
    """The instance passes verification and dies milliseconds later, while Phoenix is still
    recording the recovery's success: Phoenix must look again and act, not stay blind."""
    async with engine(tmp_path, FLASH) as runtime:

        async def repeated() -> list[Recovery] | None:
            found = [r for r in await history(runtime, service="flash") if r.status.terminal]
            relapsed = [r for r in found if "relapsed" in r.reason]
            return found if len(relapsed) >= 2 else None

        runs = await eventually(
            repeated, timeout=20, interval=0.1, message="Phoenix to keep acting"
        )
        # The newest attempt may still be inside its stabilisation period (verified, not yet
        # judged); every one before it must have been judged a failure, never left "completed".
        runs.sort(key=lambda r: r.created_at)
        settled = runs[:-1]
        assert all(r.status is RecoveryStatus.FAILED for r in settled), [
            (r.id, r.status, r.reason) for r in settled
        ]


def flaky(flag: Path) -> str:
    script = (
        f"import os, sys, time; sys.exit(3) if os.path.exists({str(flag)!r}) else time.sleep(600)"
    )
    command = json.dumps(["{python}", "-c", script])
    return f"""
  - name: flaky
    command: {command}
    cwd: {REPO}
    health: {{process: true, interval: 100ms}}
    recovery:
      backoff: {{initial: 100ms, max: 200ms, reset_after: 500ms}}
      budget: {{attempts: 50, window: 1h}}
"""


async def test_a_service_given_up_on_is_tried_again_once_the_cause_clears(
    tmp_path: Path,
) -> None:
    """Level-triggered: Phoenix gives up after MAX_RECOVERY_ATTEMPTS, but a service that is
    still down is looked at again (``try_again_after``) while its budget allows, so a cause
    that has since cleared (here: a flag file) does not leave it down for good."""
    flag = tmp_path / "broken"
    flag.touch()
    async with engine(
        tmp_path, flaky(flag), MAX_RECOVERY_ATTEMPTS="2", PHOENIX_TRY_AGAIN_AFTER="1s"
    ) as runtime:

        async def gave_up() -> Incident | None:
            found, _ = await runtime.store.read(
                incidents.list_incidents, service="flaky", status=None, limit=5, offset=0
            )
            return found[0] if found and found[0].status is IncidentStatus.UNRESOLVED else None

        incident = await eventually(gave_up, timeout=20, interval=0.1, message="gave up")
        flag.unlink()  # the cause clears

        async def recovered() -> Recovery | None:
            found = await history(runtime, service="flaky")
            done = [r for r in found if r.status is RecoveryStatus.COMPLETED]
            return done[0] if done else None

        again = await eventually(recovered, timeout=30, interval=0.2, message="tried again")
        assert again.incident_id == incident.id, "the same incident goes on"
        await healthy(runtime, "flaky")
