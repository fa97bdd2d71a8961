"""The learned policy in the running engine: history recorded by an earlier run decides the
next automatic recovery, and each attempt's outcome is learned as it ends."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from phoenix_server.config.settings import load_settings
from phoenix_server.domain.incidents import FailureType, Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.recoveries import (
    Decision,
    DecisionSource,
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.services import InstanceRole
from phoenix_server.store import incidents, learning, recoveries
from phoenix_server.store.database import Store
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import eventually, free_port, web_service_yaml

pytestmark = pytest.mark.e2e  # starts real processes

HOT_BACKUP = "    backup: {mode: hot}\n"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record_history(data_dir: Path, *, failovers_failed: int, restarts_succeeded: int) -> None:
    """What an earlier run of Phoenix left: failover kept failing for this service, restart
    kept working; plus a false positive whose failovers 'worked' (it must not count)."""
    settings = load_settings(PHOENIX_DATA_DIR=str(data_dir))
    store = Store(settings.effective_database_url)
    store.migrate()
    plan = [(Strategy.FAILOVER, False, False)] * failovers_failed
    plan += [(Strategy.RESTART, True, False)] * restarts_succeeded
    plan += [(Strategy.FAILOVER, True, True)] * 20

    def write(session: Session) -> None:
        for n, (strategy, ok, false_positive) in enumerate(plan):
            at = T0 + timedelta(minutes=n)
            incident = Incident(
                id=f"inc-past{n}",
                service="ledger",
                failure_type=FailureType.SERVICE_DOWN,
                status=IncidentStatus.RESOLVED,
                detected_at=at,
                source=IncidentSource.DETECTED,
                false_positive=false_positive,
            )
            incidents.save_incident(session, incident)
            recoveries.save_recovery(
                session,
                Recovery(
                    id=f"rec-past{n}",
                    service="ledger",
                    strategy=strategy,
                    status=RecoveryStatus.COMPLETED if ok else RecoveryStatus.FAILED,
                    outcome=Outcome.SUCCESS if ok else Outcome.FAILURE,
                    trigger=RecoveryTrigger.AUTOMATIC,
                    decision=Decision(strategy, DecisionSource.DEFAULT, "earlier run"),
                    created_at=at,
                    started_at=at,
                    ended_at=at + timedelta(seconds=0.4),
                    incident_id=incident.id,
                ),
            )

    store.run_sync(write)
    assert len(store.run_sync(learning.recent_outcomes)) == failovers_failed + restarts_succeeded
    store.close()


async def test_recorded_outcomes_decide_the_next_recovery(tmp_path: Path) -> None:
    record_history(tmp_path / "var", failovers_failed=8, restarts_succeeded=8)
    port = free_port()
    async with engine(tmp_path, web_service_yaml("ledger", port, extra=HOT_BACKUP)) as runtime:
        await healthy(runtime, "ledger")
        before = runtime.orchestrator.learning.estimate(
            "ledger", FailureType.SERVICE_DOWN, Strategy.RESTART
        )
        assert before.observations == 8 and before.successes == 8
        [primary] = [
            i
            for i in runtime.local.instances("ledger")
            if i.alive and i.role is InstanceRole.SERVICE
        ]
        assert primary.pid is not None
        os.kill(primary.pid, signal.SIGKILL)

        async def new_recoveries() -> list[Recovery]:
            found = await history(runtime, service="ledger")
            return [r for r in found if not r.id.startswith("rec-past")]

        [summary] = await eventually(new_recoveries, message="a recovery")
        recovery = await finished(runtime, summary.id)
        assert recovery.decision.source is DecisionSource.LEARNED, recovery.decision
        assert recovery.decision.strategy is Strategy.RESTART
        assert recovery.status is RecoveryStatus.COMPLETED
        candidates = {c.strategy: c for c in recovery.decision.candidates}
        assert set(candidates) == {Strategy.FAILOVER, Strategy.RESTART}
        assert candidates[Strategy.FAILOVER].estimate == round(2 / (2 + 1 + 8), 3)
        assert "failover" in recovery.decision.reason and "0/8 here" in recovery.decision.reason
        # Learned once the recovery has held for its stabilisation period.
        after = await eventually(
            lambda: (
                estimate
                if (
                    estimate := runtime.orchestrator.learning.estimate(
                        "ledger", FailureType.SERVICE_DOWN, Strategy.RESTART
                    )
                ).observations
                == 9
                else None
            ),
            timeout=20,
            message="the success learned",
        )
        assert after.successes == 9


async def test_a_reported_incident_outlives_phoenixs_own_healthy_look(tmp_path: Path) -> None:
    """Alertmanager may see what Phoenix's probes do not: only the report's resolution (or a
    recovery) closes what it opened."""
    from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin

    async with engine(tmp_path, web_service_yaml("web", free_port())) as runtime:
        await healthy(runtime, "web")
        report = FailureReport(
            service="web", firing=True, origin=ReportOrigin.ALERTMANAGER, key="k1", recover=False
        )
        opened = await runtime.reports.receive(report)
        assert opened.action is ReportAction.RECORDED and opened.incident_id
        await runtime.orchestrator.evaluate("web")  # what the periodic sweep does
        assert runtime.orchestrator.open_incident_id("web") == opened.incident_id
        closed = await runtime.reports.receive(replace(report, firing=False))
        assert closed.action is ReportAction.RESOLVED
        assert runtime.orchestrator.open_incident_id("web") is None
