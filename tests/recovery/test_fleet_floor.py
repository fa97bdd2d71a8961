"""The fleet floor: when most of the fleet goes down at once, Phoenix stops starting
automatic recoveries (a mass failure usually means the network or its own view is broken),
says why once, still obeys operators, and resumes once enough services are back."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.recoveries import RecoveryStatus, Strategy
from phoenix_server.store import incidents
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import REPO, eventually

pytestmark = pytest.mark.e2e  # starts real processes

NAMES = ["a", "b", "c", "d"]


def fleet(flag: Path) -> str:
    # Each exits at once while the flag exists (its "network" is broken), else runs.
    script = (
        f"import os, sys, time; sys.exit(3) if os.path.exists({str(flag)!r}) else time.sleep(3600)"
    )
    command = json.dumps(["{python}", "-c", script])
    return "".join(
        f"""
  - name: {name}
    command: {command}
    cwd: {REPO}
    health: {{process: true, interval: 100ms}}
"""
        for name in NAMES
    )


async def test_a_mass_failure_pauses_automatic_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flag = tmp_path / "partitioned"
    caplog.set_level(logging.WARNING)
    async with engine(tmp_path, fleet(flag), MAX_RECOVERY_ATTEMPTS="1") as runtime:
        for name in NAMES:
            await healthy(runtime, name)
        flag.touch()
        for name in NAMES:
            [pid] = [i.pid for i in runtime.local.instances(name) if i.alive and i.pid]
            os.kill(pid, signal.SIGKILL)
        orchestrator = runtime.orchestrator
        await eventually(lambda: orchestrator.fleet_pause, timeout=10, message="paused")
        assert orchestrator.fleet_pause is not None
        assert "of 4 services are unhealthy at once (more than 50%)" in orchestrator.fleet_pause

        # Services found failing while paused get an incident and no recovery.
        async def held_back() -> list[str] | None:
            found, _ = await runtime.store.read(
                incidents.list_incidents, service=None, status=None, limit=100, offset=0
            )
            without = [i.service for i in found if not await history(runtime, incident_id=i.id)]
            return without or None

        paused_services = await eventually(held_back, timeout=10, message="an incident held")
        assert set(paused_services) <= set(NAMES)
        alerts = [r for r in caplog.records if "automatic recovery paused" in r.getMessage()]
        assert len([r for r in alerts if "not sent" in r.getMessage()]) == 1

        # Operators still act: restart two by hand (those Phoenix gave up on first), which
        # brings the fleet back to half; Phoenix resumes by itself and recovers the rest.
        await eventually(
            lambda: orchestrator.active_count() == 0, timeout=20, message="attempts over"
        )
        flag.unlink()
        gave_up = [n for n in NAMES if n not in paused_services]
        by_hand = (gave_up + paused_services)[:2]
        for name in by_hand:
            recovery = await orchestrator.trigger(
                service=name, strategy=Strategy.RESTART, reason="by hand", force=False
            )
            assert (await finished(runtime, recovery.id)).status is RecoveryStatus.COMPLETED
        await eventually(lambda: orchestrator.fleet_pause is None, timeout=20, message="resumed")
        assert any("automatic recovery resumed" in r.getMessage() for r in caplog.records)
        left = [n for n in paused_services if n not in by_hand]
        assert left, "at least one held service is left to Phoenix"
        for name in left:
            await healthy(runtime, name, timeout=20)
            [automatic] = [r for r in await history(runtime, service=name) if r.reason != "by hand"]
            assert (await finished(runtime, automatic.id)).status is RecoveryStatus.COMPLETED
        assert runtime.tracker.status(left[0]) is ServiceStatus.HEALTHY
