"""Writes that must happen eventually: the real store behind a door that is briefly shut."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import NotFoundError, UnavailableError
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.domain.recoveries import Recovery
from phoenix_server.recovery.executing import durably
from phoenix_server.recovery.persisting import EventualWrites
from phoenix_server.store import incidents
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreRecorder
from phoenix_server.support.tasks import SupervisedTasks
from phoenix_server.support.timefmt import utcnow
from tests.support import eventually


class ShutDoor(StoreRecorder):
    """The real recorder, refusing the next ``closed_for`` writes as an unavailable database."""

    def __init__(self, store: Store, closed_for: int) -> None:
        super().__init__(store)
        self.closed_for = closed_for
        self.refused = 0

    def _door(self) -> None:
        if self.closed_for > 0:
            self.closed_for -= 1
            self.refused += 1
            raise UnavailableError("database unavailable: database is locked")

    async def save_incident(self, incident: Incident) -> None:
        self._door()
        await super().save_incident(incident)

    async def save_recovery(self, recovery: Recovery, *, incident: Incident | None = None) -> None:
        self._door()
        await super().save_recovery(recovery, incident=incident)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'phoenix.db'}")
    store.migrate()
    yield store
    store.close()


def incident(status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
    return Incident("inc-000000000001", "web", FailureType.SERVICE_DOWN, status, utcnow())


async def test_a_refused_write_is_retried_until_it_lands(store: Store) -> None:
    door = ShutDoor(store, closed_for=2)
    tasks = SupervisedTasks("test")
    writes = EventualWrites(door, tasks)
    await writes.write(incident())
    assert writes.pending == 1
    with pytest.raises(NotFoundError):
        await store.read(incidents.get_incident, "inc-000000000001")
    await eventually(lambda: writes.pending == 0, timeout=10, message="the retry")
    assert (
        await store.read(incidents.get_incident, "inc-000000000001")
    ).status is IncidentStatus.OPEN
    assert door.refused == 2
    await tasks.close()


async def test_a_later_state_wins_over_a_retried_older_one(store: Store) -> None:
    door = ShutDoor(store, closed_for=1)
    tasks = SupervisedTasks("test")
    writes = EventualWrites(door, tasks)
    await writes.write(incident(IncidentStatus.OPEN))  # refused: waits for a retry
    resolved = replace(incident(), status=IncidentStatus.RESOLVED)
    await writes.write(resolved)  # lands at once and supersedes the queued one
    assert writes.pending == 0
    await asyncio.sleep(0.7)  # past the first retry time: nothing older may land now
    stored = await store.read(incidents.get_incident, resolved.id)
    assert stored.status is IncidentStatus.RESOLVED
    await tasks.close()


async def test_durably_waits_out_a_short_refusal_and_gives_up_on_a_long_one(store: Store) -> None:
    clock = SystemClock()
    door = ShutDoor(store, closed_for=3)
    await durably(lambda: door.save_incident(incident()), clock)
    assert door.refused == 3
    stubborn = ShutDoor(store, closed_for=10_000)
    with pytest.raises(UnavailableError):
        await durably(lambda: stubborn.save_incident(incident()), clock, patience=0.3)
    assert stubborn.refused >= 3


class SlowDoor(StoreRecorder):
    """The real recorder, but a write takes until ``opened`` is set (a slow disk)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.opened = asyncio.Event()
        self.started = asyncio.Event()

    async def save_incident(self, incident: Incident) -> None:
        self.started.set()
        await self.opened.wait()
        await super().save_incident(incident)


async def test_a_write_cut_off_by_a_shutdown_is_written_at_the_flush(store: Store) -> None:
    """Phoenix stopping cancels the task that was closing an incident in the store: the
    flush at shutdown writes it, instead of the next start finding it still open."""
    door = SlowDoor(store)
    tasks = SupervisedTasks("test")
    writes = EventualWrites(door, tasks)
    resolved = incident(IncidentStatus.RESOLVED)
    writing = asyncio.create_task(writes.write(resolved))
    await asyncio.wait_for(door.started.wait(), timeout=5)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    with pytest.raises(NotFoundError):
        await store.read(incidents.get_incident, resolved.id)

    door.opened.set()
    await writes.flush(timeout=5)
    assert (await store.read(incidents.get_incident, resolved.id)).status is (
        IncidentStatus.RESOLVED
    )
    assert writes.pending == 0
    await tasks.close()


async def test_the_flush_gives_up_within_its_time_and_names_what_was_lost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    door = ShutDoor(store, closed_for=1_000)
    tasks = SupervisedTasks("test")
    writes = EventualWrites(door, tasks)
    await writes.write(incident())
    await writes.flush(timeout=1)
    assert "1 record(s) could not be written before stopping" in caplog.text
    assert "inc-000000000001" in caplog.text
    await tasks.close()
