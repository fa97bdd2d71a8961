"""Recoveries and their steps in the store, and the recorder the engine writes through."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from phoenix_server.domain.errors import ConflictError, NotFoundError
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.domain.recoveries import (
    Candidate,
    DataIntegrity,
    Decision,
    DecisionSource,
    Outcome,
    Recovery,
    RecoveryMetrics,
    RecoveryStatus,
    RecoveryTrigger,
    Step,
    StepCondition,
    StepStatus,
    Strategy,
)
from phoenix_server.store import incidents, recoveries
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreRecorder
from phoenix_server.store.recoveries import RecoveryFilter
from phoenix_server.store.tables import StepRow

T0 = datetime(2025, 11, 25, 18, 0, 0, 123000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def decision(strategy: Strategy = Strategy.RESTART) -> Decision:
    return Decision(
        strategy=strategy,
        source=DecisionSource.LEARNED,
        reason="restart worked 9 times out of 10",
        candidates=(Candidate(strategy, 0.9), Candidate(Strategy.ROLLBACK, 0.35)),
    )


def recovery(
    recovery_id: str = "rec-000000000001",
    *,
    service: str = "azora-auth",
    strategy: Strategy = Strategy.RESTART,
    status: RecoveryStatus = RecoveryStatus.COMPLETED,
    created: float = 0.0,
    **fields: object,
) -> Recovery:
    """A recovery created ``created`` seconds after T0; ``fields`` override the rest."""
    base = Recovery(
        id=recovery_id,
        service=service,
        strategy=strategy,
        status=status,
        trigger=RecoveryTrigger.AUTOMATIC,
        decision=decision(strategy),
        created_at=at(created),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def step(position: int, status: StepStatus = StepStatus.PENDING, **fields: object) -> Step:
    base = Step(
        position=position,
        name=f"step {position}",
        action="restart_service",
        status=status,
        timeout=30.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def full_recovery() -> Recovery:
    """Every field set to something other than its default; still running (no outcome)."""
    return recovery(
        "rec-0123456789ab",
        status=RecoveryStatus.IN_PROGRESS,
        trigger=RecoveryTrigger.PLAYBOOK,
        reason="error rate 0.42 above 0.05 for 30s",
        incident_id="inc-0123456789ab",
        attempt=2,
        started_at=at(0.25),
        outcome=None,
        metrics=RecoveryMetrics(
            downtime=1.75, requests_lost=12, data_integrity=DataIntegrity.VERIFIED
        ),
        estimated_duration=4.5,
        force=True,
        playbook_id="pb-0123456789ab",
        playbook_version=3,
        steps=(
            step(0, StepStatus.COMPLETED, started_at=at(0.25), ended_at=at(1.5), detail="ok"),
            step(
                1,
                StepStatus.RUNNING,
                name="verify",
                action="verify_health",
                timeout=12.5,
                condition=StepCondition.IF_PREVIOUS_SUCCEEDED,
                started_at=at(1.5),
            ),
            step(2, condition=StepCondition.IF_PREVIOUS_FAILED, action="notify"),
        ),
    )


def step_rows(session: Session, recovery_id: str) -> int:
    query = select(func.count()).select_from(StepRow).where(StepRow.recovery_id == recovery_id)
    return session.scalar(query) or 0


def listed(
    store: Store, where: RecoveryFilter, limit: int = 50, offset: int = 0
) -> tuple[list[str], int]:
    found, total = store.run_sync(
        recoveries.list_recoveries, where=where, limit=limit, offset=offset
    )
    return [r.id for r in found], total


def test_every_field_round_trips(store: Store) -> None:
    original = full_recovery()
    store.run_sync(recoveries.save_recovery, original)

    loaded = store.run_sync(recoveries.get_recovery, original.id)

    assert loaded == original
    assert loaded.decision.candidates == (
        Candidate(Strategy.RESTART, 0.9),
        Candidate(Strategy.ROLLBACK, 0.35),
    )
    assert loaded.outcome is None
    assert loaded.ended_at is None
    assert [s.status for s in loaded.steps] == [
        StepStatus.COMPLETED,
        StepStatus.RUNNING,
        StepStatus.PENDING,
    ]
    moments = [loaded.created_at, loaded.started_at, loaded.steps[0].ended_at]
    assert all(m is not None and m.utcoffset() == timedelta(0) for m in moments)
    assert loaded.steps[0].duration == pytest.approx(1.25)


def test_times_come_back_as_utc_with_milliseconds(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    created = datetime(2025, 11, 25, 19, 0, 0, 987654, tzinfo=paris)
    store.run_sync(recoveries.save_recovery, recovery(created_at=created, started_at=created))

    loaded = store.run_sync(recoveries.get_recovery, "rec-000000000001")

    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at.hour == 18
    assert abs(loaded.created_at - created) < timedelta(milliseconds=1)
    assert loaded.created_at.microsecond // 1000 == 987


def test_save_again_updates_in_place(store: Store) -> None:
    running = full_recovery()
    store.run_sync(recoveries.save_recovery, running)
    finished = replace(
        running,
        status=RecoveryStatus.COMPLETED,
        outcome=Outcome.SUCCESS,
        ended_at=at(9),
        metrics=RecoveryMetrics(downtime=2.0, requests_lost=0),
        steps=(
            running.steps[0],
            replace(running.steps[1], status=StepStatus.COMPLETED, ended_at=at(8), detail="up"),
            replace(running.steps[2], status=StepStatus.SKIPPED, detail="previous succeeded"),
        ),
    )
    store.run_sync(recoveries.save_recovery, finished)

    assert store.run_sync(recoveries.get_recovery, running.id) == finished
    assert store.run_sync(step_rows, running.id) == 3
    assert listed(store, RecoveryFilter()) == (["rec-0123456789ab"], 1)


def test_save_steps_updates_some_and_adds_new_ones(store: Store) -> None:
    original = recovery(
        status=RecoveryStatus.IN_PROGRESS,
        steps=(step(0), step(1), step(2)),
    )
    store.run_sync(recoveries.save_recovery, original)
    running = step(1, StepStatus.RUNNING, started_at=at(1))
    added = step(3, StepStatus.PENDING, name="notify", action="notify", timeout=5.0)

    store.run_sync(recoveries.save_steps, original.id, [running, added])

    loaded = store.run_sync(recoveries.get_recovery, original.id)
    assert loaded.steps == (step(0), running, step(2), added)
    assert loaded.status is RecoveryStatus.IN_PROGRESS
    assert store.run_sync(step_rows, original.id) == 4


def test_steps_of_an_unknown_recovery_are_refused(store: Store) -> None:
    with pytest.raises(ConflictError):
        store.run_sync(recoveries.save_steps, "rec-nowhere", [step(0)])
    assert store.run_sync(step_rows, "rec-nowhere") == 0


def test_unknown_id_is_not_found_and_named(store: Store) -> None:
    with pytest.raises(NotFoundError, match="rec-does-not-exist"):
        store.run_sync(recoveries.get_recovery, "rec-does-not-exist")


@pytest.fixture
def five(store: Store) -> Store:
    """Five recoveries across services, strategies, statuses and incidents."""
    for saved in [
        recovery("rec-a1", created=10, incident_id="inc-1", status=RecoveryStatus.FAILED),
        recovery("rec-a2", created=20, incident_id="inc-1", strategy=Strategy.ROLLBACK),
        recovery("rec-b1", created=30, service="billing", status=RecoveryStatus.FAILED),
        recovery("rec-a3", created=40, steps=(step(0, StepStatus.COMPLETED),)),
        recovery("rec-b2", created=50, service="billing", strategy=Strategy.ROLLBACK),
    ]:
        store.run_sync(recoveries.save_recovery, saved)
    return store


def test_list_is_newest_first_without_steps(five: Store) -> None:
    found, total = five.run_sync(
        recoveries.list_recoveries, where=RecoveryFilter(), limit=50, offset=0
    )
    assert [r.id for r in found] == ["rec-b2", "rec-a3", "rec-b1", "rec-a2", "rec-a1"]
    assert total == 5
    assert all(r.steps == () for r in found)
    assert found[1].created_at == at(40)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (RecoveryFilter(service="azora-auth"), ["rec-a3", "rec-a2", "rec-a1"]),
        (RecoveryFilter(status=RecoveryStatus.FAILED), ["rec-b1", "rec-a1"]),
        (RecoveryFilter(strategy=Strategy.ROLLBACK), ["rec-b2", "rec-a2"]),
        (RecoveryFilter(incident_id="inc-1"), ["rec-a2", "rec-a1"]),
        (RecoveryFilter(service="billing", strategy=Strategy.RESTART), ["rec-b1"]),
        (RecoveryFilter(service="nobody"), []),
    ],
)
def test_list_filters(five: Store, where: RecoveryFilter, expected: list[str]) -> None:
    assert listed(five, where) == (expected, len(expected))


def test_list_pages_and_total_counts_every_match(five: Store) -> None:
    assert listed(five, RecoveryFilter(), limit=2) == (["rec-b2", "rec-a3"], 5)
    assert listed(five, RecoveryFilter(), limit=2, offset=2) == (["rec-b1", "rec-a2"], 5)
    assert listed(five, RecoveryFilter(), limit=2, offset=4) == (["rec-a1"], 5)
    assert listed(five, RecoveryFilter(), limit=2, offset=9) == ([], 5)
    azora = RecoveryFilter(service="azora-auth")
    assert listed(five, azora, limit=1, offset=1) == (["rec-a2"], 3)


def test_list_breaks_ties_in_creation_time_by_id(store: Store) -> None:
    for recovery_id in ["rec-m", "rec-z", "rec-a"]:
        store.run_sync(recoveries.save_recovery, recovery(recovery_id, created=5))
    assert listed(store, RecoveryFilter()) == (["rec-z", "rec-m", "rec-a"], 3)


def test_interrupt_unfinished_closes_only_active_recoveries(store: Store) -> None:
    pending = recovery("rec-pending", status=RecoveryStatus.PENDING)
    running = recovery(
        "rec-running",
        status=RecoveryStatus.IN_PROGRESS,
        started_at=at(1),
        steps=(
            step(0, StepStatus.COMPLETED, started_at=at(1), ended_at=at(2), detail="done"),
            step(1, StepStatus.RUNNING, started_at=at(2)),
            step(2, StepStatus.PENDING),
        ),
    )
    # A finished recovery whose step record was left running must not be touched either.
    cancelled = recovery(
        "rec-cancelled",
        status=RecoveryStatus.CANCELLED,
        ended_at=at(3),
        steps=(step(0, StepStatus.RUNNING, started_at=at(2)),),
    )
    done = recovery("rec-done", outcome=Outcome.SUCCESS, started_at=at(1), ended_at=at(4))
    for saved in (pending, running, cancelled, done):
        store.run_sync(recoveries.save_recovery, saved)
    stopped = at(60)

    ids = store.run_sync(recoveries.interrupt_unfinished, at=stopped)

    assert sorted(ids) == ["rec-pending", "rec-running"]
    assert store.run_sync(recoveries.get_recovery, "rec-pending") == replace(
        pending, status=RecoveryStatus.INTERRUPTED, ended_at=stopped
    )
    failed = replace(
        running.steps[1], status=StepStatus.FAILED, ended_at=stopped, detail="Phoenix stopped"
    )
    assert store.run_sync(recoveries.get_recovery, "rec-running") == replace(
        running,
        status=RecoveryStatus.INTERRUPTED,
        ended_at=stopped,
        steps=(running.steps[0], failed, running.steps[2]),
    )
    assert store.run_sync(recoveries.get_recovery, "rec-cancelled") == cancelled
    assert store.run_sync(recoveries.get_recovery, "rec-done") == done
    assert store.run_sync(recoveries.interrupt_unfinished, at=at(99)) == []


def test_recent_successful_durations_per_service_and_strategy(store: Store) -> None:
    def ended(recovery_id: str, created: float, seconds: float, **fields: object) -> None:
        saved = recovery(recovery_id, created=created, outcome=Outcome.SUCCESS)
        saved = replace(saved, started_at=at(created), ended_at=at(created + seconds))
        store.run_sync(recoveries.save_recovery, replace(saved, **fields))  # type: ignore[arg-type]

    ended("rec-1", 10, 1.5)
    ended("rec-2", 20, 2.5)
    ended("rec-3", 30, 3.5)
    ended("rec-4", 40, 7.0, strategy=Strategy.ROLLBACK)
    ended("rec-5", 50, 0.5, service="billing")
    ended(
        "rec-6", 60, 100, service="billing", outcome=Outcome.FAILURE, status=RecoveryStatus.FAILED
    )
    ended("rec-7", 70, 9, service="billing", outcome=None, status=RecoveryStatus.INTERRUPTED)

    durations = store.run_sync(recoveries.recent_successful_durations, per_key=2)

    assert durations == {
        ("azora-auth", Strategy.RESTART): [3.5, 2.5],
        ("azora-auth", Strategy.ROLLBACK): [7.0],
        ("billing", Strategy.RESTART): [0.5],
    }
    everything = store.run_sync(recoveries.recent_successful_durations, per_key=10)
    assert everything[("azora-auth", Strategy.RESTART)] == [3.5, 2.5, 1.5]


def test_last_successes_are_the_latest_successful_end_per_service(store: Store) -> None:
    def ended(recovery_id: str, created: float, seconds: float, **fields: object) -> None:
        saved = recovery(recovery_id, created=created, outcome=Outcome.SUCCESS)
        saved = replace(saved, started_at=at(created), ended_at=at(created + seconds))
        store.run_sync(recoveries.save_recovery, replace(saved, **fields))  # type: ignore[arg-type]

    ended("rec-1", 10, 1)
    ended("rec-2", 20, 1)
    ended("rec-3", 30, 1, outcome=Outcome.FAILURE, status=RecoveryStatus.FAILED)
    ended("rec-4", 5, 1, service="billing")
    ended("rec-5", 40, 1, service="billing", outcome=None, status=RecoveryStatus.INTERRUPTED)

    assert store.run_sync(recoveries.last_successes) == {
        "azora-auth": (at(21), "rec-2"),
        "billing": (at(6), "rec-4"),
    }


def incident(incident_id: str = "inc-0123456789ab") -> Incident:
    return Incident(
        id=incident_id,
        service="azora-auth",
        failure_type=FailureType.SERVICE_DOWN,
        status=IncidentStatus.OPEN,
        detected_at=T0,
        summary="azora-auth is down",
        evidence=("process exited with -9",),
    )


async def test_recorder_saves_recovery_and_incident_together(store: Store) -> None:
    recorder = StoreRecorder(store)
    opened = incident()

    await recorder.save_recovery(full_recovery(), incident=opened)

    assert await store.read(incidents.get_incident, opened.id) == opened
    assert await store.read(recoveries.get_recovery, "rec-0123456789ab") == full_recovery()


async def test_recorder_saves_nothing_when_the_recovery_cannot_be_saved(store: Store) -> None:
    """The new incident and the recovery are one transaction: a failure keeps neither."""
    recorder = StoreRecorder(store)
    started = recovery(steps=(step(0), step(1)))
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE recovery_steps RENAME TO recovery_steps_away"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - the driver's error for a missing table
            await recorder.save_recovery(started, incident=incident())
    finally:
        with store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE recovery_steps_away RENAME TO recovery_steps"))

    with pytest.raises(NotFoundError):
        await store.read(incidents.get_incident, "inc-0123456789ab")
    with pytest.raises(NotFoundError):
        await store.read(recoveries.get_recovery, started.id)


async def test_recorder_without_incident_then_steps_then_incident(store: Store) -> None:
    recorder = StoreRecorder(store)
    started = recovery(status=RecoveryStatus.IN_PROGRESS, steps=(step(0), step(1)))
    await recorder.save_recovery(started)
    first = step(0, StepStatus.COMPLETED, started_at=at(1), ended_at=at(2))

    await recorder.save_steps(started, [first])
    await recorder.save_incident(incident("inc-later"))

    loaded = await store.read(recoveries.get_recovery, started.id)
    assert loaded.steps == (first, step(1))
    assert (await store.read(incidents.get_incident, "inc-later")).summary == "azora-auth is down"
    found, total = await store.read(
        incidents.list_incidents, service=None, status=None, limit=10, offset=0
    )
    assert ([i.id for i in found], total) == (["inc-later"], 1)


def test_interrupt_unfinished_leaves_another_installations_recoveries(store: Store) -> None:
    mine = recovery("rec-mine", status=RecoveryStatus.IN_PROGRESS)
    theirs = recovery("rec-theirs", status=RecoveryStatus.IN_PROGRESS)
    store.run_sync(recoveries.save_recovery, mine, "host-a")
    store.run_sync(recoveries.save_recovery, theirs, "host-b")
    assert store.run_sync(recoveries.interrupt_unfinished, at=at(9), owner="host-a") == ["rec-mine"]
    still = store.run_sync(recoveries.get_recovery, "rec-theirs")
    assert still.status is RecoveryStatus.IN_PROGRESS
