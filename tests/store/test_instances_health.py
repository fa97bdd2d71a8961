"""The local platform's instance journal and the services' health history in the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import Instance, InstanceState, PlatformKind
from phoenix_server.store import health_events, instances
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreJournal
from phoenix_server.store.tables import HealthEventRow

NOW = datetime(2025, 11, 25, 18, 0, 0, 500000, tzinfo=UTC)
HEALTHY = ServiceStatus.HEALTHY
UNHEALTHY = ServiceStatus.UNHEALTHY
DEGRADED = ServiceStatus.DEGRADED


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


# -- instances ----------------------------------------------------------------------------


def instance(
    instance_id: str,
    *,
    service: str = "azora-auth",
    platform: PlatformKind = PlatformKind.LOCAL,
    started: float = 0.0,
    **fields: object,
) -> Instance:
    """An instance started ``started`` hours ago."""
    base = Instance(
        id=instance_id,
        service=service,
        platform=platform,
        state=InstanceState.STARTING,
        started_at=ago(started),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def full_instance(instance_id: str, started: float) -> Instance:
    return instance(
        instance_id,
        started=started,
        state=InstanceState.RUNNING,
        pid=43210,
        port=18081,
        version="v2",
        log_path="/var/lib/phoenix/logs/azora-auth-1.log",
        config_hash="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        process_start=1764093600.25,
    )


def test_instances_round_trip_oldest_first_per_platform(store: Store) -> None:
    newer = full_instance("azora-auth/v2/2", started=1)
    older = instance("billing/v1/1", service="billing", started=2)
    external = instance("search", service="search", platform=PlatformKind.EXTERNAL, started=3)
    for saved in (newer, older, external):
        store.run_sync(instances.save_instance, saved)

    assert store.run_sync(instances.load_instances, PlatformKind.LOCAL) == [older, newer]
    assert store.run_sync(instances.load_instances, PlatformKind.EXTERNAL) == [external]
    assert store.run_sync(instances.load_instances, PlatformKind.DOCKER) == []
    loaded = store.run_sync(instances.load_instances, PlatformKind.LOCAL)[1]
    assert loaded.started_at.utcoffset() == timedelta(0)
    assert loaded.process_start == 1764093600.25


def test_saving_an_instance_again_updates_it(store: Store) -> None:
    starting = instance("azora-auth/v1/1", pid=100, port=18080, version="v1")
    store.run_sync(instances.save_instance, starting)
    stopping = replace(starting, state=InstanceState.STOPPING, pid=101, config_hash="abc")
    store.run_sync(instances.save_instance, stopping)

    assert store.run_sync(instances.load_instances, PlatformKind.LOCAL) == [stopping]


def test_remove_instance(store: Store) -> None:
    kept = instance("azora-auth/v1/1", started=2)
    store.run_sync(instances.save_instance, kept)
    store.run_sync(instances.save_instance, instance("azora-auth/v1/2", started=1))

    store.run_sync(instances.remove_instance, "azora-auth/v1/2")
    store.run_sync(instances.remove_instance, "never-was")  # forgetting nothing is fine

    assert store.run_sync(instances.load_instances, PlatformKind.LOCAL) == [kept]


async def test_journal_saves_loads_and_removes(store: Store) -> None:
    journal = StoreJournal(store)
    first = full_instance("azora-auth/v2/1", started=2)
    second = instance("azora-auth/v2/2", started=1)

    await journal.save_instance(first)
    await journal.save_instance(second)
    await journal.save_instance(replace(second, state=InstanceState.RUNNING, pid=7))
    await journal.remove_instance(first.id)

    assert await journal.load_instances(PlatformKind.LOCAL) == [
        replace(second, state=InstanceState.RUNNING, pid=7)
    ]
    assert await journal.load_instances(PlatformKind.EXTERNAL) == []


# -- health events ------------------------------------------------------------------------


def events(session: Session) -> list[tuple[str, datetime, str, str]]:
    rows = session.execute(
        select(
            HealthEventRow.service, HealthEventRow.at, HealthEventRow.status, HealthEventRow.reason
        ).order_by(HealthEventRow.service, HealthEventRow.at, HealthEventRow.id)
    ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def record(store: Store, *changes: tuple[str, datetime, ServiceStatus]) -> None:
    store.run_sync(
        health_events.record_statuses,
        [(service, moment, status, f"{service} {status}") for service, moment, status in changes],
    )


def test_record_statuses_keeps_every_change(store: Store) -> None:
    store.run_sync(
        health_events.record_statuses,
        [
            ("azora-auth", ago(1), UNHEALTHY, "probe failed: connection refused"),
            ("azora-auth", ago(0.5), HEALTHY, "x" * 5000),
        ],
    )

    assert store.run_sync(events) == [
        ("azora-auth", ago(1), "unhealthy", "probe failed: connection refused"),
        ("azora-auth", ago(0.5), "healthy", "x" * 2000),
    ]


def test_status_history_starts_with_the_last_change_before_since(store: Store) -> None:
    since = ago(24)
    record(
        store,
        ("azora-auth", ago(30), HEALTHY),
        ("azora-auth", ago(26), UNHEALTHY),
        ("billing", ago(40), UNHEALTHY),
        ("azora-auth", ago(2), HEALTHY),
        ("search", ago(1), DEGRADED),
        ("azora-auth", ago(1), DEGRADED),
        ("search", since, HEALTHY),  # exactly at ``since``: counts as after it
    )

    history = store.run_sync(health_events.status_history, since=since)

    assert history == {
        "azora-auth": [(ago(26), UNHEALTHY), (ago(2), HEALTHY), (ago(1), DEGRADED)],
        "billing": [(ago(40), UNHEALTHY)],
        "search": [(since, HEALTHY), (ago(1), DEGRADED)],
    }
    assert all(m.utcoffset() == timedelta(0) for changes in history.values() for m, _ in changes)


def test_status_history_orders_simultaneous_changes_as_recorded(store: Store) -> None:
    record(
        store,
        ("azora-auth", ago(1), UNHEALTHY),
        ("azora-auth", ago(1), HEALTHY),
        ("azora-auth", ago(1), DEGRADED),
    )
    history = store.run_sync(health_events.status_history, since=ago(24))
    assert history == {"azora-auth": [(ago(1), UNHEALTHY), (ago(1), HEALTHY), (ago(1), DEGRADED)]}


def test_status_history_of_nothing_is_empty(store: Store) -> None:
    assert store.run_sync(health_events.status_history, since=ago(24)) == {}


def test_prune_keeps_each_services_newest_old_change(store: Store) -> None:
    record(
        store,
        ("azora-auth", ago(50), HEALTHY),
        ("azora-auth", ago(30), UNHEALTHY),
        ("azora-auth", ago(26), HEALTHY),
        ("azora-auth", ago(1), DEGRADED),
        ("billing", ago(48), UNHEALTHY),
        ("billing", ago(40), HEALTHY),
        ("search", ago(2), HEALTHY),
    )
    before = store.run_sync(health_events.status_history, since=ago(24))

    store.run_sync(health_events.prune, before=ago(24))

    assert [(service, at) for service, at, _, _ in store.run_sync(events)] == [
        ("azora-auth", ago(26)),
        ("azora-auth", ago(1)),
        ("billing", ago(40)),
        ("search", ago(2)),
    ]
    assert store.run_sync(health_events.status_history, since=ago(24)) == before
    store.run_sync(health_events.prune, before=ago(24))
    assert len(store.run_sync(events)) == 4


@pytest.mark.parametrize("hours", [0.0, 100.0])
def test_prune_with_nothing_old_or_nothing_at_all(store: Store, hours: float) -> None:
    store.run_sync(health_events.prune, before=ago(24))
    assert store.run_sync(events) == []
    record(store, ("azora-auth", ago(hours), HEALTHY))
    store.run_sync(health_events.prune, before=ago(24))
    assert [row[1] for row in store.run_sync(events)] == [ago(hours)]


def test_prune_keeps_the_last_recorded_of_simultaneous_old_changes(store: Store) -> None:
    record(
        store,
        ("azora-auth", ago(30), UNHEALTHY),
        ("azora-auth", ago(30), HEALTHY),
        ("azora-auth", ago(30), DEGRADED),
    )

    store.run_sync(health_events.prune, before=ago(24))

    assert [status for _, _, status, _ in store.run_sync(events)] == ["degraded"]


async def test_each_installation_sees_only_its_own_journal(store: Store) -> None:
    """Two Phoenixes sharing a database must never adopt or forget each other's instances."""
    ours, theirs = StoreJournal(store, "host-a"), StoreJournal(store, "host-b")
    await ours.save_instance(instance("azora-auth-a", started=1))
    await theirs.save_instance(instance("azora-auth-b", started=2))
    assert [i.id for i in await ours.load_instances(PlatformKind.LOCAL)] == ["azora-auth-a"]
    assert [i.id for i in await theirs.load_instances(PlatformKind.LOCAL)] == ["azora-auth-b"]
