"""A replica's membership on the real PostgreSQL server, in process, on a clock the test
moves: what it owns, the epochs its writes carry, and letting go at the renew deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from phoenix_server.domain.errors import StaleOwnerError
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.domain.recoveries import RecoveryStatus
from phoenix_server.runtime.cluster import RENEW_DEADLINE, ClusterMember
from phoenix_server.store import cluster
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreRecorder
from tests.store.test_recoveries import recovery
from tests.support import eventually

pytestmark = pytest.mark.postgres

LEASE = 10.0
SERVICES = ["svc-a", "svc-b"]


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(postgres_store: Store) -> Store:
    return postgres_store


class Member:
    """A ClusterMember with its gains and losses written down."""

    def __init__(self, store: Store, name: str, clock: Clock) -> None:
        self.gained: list[tuple[str, int]] = []
        self.acting: list[str] = []
        self.lost: list[str] = []
        self.busy: set[str] = set()

        async def gained(taken: dict[str, int]) -> None:
            self.gained.extend(sorted(taken.items()))

        def acting(services: list[str]) -> None:
            self.acting.extend(sorted(services))

        async def lost(service: str) -> None:
            self.lost.append(service)

        self.member = ClusterMember(
            store,
            replica=name,
            address=f"http://{name}:3051",
            version="test",
            lease=LEASE,
            placement=lambda: [(name, None) for name in SERVICES],
            busy=lambda: self.busy,
            monotonic=clock,
            gained=gained,
            acting=acting,
            lost=lost,
        )

    async def beat(self) -> None:
        """One heartbeat and the takeover of what it took (beside it, in ``run``)."""
        await self.member.beat_once()
        await self.member.take_over_pending()


async def test_owning_acting_and_the_epochs_writes_carry(store: Store) -> None:
    clock = Clock()
    a = Member(store, "a", clock)
    assert a.member.epoch_of("svc-a") is None, "not seen in a beat yet"
    await a.beat()
    assert a.gained == [("svc-a", 1), ("svc-b", 1)] and a.acting == SERVICES
    assert a.member.owns("svc-a") and a.member.epoch_of("svc-a") == 1
    assert a.member.epoch_of("phoenix") is None, "no service of the fleet: nothing to fence"
    state = a.member.state()
    assert state.owned == ("svc-a", "svc-b") and state.members == ("a",)
    assert state.acting_for == pytest.approx(LEASE * RENEW_DEADLINE)

    clock.now += LEASE * RENEW_DEADLINE  # no renewal in time: stop acting, on this clock
    assert not a.member.owns("svc-a")
    assert a.member.state().owned == (), "what /health shows agrees, before any let-go runs"
    assert a.member.epoch_of("svc-a") == 1, "a late write still carries it (and is refused)"
    await a.beat()
    assert a.member.owns("svc-a"), "renewed: acting again"
    assert a.lost == []


async def test_the_deadline_lets_go_of_everything_without_waiting_for_a_beat(
    store: Store,
) -> None:
    clock = Clock()
    a = Member(store, "a", clock)
    await a.beat()
    clock.now += LEASE  # the database never answered again
    watchdog = a.member._let_go_at_deadline()
    task = asyncio.ensure_future(watchdog)
    try:
        await eventually(lambda: a.lost == ["svc-a", "svc-b"], timeout=5)
    finally:
        task.cancel()
    assert a.member.state().owned == ()
    # The database answers again and the leases never moved: taken back under the same
    # epochs, so the runtime closes what it stopped when it let go (``taking``).
    await a.beat()
    assert a.gained == [("svc-a", 1), ("svc-b", 1)] * 2 and a.member.owns("svc-a")


async def test_a_service_taken_by_another_is_lost_and_its_old_epoch_kept(store: Store) -> None:
    clock = Clock()
    a, b = Member(store, "a", clock), Member(store, "b", clock)
    await a.beat()
    await store.write(cluster.leave, member="a")  # as if its leases had run out
    await b.beat()
    assert b.gained == [("svc-a", 2), ("svc-b", 2)]
    await a.beat()
    assert a.lost == ["svc-a", "svc-b"] and not a.member.owns("svc-a")
    assert a.member.epoch_of("svc-a") == 1, "stale: the database refuses what carries it"
    assert b.member.owner_of("svc-a") == "b" and a.member.owner_of("svc-a") == "b"


async def test_leaving_lets_go_here_and_in_the_database(store: Store) -> None:
    clock = Clock()
    a, b = Member(store, "a", clock), Member(store, "b", clock)
    await a.beat()
    await a.member.leave()
    assert a.lost == ["svc-a", "svc-b"]
    await b.beat()
    assert [service for service, _ in b.gained] == SERVICES, "at once, not a lease later"
    members = {m.id: m.live for m in await b.member.members()}
    assert members == {"a": False, "b": True}


async def test_a_busy_service_stays_with_its_owner_when_another_joins(store: Store) -> None:
    clock = Clock()
    a, b = Member(store, "a", clock), Member(store, "b", clock)
    await a.beat()
    a.busy = {"svc-a", "svc-b"}
    await b.beat()
    await a.beat()
    assert a.lost == [], "both are being recovered: neither moves"
    a.busy = {"svc-a"}
    await a.beat()
    assert a.lost == ["svc-b"]
    await b.beat()
    assert b.gained == [("svc-b", 2)]


async def test_a_taken_service_is_acted_on_only_once_its_takeover_is_done(store: Store) -> None:
    clock = Clock()
    a = Member(store, "a", clock)
    await a.member.beat_once()
    assert a.member.epoch_of("svc-a") == 1, "held: its takeover writes carry the epoch"
    assert not a.member.owns("svc-a"), "not acted on while the old owner's leftovers are open"
    await a.member.take_over_pending()
    assert a.member.owns("svc-a") and a.acting == SERVICES


async def test_the_recorder_writes_each_record_under_the_epoch_it_began_in(store: Store) -> None:
    """A run begun under epoch 1, its service lost and taken back (epoch 3): what that run
    still writes carries 1, and the database refuses it; what is begun now carries 3."""
    epochs = {"svc-a": 1}
    recorder = StoreRecorder(store, "a", lambda service: epochs.get(service))
    await store.write(
        cluster.beat,
        member="a",
        incarnation="x",
        address="http://a",
        version="t",
        lease=timedelta(seconds=30),
        services=["svc-a"],
        new_services=["svc-a"],
        held={},
        keep=(),
        give_away=0,
    )
    old = recovery("rec-000000000001", service="svc-a", status=RecoveryStatus.IN_PROGRESS)
    opened = Incident(
        id="inc-000000000001",
        service="svc-a",
        failure_type=FailureType.SERVICE_DOWN,
        status=IncidentStatus.OPEN,
        detected_at=old.created_at,
    )
    await recorder.save_recovery(old, incident=opened)
    await store.write(cluster.leave, member="a")
    for member in ("b", "a"):  # b takes it (2), then a takes it back (3)
        await store.write(cluster.leave, member="b")
        await store.write(
            cluster.beat,
            member=member,
            incarnation=member,
            address="http://x",
            version="t",
            lease=timedelta(seconds=30),
            services=["svc-a"],
            new_services=[],
            held={},
            keep=(),
            give_away=0,
        )
    epochs["svc-a"] = 3
    with pytest.raises(StaleOwnerError, match="epoch 1 is stale, the lease is at epoch 3"):
        await recorder.save_recovery(old)
    with pytest.raises(StaleOwnerError):
        await recorder.save_incident(opened)
    new = recovery("rec-000000000002", service="svc-a", status=RecoveryStatus.IN_PROGRESS)
    await recorder.save_recovery(new)
    recorder.carry_on(opened.id)  # the open incident goes on in the new term
    await recorder.save_incident(opened)
