"""Leases and fencing on the real PostgreSQL server: who owns which service, taking over
what a replica stopped renewing, and the database (not the code) refusing what a replica
that lost a service still tries to write."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from phoenix_server.domain.deployments import DeploymentStatus
from phoenix_server.domain.errors import StaleOwnerError, UnavailableError
from phoenix_server.domain.recoveries import RecoveryStatus, StepStatus
from phoenix_server.store import cluster, deployments, instances, recoveries
from phoenix_server.store.cluster import DuplicateReplicaError
from phoenix_server.store.database import MIGRATIONS, Store
from phoenix_server.store.recording import StoreAlertQueue, StoreJournal, StoreRecorder
from phoenix_server.store.tables import AlertRow, LeaseRow, MemberRow, RecoveryRow
from tests.store.test_alerts import alert
from tests.store.test_deployments import deployment
from tests.store.test_instances_health import instance
from tests.store.test_recoveries import recovery, step
from tests.support import wait_until

pytestmark = pytest.mark.postgres

SERVICES = [f"svc-{n}" for n in range(6)]
LEASE = timedelta(seconds=30)


@pytest.fixture
def store(postgres_store: Store) -> Store:
    return postgres_store


@pytest.fixture
def fenced(migrated_postgres: str, store: Store) -> Iterator[Store]:
    """The same database as a replica in cluster mode sees it (``phoenix.fenced``)."""
    replica = Store(migrated_postgres, fenced=True)
    try:
        yield replica
    finally:
        replica.close()


HELD: dict[str, dict[str, int]] = {}
"""What each member's last beat said it owns: a replica tells its next beat (the database
checks it)."""


@pytest.fixture(autouse=True)
def fresh_members() -> None:
    HELD.clear()


def beat(
    store: Store,
    member: str,
    *,
    held: dict[str, int] | None = None,
    services: list[str] = SERVICES,
    lease: timedelta = LEASE,
    keep: frozenset[str] = frozenset(),
    give_away: int = 2,
    incarnation: str | None = None,
    longest: timedelta | None = None,
) -> cluster.Beat:
    found: cluster.Beat = store.run_sync(
        cluster.beat,
        member=member,
        incarnation=incarnation or f"{member}-process",
        address=f"http://{member}:3051",
        version="test",
        lease=lease,
        services=services,
        new_services=services,
        held=HELD.get(member, {}) if held is None else held,
        keep=keep,
        give_away=give_away,
        longest=longest,
    )
    HELD[member] = found.owned
    return found


def run_out(store: Store, *services: str) -> None:
    """Make the leases of ``services`` end now, as if their owner had stopped renewing
    them a lease ago (on the server's clock: the only one that counts)."""
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE service_leases SET expires_at = now() - interval '1 ms' WHERE service = ANY(:s)"
            ),
            {"s": list(services)},
        )
        connection.execute(text("UPDATE cluster_members SET expires_at = now() - interval '1 ms'"))


# -- ownership --------------------------------------------------------------------------------


def test_a_lone_replica_owns_every_service_and_renewing_keeps_the_epoch(store: Store) -> None:
    first = beat(store, "a")
    assert first.owned == dict.fromkeys(SERVICES, 1) == first.taken
    assert (first.members, first.fair_share) == (("a",), 6)

    again = beat(store, "a")
    assert again.owned == first.owned and again.taken == {}
    leases = store.run_sync(cluster.leases)
    assert all(lease.held and lease.owner == "a" for lease in leases)
    assert min(lease.expires_at for lease in leases) > first.at + LEASE - timedelta(seconds=1)


def test_a_joining_replica_gets_its_share_a_few_services_at_a_time(store: Store) -> None:
    beat(store, "a")
    joined = beat(store, "b")
    assert joined.owned == {} and joined.fair_share == 3, "nothing is free yet"

    handed = beat(store, "a")
    assert len(handed.owned) == 4, "two given away per beat, no more"
    taken = beat(store, "b")
    assert len(taken.owned) == 2 and set(taken.owned.values()) == {2}, "a new owner, epoch 2"
    assert len(beat(store, "a").owned) == 3
    assert len(beat(store, "b").owned) == 3
    owners = {lease.service: lease.owner for lease in store.run_sync(cluster.leases)}
    assert sorted(owners.values()) == ["a", "a", "a", "b", "b", "b"]
    assert len(beat(store, "a").owned) == 3, "balanced: nothing moves any more"


def test_a_busy_service_is_never_given_away(store: Store) -> None:
    beat(store, "a")
    beat(store, "b")
    busy = frozenset(SERVICES[:5])
    handed = beat(store, "a", keep=busy)
    assert set(handed.owned) == busy, "only the one service not busy left"


def test_a_dead_replicas_leases_are_taken_once_they_run_out_and_not_before(store: Store) -> None:
    beat(store, "a")
    assert beat(store, "b").owned == {}, "a's leases still run: b waits"
    run_out(store, *SERVICES)
    taken = beat(store, "b")
    assert taken.owned == dict.fromkeys(SERVICES, 2) and taken.members == ("b",)
    assert {member.id: member.live for member in store.run_sync(cluster.members)} == {
        "a": False,
        "b": True,
    }
    back = beat(store, "a")
    assert back.owned == {}, "the old owner's renewal finds its leases gone"
    assert back.fair_share == 3


def test_leaving_hands_every_lease_over_at_once(store: Store) -> None:
    beat(store, "a")
    assert store.run_sync(cluster.leave, member="a") == 6
    assert beat(store, "b").owned == dict.fromkeys(SERVICES, 2)


def test_beats_at_the_same_moment_never_give_a_service_two_owners(store: Store) -> None:
    """Three replicas beating concurrently, round after round: at every moment each
    service has one owner, and an epoch seen once with an owner never has another."""
    services = [f"svc-{n}" for n in range(30)]
    seen: dict[tuple[str, int], str] = {}
    conflicts: list[str] = []
    lock = threading.Lock()

    def replica(name: str) -> None:
        for _ in range(15):
            result = beat(store, name, services=services)
            with lock:
                for service, epoch in result.owned.items():
                    if seen.setdefault((service, epoch), name) != name:
                        conflicts.append(f"{service}@{epoch}: {seen[(service, epoch)]} and {name}")

    threads = [threading.Thread(target=replica, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert conflicts == []
    final = {lease.service: lease.owner for lease in store.run_sync(cluster.leases)}
    assert set(final) == set(services) and set(final.values()) <= {"a", "b", "c"}
    counts = sorted(list(final.values()).count(name) for name in "abc")
    assert sum(counts) == 30 and counts[-1] <= 12, f"spread over the three: {counts}"


# -- fencing ----------------------------------------------------------------------------------


async def test_the_database_refuses_a_stale_owners_recovery_and_steps(store: Store) -> None:
    beat(store, "a", services=["azora-auth"])
    a_writes = StoreRecorder(store, "a", epochs=lambda _service: 1)
    started = recovery(status=RecoveryStatus.IN_PROGRESS, steps=(step(0), step(1)))
    await a_writes.save_recovery(started)

    run_out(store, "azora-auth")
    with pytest.raises(StaleOwnerError, match="ran out"):
        await a_writes.save_steps(started, [step(0, StepStatus.COMPLETED)])
    assert beat(store, "b", services=["azora-auth"]).owned == {"azora-auth": 2}

    with pytest.raises(StaleOwnerError, match="epoch 1 is stale, the lease is at epoch 2"):
        await a_writes.save_recovery(
            recovery(started.id, status=RecoveryStatus.COMPLETED, steps=(step(0), step(1)))
        )
    with pytest.raises(StaleOwnerError):
        await a_writes.save_steps(started, [step(0, StepStatus.COMPLETED)])
    stored = await store.read(recoveries.get_recovery, started.id)
    assert stored.status is RecoveryStatus.IN_PROGRESS and stored.steps == (step(0), step(1))

    closed = store.run_sync(
        recoveries.interrupt_services, services={"azora-auth": 2}, at=started.created_at
    )
    assert closed == [started.id], "the new owner closes what a left open"
    assert (await store.read(recoveries.get_recovery, started.id)).status is (
        RecoveryStatus.INTERRUPTED
    )


async def test_deploys_instances_and_alerts_of_a_stale_owner_are_refused(store: Store) -> None:
    beat(store, "a", services=["billing", "azora-auth"])
    run_out(store, "billing", "azora-auth")
    beat(store, "b", services=["billing", "azora-auth"])
    stale = StoreRecorder(store, "a", epochs=lambda _service: 1)
    with pytest.raises(StaleOwnerError):
        await stale.save_deployment(deployment("dep-000000000009", "v2", service="azora-auth"))
    with pytest.raises(StaleOwnerError):
        store.run_sync(instances.save_instance, instance("i-1", service="azora-auth"), "a", epoch=1)
    with pytest.raises(StaleOwnerError):
        await StoreAlertQueue(store, lambda _service: 1).enqueue(alert("alt-000000000001", "rec-1"))
    assert store.run_sync(lambda s: s.scalar(select(AlertRow.id))) is None

    current = StoreRecorder(store, "b", epochs=lambda _service: 2)
    await current.save_deployment(deployment("dep-000000000001", "v2", service="azora-auth"))
    assert await StoreAlertQueue(store, lambda _service: 2).enqueue(
        alert("alt-000000000001", "rec-1")
    )
    # The journal drops what it may no longer record, rather than retrying it forever.
    journal = StoreJournal(store, "a", epochs=lambda _service: 1)
    await journal.save_instance(instance("i-2", service="azora-auth"))
    assert journal.pending == 0
    assert store.run_sync(deployments.latest_deployments, owner="b")


async def test_a_fenced_replica_must_say_its_epoch_for_a_leased_service(
    store: Store, fenced: Store
) -> None:
    beat(store, "a", services=["azora-auth"])
    with pytest.raises(StaleOwnerError, match="a write with no epoch is refused"):
        await StoreRecorder(fenced, "a").save_recovery(recovery())
    # Not leased: no replica owns it, nothing to fence (what one Phoenix alone writes).
    await StoreRecorder(fenced, "a").save_recovery(recovery("rec-000000000002", service="other"))
    # A Phoenix not in cluster mode (an older replica during an upgrade) is let through.
    await StoreRecorder(store, "old").save_recovery(recovery("rec-000000000003"))
    ids = store.run_sync(lambda s: sorted(s.scalars(select(RecoveryRow.id))))
    assert ids == ["rec-000000000002", "rec-000000000003"]


async def test_an_epoch_for_a_service_no_one_leased_is_refused(store: Store) -> None:
    with pytest.raises(StaleOwnerError, match="has no lease"):
        await StoreRecorder(store, "a", epochs=lambda _service: 3).save_recovery(recovery())


def test_a_writer_holding_its_transaction_open_never_blocks_a_takeover(store: Store) -> None:
    """A stale owner paused mid-transaction (its write checked, not committed): the next
    owner takes the lease at once, and closes the recovery once the sleeper's lock is gone
    — a row still locked is skipped, never waited for."""
    beat(store, "a", services=["azora-auth"])
    store.run_sync(
        recoveries.save_recovery, recovery(status=RecoveryStatus.IN_PROGRESS), "a", epoch=1
    )
    sleeper = store.engine.connect()
    paused = sleeper.begin()
    sleeper.execute(
        text("UPDATE recoveries SET reason = 'still going' WHERE id = 'rec-000000000001'")
    )
    run_out(store, "azora-auth")
    taken = beat(store, "b", services=["azora-auth"])
    assert taken.owned == {"azora-auth": 2}, "the lease is not held by the sleeper's lock"
    closing = {"azora-auth": 2}
    at = recovery().created_at
    assert store.run_sync(recoveries.interrupt_services, services=closing, at=at) == []
    paused.rollback()
    sleeper.close()
    closed = store.run_sync(recoveries.interrupt_services, services=closing, at=at)
    assert closed == ["rec-000000000001"]
    own = recovery("rec-000000000002", status=RecoveryStatus.IN_PROGRESS)
    store.run_sync(recoveries.save_recovery, own, "b", epoch=2)
    assert store.run_sync(recoveries.interrupt_services, services=closing, at=at) == [], (
        "a recovery of the current owner's own epoch is never closed"
    )


def test_the_lease_expiry_is_the_servers_clock(store: Store) -> None:
    """A lease of 0.3 s runs out 0.3 s after the beat on the server's clock, whatever the
    replica believes: b takes it once the server says so."""
    beat(store, "a", services=["azora-auth"], lease=timedelta(seconds=0.3))
    taken = wait_until(
        lambda: beat(store, "b", services=["azora-auth"]).owned,
        timeout=5,
        message="b taking the lease a stopped renewing",
    )
    assert taken == {"azora-auth": 2}


def test_a_second_live_process_under_the_same_replica_id_owns_nothing(store: Store) -> None:
    first = beat(store, "a", incarnation="first")
    with pytest.raises(DuplicateReplicaError, match="another live Phoenix uses the replica id"):
        beat(store, "a", incarnation="second")
    assert beat(store, "a", incarnation="first").owned == first.owned, "the first goes on"
    run_out(store, *SERVICES)
    again = beat(store, "a", incarnation="second")
    assert again.owned == dict.fromkeys(SERVICES, 2), "once the first is gone: a new term"


def test_a_heartbeat_the_database_took_too_long_over_changes_nothing(store: Store) -> None:
    beat(store, "a")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION slow_beat() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$"
            )
        )
        connection.execute(text("CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON cluster_members "
                                "FOR EACH ROW EXECUTE FUNCTION slow_beat()"))  # fmt: skip
    try:
        with pytest.raises(UnavailableError, match="undone"):
            beat(store, "b", longest=timedelta(seconds=0.1))
    finally:
        with store.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER slow ON cluster_members"))
            connection.execute(text("DROP FUNCTION slow_beat()"))
    assert {m.id for m in store.run_sync(cluster.members)} == {"a"}, "b never joined"
    assert {lease.owner for lease in store.run_sync(cluster.leases)} == {"a"}


def test_a_service_left_free_for_a_whole_lease_is_taken_beyond_the_fair_share(
    store: Store,
) -> None:
    """Replicas whose files name different services (a rolling change of the file): a
    service only one of them knows is never left without an owner."""
    beat(store, "a", services=["s1"])
    first = beat(store, "b", services=["s1", "s2", "s3", "s4"]).owned.keys()
    assert len(first) == 2 and first < {"s2", "s3", "s4"}, "its fair share of 4 among 2"
    (left,) = {"s2", "s3", "s4"} - first
    assert left not in beat(store, "b", services=["s1", "s2", "s3", "s4"]).owned
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE service_leases SET expires_at = now() - interval '31 s' WHERE service = :s"
            ),
            {"s": left},
        )
    assert beat(store, "b", services=["s1", "s2", "s3", "s4"]).owned.keys() == {"s2", "s3", "s4"}


# -- leases held by the membership (migration 0011) -----------------------------------------


def end_membership(store: Store, member: str) -> None:
    """``member``'s heartbeats stopped a lease ago; its lease rows are left untouched."""
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE cluster_members SET expires_at = now() - interval '1 ms' WHERE id = :m"),
            {"m": member},
        )


async def test_a_lease_holds_exactly_as_long_as_its_owners_membership(store: Store) -> None:
    names = ["azora-auth", "billing"]
    beat(store, "a", services=names)
    own_expiries = store.run_sync(lambda s: list(s.scalars(select(LeaseRow.expires_at))))
    assert own_expiries == [None, None], "held leases have no expiry of their own to renew"
    writer = StoreRecorder(store, "a", epochs=lambda _service: 1)
    await writer.save_recovery(recovery(status=RecoveryStatus.IN_PROGRESS))

    end_membership(store, "a")
    with pytest.raises(StaleOwnerError, match="ran out"):
        await writer.save_recovery(recovery("rec-000000000002"))
    assert not any(lease.held for lease in store.run_sync(cluster.leases))
    taken = beat(store, "b", services=names)
    assert taken.owned == {"azora-auth": 2, "billing": 2}
    leases = store.run_sync(cluster.leases)
    assert [(lease.owner, lease.held) for lease in leases] == [("b", True), ("b", True)]


async def test_a_replica_back_after_its_membership_ran_out_holds_nothing_of_its_old_term(
    store: Store,
) -> None:
    """Paused past its lease and nobody else beat in between: its next beat must not simply
    carry on with the old epochs (a write begun before the pause would pass)."""
    beat(store, "a", services=["azora-auth"])
    end_membership(store, "a")
    back = beat(store, "a", services=["azora-auth"])
    assert back.owned == back.taken == {"azora-auth": 2}, "taken afresh under a new epoch"
    with pytest.raises(StaleOwnerError, match="epoch 1 is stale"):
        await StoreRecorder(store, "a", epochs=lambda _service: 1).save_recovery(recovery())


def test_what_the_database_holds_wins_over_what_a_replica_believes(store: Store) -> None:
    """A beat whose answer was lost after it committed (the replica gave up waiting): the
    next beat tells the replica what it really holds."""
    beat(store, "a")
    assert beat(store, "a", held={}).owned == dict.fromkeys(SERVICES, 1)
    assert beat(store, "a", held={"svc-0": 7}).owned == dict.fromkeys(SERVICES, 1)


def test_a_service_gone_from_the_file_is_let_go(store: Store) -> None:
    beat(store, "a", services=["s1", "s2"])
    assert beat(store, "a", services=["s1"]).owned == {"s1": 1}
    assert beat(store, "b", services=["s1", "s2"]).owned == {"s2": 2}


def five_minutes_pass(store: Store) -> None:
    """Every free lease, and every membership, began five minutes and a moment earlier."""
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE service_leases SET expires_at = expires_at - interval '301 s' "
                "WHERE expires_at IS NOT NULL"
            )
        )
        connection.execute(
            text("UPDATE cluster_members SET started_at = started_at - interval '301 s'")
        )


def claim(store: Store, member: str, declared: list[str]) -> dict[str, int]:
    found: dict[str, int] = store.run_sync(
        cluster.claim_abandoned,
        member=member,
        declared=declared,
        free_for=timedelta(minutes=5),
        lease=LEASE,
    )
    return found


def test_a_service_no_live_replica_declares_is_claimed_once_free_long_enough(
    store: Store,
) -> None:
    beat(store, "a", services=["s1", "s2", "s3"])
    beat(store, "a", services=["s1", "s2"])  # s3 left the file: let go
    assert claim(store, "a", ["s1", "s2"]) == {}, "free for a moment only"
    five_minutes_pass(store)
    # Held ones (s1, s2) never are, nor one this replica declares.
    assert claim(store, "a", ["s1", "s2", "s3"]) == {}
    assert claim(store, "a", ["s1", "s2"]) == {"s3": 2}
    # Held by its claimer (a new epoch) while the containers go: no one else takes it.
    assert claim(store, "b", []) == {}
    assert beat(store, "b", services=["s1", "s2", "s3"]).taken == {}
    # Its engine could not be asked: claimed again once free for long enough.
    store.run_sync(cluster.release_claimed, member="a", claimed={"s3": 2}, cleared=())
    five_minutes_pass(store)
    assert claim(store, "a", ["s1", "s2"]) == {"s3": 3}
    # Cleared: no replica claims it again...
    store.run_sync(cluster.release_claimed, member="a", claimed={"s3": 3}, cleared=["s3"])
    five_minutes_pass(store)
    assert claim(store, "a", ["s1", "s2"]) == {}
    assert claim(store, "b", []) == {}
    # ...until a replica that declares it takes it again and then lets it go.
    assert beat(store, "b", services=["s3"]).taken == {"s3": 4}
    beat(store, "b", services=[])
    five_minutes_pass(store)
    assert claim(store, "a", ["s1", "s2"]) == {"s3": 5}


def test_time_when_no_replica_ran_does_not_count_as_free(store: Store) -> None:
    """Every replica stopped for ten minutes: the first back, whose file lacks ``s2``, must
    not take its lease for abandoned before the replicas that declare it could come back."""
    beat(store, "a", services=["s1", "s2"])
    with store.engine.begin() as connection:  # a's membership ended ten minutes ago
        connection.execute(
            text(
                "UPDATE cluster_members SET expires_at = now() - interval '10 min', "
                "started_at = now() - interval '1 h'"
            )
        )
    assert beat(store, "c", services=["s1"]).owned == {"s1": 2}
    assert claim(store, "c", ["s1"]) == {}, "c has not been live for five minutes"


def test_the_ownership_fingerprint_moves_only_when_a_lease_changes_hands(store: Store) -> None:
    first = beat(store, "a")
    assert beat(store, "a").ownership == first.ownership == (6, 6, 6)
    beat(store, "b")
    handed = beat(store, "a")
    assert handed.ownership == (4, 6, 6), "two given away, not yet taken"
    assert beat(store, "b").ownership == (6, 6, 8), "taken again: two epochs more"
    assert beat(store, "a").ownership == (5, 6, 8)


def test_a_heartbeat_writes_one_member_row_whatever_the_replica_owns(store: Store) -> None:
    names = [f"svc-{n}" for n in range(500)]
    beat(store, "a", services=names)

    def versions(table: str) -> list[str]:
        """Each row's creating transaction: a row rewritten gets a new one."""
        with store.engine.connect() as connection:
            return list(connection.execute(text(f"SELECT xmin::text FROM {table}")).scalars())

    leases_before, member_before = versions("service_leases"), versions("cluster_members")
    for _ in range(3):
        assert len(beat(store, "a", services=names).owned) == 500
    assert versions("service_leases") == leases_before, "no lease row rewritten"
    assert versions("cluster_members") != member_before, "the membership is renewed"


def test_downgrading_to_0010_gives_each_held_lease_its_owners_expiry(
    migrated_postgres: str, store: Store
) -> None:
    beat(store, "a", services=["azora-auth"])
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0010")
        lease = store.run_sync(lambda s: s.execute(select(LeaseRow.expires_at)).one())
        member = store.run_sync(lambda s: s.scalar(select(MemberRow.expires_at)))
        assert lease[0] == member is not None
    finally:
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    assert store.run_sync(cluster.leases)[0].held


def test_a_member_renewing_right_now_is_never_taken_for_gone(store: Store) -> None:
    """a's heartbeat began just before its membership ran out (on the server's clock) and
    holds its row; b beats just after: b must not let a's leases go while a keeps them."""
    beat(store, "a", services=["azora-auth"])
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE cluster_members SET expires_at = now() + interval '300 ms' WHERE id = 'a'")
        )
    renewing = store.engine.connect()
    transaction = renewing.begin()
    try:
        renewing.execute(text("SELECT 1 FROM cluster_members WHERE id = 'a' FOR UPDATE"))
        wait_until(
            lambda: not next(m.live for m in store.run_sync(cluster.members) if m.id == "a"),
            timeout=5,
            message="a's membership run out on the server's clock",
        )
        assert beat(store, "b", services=["azora-auth"]).owned == {}
        renewing.execute(
            text("UPDATE cluster_members SET expires_at = now() + interval '30 s' WHERE id = 'a'")
        )
        transaction.commit()
    finally:
        if transaction.is_active:
            transaction.rollback()
        renewing.close()
    (lease,) = store.run_sync(cluster.leases)
    assert (lease.owner, lease.epoch, lease.held) == ("a", 1, True), "still a's, not let go"


def test_a_recovery_stopped_when_its_replica_let_go_is_closed_when_the_lease_comes_back(
    store: Store,
) -> None:
    """The renew deadline passed (the database was slow), so the replica stopped its
    recovery mid-step and let go; the lease never moved and comes back under the same epoch.
    Taking it back closes that recovery; the periodic sweep of a replica's recent takeovers
    (not ``taking``) never closes one of the epoch it holds."""
    assert beat(store, "a", services=["azora-auth"]).owned == {"azora-auth": 1}
    stopped = recovery(status=RecoveryStatus.IN_PROGRESS)
    store.run_sync(recoveries.save_recovery, stopped, "a", epoch=1)
    deploying = deployment("dep-1", "v2", service="azora-auth", status=DeploymentStatus.IN_PROGRESS)
    store.run_sync(deployments.save_deployment, deploying, "a", epoch=1)
    held = {"azora-auth": 1}
    at = stopped.created_at + timedelta(seconds=30)
    assert store.run_sync(recoveries.interrupt_services, services=held, at=at) == []
    assert store.run_sync(deployments.interrupt_services, services=held, at=at) == 0
    assert beat(store, "a", held={}, services=["azora-auth"]).owned == held, "the same epoch"
    taken = {"services": held, "at": at, "taking": True}
    assert store.run_sync(recoveries.interrupt_services, **taken) == [stopped.id]
    assert store.run_sync(deployments.interrupt_services, **taken) == 1
    closed = store.run_sync(recoveries.get_recovery, stopped.id)
    assert closed.status is RecoveryStatus.INTERRUPTED
    assert closed.ended_at == at, "not at the lease's start, long before it began"
