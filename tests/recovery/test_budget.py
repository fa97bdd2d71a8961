"""Restart storms: a service that fails again right after every recovery backs off, spends
its recovery budget, is then left alone with one alert, answers a forced trigger, and gets
its budget back once it has stayed healthy for ``reset_after``."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

from phoenix_server.domain.errors import ConflictError
from phoenix_server.domain.incidents import IncidentStatus
from phoenix_server.domain.recoveries import Recovery, RecoveryStatus, Strategy
from phoenix_server.store import incidents
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import REPO, eventually

pytestmark = pytest.mark.e2e  # starts real processes


def storm(flag: Path) -> str:
    # Crashes 0.3 s after each start while the flag file exists; otherwise keeps running.
    script = (
        "import os, sys, time; time.sleep(0.3); "
        f"sys.exit(3) if os.path.exists({str(flag)!r}) else time.sleep(3600)"
    )
    command = json.dumps(["{python}", "-c", script])
    return f"""
  - name: stormy
    command: {command}
    cwd: {REPO}
    health: {{process: true, interval: 100ms}}
    recovery:
      backoff: {{initial: 100ms, max: 200ms, reset_after: 1s}}
      budget: {{attempts: 3, window: 1h}}
"""


async def test_a_storm_spends_the_budget_then_waits_for_a_person_or_a_healthy_spell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flag = tmp_path / "crash"
    flag.touch()
    caplog.set_level(logging.WARNING)
    # More attempts per incident than the budget allows: the budget is what stops them.
    async with engine(tmp_path, storm(flag), MAX_RECOVERY_ATTEMPTS="10") as runtime:

        async def stopped() -> list[Recovery] | None:
            found = await history(runtime, service="stormy")
            spent = [r for r in found if "recovery budget spent" in r.reason]
            return found if spent else None

        found = await eventually(stopped, timeout=30, interval=0.1, message="budget spent")
        attempts = [r for r in found if r.status is not RecoveryStatus.CANCELLED]
        [refused] = [r for r in found if "recovery budget spent" in r.reason]
        assert len(attempts) == 3, [(r.status, r.reason) for r in found]
        assert refused.status is RecoveryStatus.CANCELLED and refused.steps == ()
        assert "3 attempt(s) within 3600s" in refused.reason
        incident = await runtime.store.read(incidents.get_incident, refused.incident_id or "")
        assert incident.status is IncidentStatus.UNRESOLVED
        assert "a forced trigger" in incident.summary
        budget_alerts = [r for r in caplog.records if "recovery budget spent" in r.getMessage()]
        assert len([r for r in budget_alerts if "not sent" in r.getMessage()]) == 1

        # A person asks without force: refused, saying how to override.
        with pytest.raises(ConflictError, match="force: true overrides it"):
            await runtime.orchestrator.trigger(
                service="stormy", strategy=Strategy.RESTART, reason="try", force=False
            )
        # The fix is in; the forced restart is not counted against the spent budget.
        flag.unlink()
        forced = await runtime.orchestrator.trigger(
            service="stormy", strategy=Strategy.RESTART, reason="fixed", force=True
        )
        assert (await finished(runtime, forced.id)).status is RecoveryStatus.COMPLETED
        await healthy(runtime, "stormy")

        # Healthy for reset_after (1 s) and then a crash: the budget is back, Phoenix acts.
        [pid] = [i.pid for i in runtime.local.instances("stormy") if i.alive and i.pid]

        async def healthy_long_enough() -> bool:
            healthy_for = runtime.orchestrator.claims.healthy_for("stormy")
            return healthy_for is not None and healthy_for > 1.2

        await eventually(healthy_long_enough, timeout=10, message="healthy for reset_after")
        os.kill(pid, signal.SIGKILL)

        async def recovered_again() -> Recovery | None:
            found = await history(runtime, service="stormy")
            newer = [r for r in found if r.created_at > forced.created_at and r.id != forced.id]
            done = [r for r in newer if r.status is RecoveryStatus.COMPLETED]
            return done[0] if done else None

        again = await eventually(recovered_again, timeout=20, message="recovered after reset")
        assert "budget" not in again.reason
