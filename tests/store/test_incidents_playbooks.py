"""Incidents and playbooks in the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from phoenix_server.domain.errors import ConflictError, NotFoundError
from phoenix_server.domain.incidents import (
    FailureType,
    Incident,
    IncidentSource,
    IncidentStatus,
)
from phoenix_server.domain.playbooks import (
    Playbook,
    PlaybookSource,
    PlaybookStatus,
    PlaybookStep,
    PlaybookTrigger,
    TriggerType,
)
from phoenix_server.domain.recoveries import StepCondition
from phoenix_server.store import incidents, playbooks
from phoenix_server.store.database import Store

T0 = datetime(2025, 11, 25, 18, 0, 0, 250000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- incidents ----------------------------------------------------------------------------


def incident(
    incident_id: str,
    *,
    service: str = "azora-auth",
    status: IncidentStatus = IncidentStatus.OPEN,
    detected: float = 0.0,
    **fields: object,
) -> Incident:
    base = Incident(
        id=incident_id,
        service=service,
        failure_type=FailureType.HIGH_ERROR_RATE,
        status=status,
        detected_at=at(detected),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_incident_round_trips_every_field(store: Store) -> None:
    original = incident(
        "inc-0123456789ab",
        status=IncidentStatus.RESOLVED,
        failure_type=FailureType.MEMORY_LEAK,
        source=IncidentSource.MANUAL,
        summary="memory grew 40 MB/min",
        evidence=("rss 1.2 GB", "rss 1.6 GB", "oom-killer: ünïcode ✓"),
        resolved_at=at(95.5),
        false_positive=True,
    )
    store.run_sync(incidents.save_incident, original)

    loaded = store.run_sync(incidents.get_incident, original.id)

    assert loaded == original
    assert loaded.resolved_at is not None and loaded.resolved_at.utcoffset() == timedelta(0)
    assert loaded.detected_at.utcoffset() == timedelta(0)


def test_saving_an_incident_again_updates_it(store: Store) -> None:
    opened = incident("inc-1", evidence=("error rate 0.4",))
    store.run_sync(incidents.save_incident, opened)
    resolved = replace(opened, status=IncidentStatus.RESOLVED, resolved_at=at(30), evidence=())
    store.run_sync(incidents.save_incident, resolved)

    assert store.run_sync(incidents.get_incident, "inc-1") == resolved
    found, total = store.run_sync(
        incidents.list_incidents, service=None, status=None, limit=10, offset=0
    )
    assert (found, total) == ([resolved], 1)


def test_unknown_incident_is_not_found_and_named(store: Store) -> None:
    with pytest.raises(NotFoundError, match="inc-missing"):
        store.run_sync(incidents.get_incident, "inc-missing")
    with pytest.raises(NotFoundError, match="inc-missing"):
        store.run_sync(incidents.mark_false_positive, "inc-missing")


def list_ids(
    store: Store,
    *,
    service: str | None = None,
    status: IncidentStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[str], int]:
    found, total = store.run_sync(
        incidents.list_incidents, service=service, status=status, limit=limit, offset=offset
    )
    return [i.id for i in found], total


def test_list_incidents_newest_first_with_filters_and_pages(store: Store) -> None:
    for saved in [
        incident("inc-1", detected=10, status=IncidentStatus.RESOLVED),
        incident("inc-2", detected=20, service="billing"),
        incident("inc-3", detected=30, status=IncidentStatus.UNRESOLVED),
        incident("inc-4", detected=40, service="billing", status=IncidentStatus.RESOLVED),
    ]:
        store.run_sync(incidents.save_incident, saved)

    assert list_ids(store) == (["inc-4", "inc-3", "inc-2", "inc-1"], 4)
    assert list_ids(store, service="billing") == (["inc-4", "inc-2"], 2)
    assert list_ids(store, status=IncidentStatus.RESOLVED) == (["inc-4", "inc-1"], 2)
    assert list_ids(store, service="azora-auth", status=IncidentStatus.OPEN) == ([], 0)
    assert list_ids(store, limit=2, offset=1) == (["inc-3", "inc-2"], 4)


@pytest.fixture
def history(store: Store) -> Store:
    for saved in [
        incident("inc-a-old", detected=10),
        incident("inc-b", detected=20, service="billing", status=IncidentStatus.UNRESOLVED),
        incident("inc-a-new", detected=30),
        incident("inc-c", detected=40, service="search", status=IncidentStatus.RESOLVED),
    ]:
        store.run_sync(incidents.save_incident, saved)
    return store


def test_unresolved_incidents_are_the_latest_per_service(history: Store) -> None:
    found = history.run_sync(incidents.unresolved_incidents)

    assert sorted(i.id for i in found) == ["inc-a-new", "inc-b"]
    by_service = {i.service: i for i in found}
    assert by_service["billing"].status is IncidentStatus.UNRESOLVED
    assert by_service["azora-auth"].detected_at == at(30)


def test_unresolved_incidents_are_oldest_first(history: Store) -> None:
    found = history.run_sync(incidents.unresolved_incidents)
    assert [i.id for i in found] == ["inc-b", "inc-a-new"]


def test_mark_false_positive_persists_the_verdict(store: Store) -> None:
    opened = incident("inc-1", evidence=("latency 900ms",))
    store.run_sync(incidents.save_incident, opened)

    marked = store.run_sync(incidents.mark_false_positive, "inc-1")

    assert marked == replace(opened, false_positive=True)
    assert store.run_sync(incidents.get_incident, "inc-1") == marked


# -- playbooks ----------------------------------------------------------------------------


def playbook(
    playbook_id: str,
    name: str,
    *,
    created: float = 0.0,
    **fields: object,
) -> Playbook:
    base = Playbook(
        id=playbook_id,
        name=name,
        triggers=(PlaybookTrigger(TriggerType.SERVICE_DOWN),),
        steps=(PlaybookStep("restart_service"),),
        created_at=at(created),
        updated_at=at(created),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def full_playbook() -> Playbook:
    return playbook(
        "pb-0123456789ab",
        "pool exhaustion",
        service="azora-auth",
        description="restart the pool, then the service if that did not help",
        status=PlaybookStatus.DISABLED,
        priority=7,
        version=4,
        source=PlaybookSource.FILE,
        updated_at=at(3600.5),
        triggers=(
            PlaybookTrigger(TriggerType.ERROR_RATE, threshold=0.05, duration=30.0),
            PlaybookTrigger(TriggerType.LATENCY, threshold=800.0, params={"percentile": 99}),
            PlaybookTrigger(TriggerType.ALERT, params={"alert": "PoolExhausted"}),
        ),
        steps=(
            PlaybookStep("restart_connection_pool", timeout=10.0, name="pool"),
            PlaybookStep(
                "http_request",
                condition=StepCondition.IF_PREVIOUS_FAILED,
                params={"method": "POST", "headers": {"X-Reason": "phoenix"}, "retries": [1, 2]},
            ),
            PlaybookStep("verify_health", timeout=15.5, condition=StepCondition.IF_UNHEALTHY),
        ),
    )


def test_playbook_round_trips_every_field(store: Store) -> None:
    original = full_playbook()
    assert store.run_sync(playbooks.create_playbook, original) == original

    loaded = store.run_sync(playbooks.get_playbook, original.id)

    assert loaded == original
    assert loaded.steps[1].params == {
        "method": "POST",
        "headers": {"X-Reason": "phoenix"},
        "retries": [1, 2],
    }
    assert loaded.steps[1].timeout is None
    assert loaded.triggers[2].threshold is None
    assert loaded.updated_at.utcoffset() == timedelta(0)


@pytest.fixture
def three(store: Store) -> Store:
    for created in [
        playbook("pb-1", "one", created=10, service="azora-auth"),
        playbook("pb-2", "two", created=20, status=PlaybookStatus.DISABLED),
        playbook("pb-3", "three", created=30, service="azora-auth"),
    ]:
        store.run_sync(playbooks.create_playbook, created)
    return store


def playbook_ids(
    store: Store,
    *,
    service: str | None = None,
    status: PlaybookStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[str], int]:
    found, total = store.run_sync(
        playbooks.list_playbooks, service=service, status=status, limit=limit, offset=offset
    )
    return [p.id for p in found], total


def test_list_playbooks_newest_first_with_filters_and_pages(three: Store) -> None:
    assert playbook_ids(three) == (["pb-3", "pb-2", "pb-1"], 3)
    assert playbook_ids(three, service="azora-auth") == (["pb-3", "pb-1"], 2)
    assert playbook_ids(three, status=PlaybookStatus.ACTIVE) == (["pb-3", "pb-1"], 2)
    assert playbook_ids(three, status=PlaybookStatus.DISABLED) == (["pb-2"], 1)
    assert playbook_ids(three, service="billing") == ([], 0)
    assert playbook_ids(three, limit=1, offset=1) == (["pb-2"], 3)


def test_update_replaces_the_playbook(three: Store) -> None:
    changed = replace(full_playbook(), id="pb-2", name="two, renamed", version=2, created_at=at(20))
    assert three.run_sync(playbooks.update_playbook, changed) == changed

    assert three.run_sync(playbooks.get_playbook, "pb-2") == changed
    assert playbook_ids(three) == (["pb-3", "pb-2", "pb-1"], 3)


def test_update_may_keep_its_own_name(three: Store) -> None:
    current = three.run_sync(playbooks.get_playbook, "pb-1")
    changed = replace(current, priority=5, version=2, updated_at=at(99))
    three.run_sync(playbooks.update_playbook, changed)
    assert three.run_sync(playbooks.get_playbook, "pb-1") == changed


def test_two_edits_of_the_same_version_cannot_both_land(three: Store) -> None:
    current = three.run_sync(playbooks.get_playbook, "pb-1")
    mine = replace(current, priority=5, version=current.version + 1)
    theirs = replace(current, priority=9, version=current.version + 1)
    three.run_sync(playbooks.update_playbook, mine)
    with pytest.raises(ConflictError, match="changed meanwhile"):
        three.run_sync(playbooks.update_playbook, theirs)
    assert three.run_sync(playbooks.get_playbook, "pb-1").priority == 5


def test_duplicate_name_conflicts_naming_the_existing_playbook(three: Store) -> None:
    with pytest.raises(ConflictError, match=r"'two'.*pb-2"):
        three.run_sync(playbooks.create_playbook, playbook("pb-9", "two"))
    assert playbook_ids(three) == (["pb-3", "pb-2", "pb-1"], 3)


def test_renaming_to_another_playbooks_name_conflicts(three: Store) -> None:
    before = three.run_sync(playbooks.get_playbook, "pb-1")
    with pytest.raises(ConflictError, match=r"'three'.*pb-3"):
        three.run_sync(playbooks.update_playbook, replace(before, name="three", version=2))
    assert three.run_sync(playbooks.get_playbook, "pb-1") == before


def test_delete_and_unknown_ids(three: Store) -> None:
    three.run_sync(playbooks.delete_playbook, "pb-2")

    assert playbook_ids(three) == (["pb-3", "pb-1"], 2)
    with pytest.raises(NotFoundError, match="pb-2"):
        three.run_sync(playbooks.get_playbook, "pb-2")
    with pytest.raises(NotFoundError, match="pb-2"):
        three.run_sync(playbooks.delete_playbook, "pb-2")
    with pytest.raises(NotFoundError, match="pb-nope"):
        three.run_sync(playbooks.update_playbook, playbook("pb-nope", "nope"))
    with pytest.raises(NotFoundError, match="pb-nope"):
        three.run_sync(playbooks.get_playbook, "pb-nope")


def test_a_deleted_name_can_be_used_again(three: Store) -> None:
    three.run_sync(playbooks.delete_playbook, "pb-2")
    three.run_sync(playbooks.create_playbook, playbook("pb-4", "two", created=40))
    assert three.run_sync(playbooks.get_playbook, "pb-4").name == "two"


def test_count_active_playbooks(three: Store) -> None:
    assert three.run_sync(playbooks.count_active) == 2
    current = three.run_sync(playbooks.get_playbook, "pb-3")
    three.run_sync(
        playbooks.update_playbook, replace(current, status=PlaybookStatus.DISABLED, version=2)
    )
    assert three.run_sync(playbooks.count_active) == 1
    three.run_sync(playbooks.delete_playbook, "pb-1")
    assert three.run_sync(playbooks.count_active) == 0


def test_file_playbooks_are_synced_versioned_on_change_and_removed(store: Store) -> None:
    from_file = replace(full_playbook(), version=1, status=PlaybookStatus.ACTIVE)
    assert store.run_sync(playbooks.sync_file_playbooks, [from_file]) == []
    assert store.run_sync(playbooks.sync_file_playbooks, [from_file]) == []
    assert store.run_sync(playbooks.get_playbook, from_file.id).version == 1, "unchanged"
    edited = replace(from_file, priority=9, updated_at=at(7200))
    store.run_sync(playbooks.sync_file_playbooks, [edited])
    stored = store.run_sync(playbooks.get_playbook, from_file.id)
    assert (stored.version, stored.priority, stored.created_at) == (2, 9, from_file.created_at)

    api = playbook("pb-api", "taken name", source=PlaybookSource.API)
    store.run_sync(playbooks.create_playbook, api)
    clash = replace(from_file, id="pb-other", name="taken name")
    refused = store.run_sync(playbooks.sync_file_playbooks, [edited, clash])
    assert refused and "'taken name': the name belongs to playbook pb-api (api)" in refused[0]

    store.run_sync(playbooks.sync_file_playbooks, [])
    with pytest.raises(NotFoundError):
        store.run_sync(playbooks.get_playbook, from_file.id)
    assert store.run_sync(playbooks.get_playbook, "pb-api") == api, "API playbooks untouched"
