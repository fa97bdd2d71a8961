"""This replica's membership of a cluster of Phoenixes sharing one PostgreSQL database.

A heartbeat every ``lease / 5`` seconds (2 s for the default 10 s lease, as Kubernetes'
leader election retries) renews this replica's leases, gives away a few beyond its fair
share and takes free ones (``store.cluster.beat``). The leases last ``lease`` seconds on the
database's clock; this replica acts on a service only until ``renew_deadline`` (0.7 times
``lease``, measured on its own monotonic clock from *before* the heartbeat that renewed it),
so it stops acting before the database lets another replica take over, even when its
heartbeats stop coming back (a partition, a pause). What it then still tries to record the
database refuses: every acting write carries the lease's epoch (``epoch_of``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta

from phoenix_server.domain.cluster import ClusterState, Lease, Member
from phoenix_server.domain.errors import PhoenixError
from phoenix_server.store import cluster
from phoenix_server.store.database import Store

log = logging.getLogger("phoenix.cluster")

HEARTBEATS_PER_LEASE = 5
RENEW_DEADLINE = 0.7
"""Share of the lease after its last renewal during which this replica still acts."""
MOVED_PER_BEAT = 2
MOVED_SHARE_PER_BEAT = 0.1
"""Leases beyond its fair share a replica gives away per heartbeat: at least 2, at most a
tenth of the share (rebalancing is gradual — a joining replica takes services over some
ten heartbeats, never all at once — but a fleet of thousands is spread in a minute or so,
not hours)."""

Gained = Callable[[dict[str, int]], Awaitable[None]]
"""Services taken (service → epoch): close what their previous owners left open."""
Acting = Callable[[list[str]], None]
"""Services this replica now acts on: watch them."""
Lost = Callable[[str], Awaitable[None]]


class ClusterMember:
    def __init__(
        self,
        store: Store,
        *,
        replica: str,
        address: str,
        version: str,
        lease: float,
        placement: Callable[[], Sequence[tuple[str, str | None]]],
        busy: Callable[[], Collection[str]],
        monotonic: Callable[[], float],
        gained: Gained,
        acting: Acting,
        lost: Lost,
    ) -> None:
        self._store = store
        self.replica = replica
        self.incarnation = secrets.token_hex(8)
        """This process: another one beating under the same replica id is refused."""
        self._address = address
        self._version = version
        self.lease = lease
        self._interval = lease / HEARTBEATS_PER_LEASE
        self._placement = placement
        """Each service of the fleet and the replica it is pinned to (None: any); the same
        object while the fleet is unchanged."""
        self._placed: tuple[object, list[str], list[str]] | None = None
        """The last placement seen, split: (it, shared services, pinned here)."""
        self._busy = busy
        self._monotonic = monotonic
        self._gained = gained
        self._acting = acting
        self._lost = lost
        self._owned: dict[str, int] = {}
        """The leases this replica holds (service → epoch)."""
        self._ready: set[str] = set()
        """Owned services whose takeover is done (the previous owner's leftovers closed):
        only these are acted on."""
        self._taking: dict[str, int] = {}
        """Leases taken, waiting for their takeover (done beside the heartbeat, so that a
        replica inheriting thousands of services still beats on time)."""
        self._take = asyncio.Event()
        self._taken_at: dict[str, float] = {}
        """When each owned lease was taken (monotonic)."""
        self._last_epochs: dict[str, int] = {}
        """Every epoch this replica held, kept after losing it: a late write for a service
        it lost carries that stale epoch, which the database refuses."""
        self._seen: set[str] = set()
        """Services whose lease rows exist (made at their first heartbeat)."""
        self._unseen: list[str] = []
        """Services of the placement whose lease rows are still to be made."""
        self._acting_until = 0.0
        """Monotonic time until which the last renewal lets this replica act."""
        self._owners: dict[str, str] = {}
        """Each service's owner while its lease is held, as last read."""
        self._ownership_read: tuple[int, int, int] | None = None
        """The fingerprint of the fleet's ownership when ``_owners`` was read."""
        self._members: dict[str, Member] = {}
        """The members as last read (forwarding uses their addresses without a query)."""
        self._last: cluster.Beat | None = None
        self.problem: str | None = None
        self._stopped = False

    # -- what the rest of Phoenix asks ------------------------------------------------------

    def owns(self, service: str) -> bool:
        return service in self._ready and self._monotonic() < self._acting_until

    def owner_of(self, service: str) -> str | None:
        if self.owns(service):
            return self.replica
        return self._owners.get(service)

    def owner_address(self, service: str) -> tuple[str, str] | None:
        """The live owner of ``service`` other than this replica, and where it listens, as
        of the last heartbeat (None: no other live replica owns it)."""
        owner = self._owners.get(service)
        member = self._members.get(owner) if owner is not None else None
        if owner is None or owner == self.replica or member is None or not member.live:
            return None
        return owner, member.address

    def epoch_of(self, service: str) -> int | None:
        """The epoch a write for ``service`` carries: the lease's while this replica holds
        it, the last one it held otherwise (stale: refused), 0 if it never held it (no
        lease has epoch 0 once owned: refused too). None for what is no service of the
        fleet (an alert about Phoenix itself)."""
        if service not in self._seen:
            return None
        return self._owned.get(service) or self._last_epochs.get(service, 0)

    def owned(self) -> dict[str, int]:
        return {name: epoch for name, epoch in self._owned.items() if name in self._ready}

    def taken_within(self, seconds: float) -> dict[str, int]:
        """The services acted on here that were taken in the last ``seconds`` (service →
        epoch): what a previous owner may still have left open."""
        since = self._monotonic() - seconds
        return {
            name: epoch
            for name, epoch in self.owned().items()
            if self._taken_at.get(name, since) > since
        }

    def state(self) -> ClusterState:
        last = self._last
        acting_for = max(0.0, self._acting_until - self._monotonic())
        return ClusterState(
            replica=self.replica,
            # What it acts on, as owns() says: nothing once the renew deadline has passed,
            # even before the watchdog has let each service go.
            owned=tuple(sorted(self._ready & set(self._owned))) if acting_for > 0 else (),
            members=last.members if last else (),
            fair_share=last.fair_share if last else 0,
            last_beat=last.at if last else None,
            acting_for=acting_for,
            problem=self.problem,
        )

    def shared_addresses(self) -> list[str]:
        """Addresses two live members advertise alike (each must be reachable as itself)."""
        seen: dict[str, str] = {}
        clashes = []
        for member in self._members.values():
            if member.live and member.address in seen:
                clashes.append(f"{seen[member.address]} and {member.id} at {member.address}")
            seen.setdefault(member.address, member.id)
        return clashes

    async def members(self) -> list[Member]:
        return await self._store.read(cluster.members)

    async def leases(self) -> list[Lease]:
        return await self._store.read(cluster.leases)

    # -- the heartbeat ----------------------------------------------------------------------

    async def run(self) -> None:
        """Beat until stopped; a beat that fails is retried at the next interval. Beside
        it, the moment the renew deadline passes without a renewal, everything owned is
        let go here (a beat stuck on a partitioned database never answers in time), and
        the services taken are taken over."""
        beside = [
            asyncio.create_task(self._let_go_at_deadline(), name="cluster-deadline"),
            asyncio.create_task(self._take_over(), name="cluster-takeover"),
        ]
        try:
            while not self._stopped:
                await self.beat_once()
                await asyncio.sleep(self._interval)
        finally:
            for task in beside:
                task.cancel()

    async def _let_go_at_deadline(self) -> None:
        while True:
            remaining = self._acting_until - self._monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self._owned:
                await self._lose(list(self._owned), why="its leases could not be renewed in time")
            await asyncio.sleep(self._interval)

    async def _take_over(self) -> None:
        while True:
            await self._take.wait()
            await self.take_over_pending()

    async def take_over_pending(self) -> None:
        """Take over what the last heartbeats took (the runtime closes what the previous
        owners left open), then act on it."""
        self._take.clear()
        batch, self._taking = self._taking, {}
        batch = {name: epoch for name, epoch in batch.items() if self._owned.get(name) == epoch}
        if not batch:
            return
        await self._gained(batch)
        ready = [name for name, epoch in batch.items() if self._owned.get(name) == epoch]
        self._ready.update(ready)
        self._acting(ready)

    async def beat_once(self) -> None:
        started = self._monotonic()
        placement = self._placement()
        if self._placed is None or self._placed[0] is not placement:
            self._placed = (
                placement,
                [name for name, replica in placement if replica is None],
                [name for name, replica in placement if replica == self.replica],
            )
            self._unseen = [
                name for name in (*self._placed[1], *self._placed[2]) if name not in self._seen
            ]
        _, services, pinned = self._placed
        new = self._unseen
        busy = {name for name in self._busy() if name in self._owned}
        deadline = self.lease * RENEW_DEADLINE
        try:
            async with asyncio.timeout(deadline):
                beat = await self._store.write_apart(
                    cluster.beat,
                    member=self.replica,
                    incarnation=self.incarnation,
                    address=self._address,
                    version=self._version,
                    lease=timedelta(seconds=self.lease),
                    services=services,
                    new_services=new,
                    held=dict(self._owned),
                    keep=busy,
                    give_away=max(
                        MOVED_PER_BEAT,
                        int(MOVED_SHARE_PER_BEAT * (self._last.fair_share if self._last else 0)),
                    ),
                    pinned=pinned,
                    longest=timedelta(seconds=deadline * 0.8),
                )
        except (PhoenixError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, PhoenixError) else "the database took too long"
            self.problem = f"cluster heartbeat failed ({reason})"
            log.warning("%s", self.problem)
            return
        if self._stopped:
            return
        self.problem = None
        self._seen.update(new)
        self._unseen = []
        self._last = beat
        if self._monotonic() - started < deadline:
            self._acting_until = started + deadline
        gone = [name for name in self._owned if name not in beat.owned]
        if gone:
            await self._lose(gone, why="its lease moved to another replica")
        for name, epoch in beat.owned.items():
            if self._owned.get(name) != epoch:
                self._owned[name] = epoch
                self._last_epochs[name] = epoch
                self._taken_at[name] = started
                self._ready.discard(name)
                self._taking[name] = epoch
                log.info("owning %s from now (epoch %d)", name, epoch)
        if self._taking:
            self._take.set()
        await self._refresh_view(beat.ownership)

    async def _refresh_view(self, ownership: tuple[int, int, int]) -> None:
        """Who owns what and where the members listen, for refusals and forwarding. The
        members (a handful of rows) are read every heartbeat; the owner of each service only
        when some lease changed hands since the last read (the beat's fingerprint)."""
        try:
            members = await self._store.read(cluster.members)
            if ownership != self._ownership_read:
                leases = await self._store.read(cluster.leases)
                self._owners = {lease.service: lease.owner for lease in leases if lease.held}
                self._ownership_read = ownership
        except PhoenixError:
            return
        self._members = {member.id: member for member in members}

    async def _lose(self, names: list[str], *, why: str) -> None:
        for name in names:
            self._owned.pop(name, None)
            self._taken_at.pop(name, None)
            self._taking.pop(name, None)
            was_ready = name in self._ready
            self._ready.discard(name)
            log.warning("no longer owning %s: %s", name, why)
            if was_ready:
                await self._lost(name)

    async def leave(self) -> None:
        """Stop beating and let every lease go now, so the others take over at once."""
        self._stopped = True
        owned = [name for name in self._owned if name in self._ready]
        self._owned.clear()
        self._ready.clear()
        self._taking.clear()
        for name in owned:
            await self._lost(name)
        try:
            released = await self._store.write_apart(cluster.leave, member=self.replica)
        except PhoenixError as exc:
            log.warning("could not hand over leases at stop (%s): they run out by themselves", exc)
            return
        log.info("left the cluster: %d lease(s) handed over", released)
