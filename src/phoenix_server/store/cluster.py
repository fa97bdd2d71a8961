"""Replicas sharing one PostgreSQL database: membership and per-service leases.

Every time here is the database server's (``now()``), never a replica's own clock: a replica
whose clock is wrong, or that was paused, cannot extend what it holds by believing it is
earlier than it is. One :func:`beat` is one transaction that renews the replica's
membership — and with it every lease it holds: a lease has no expiry of its own while held
(migration 0011), it lasts as its owner's membership does — gives away a few leases beyond
its fair share and takes free ones up to that share. Taking a lease bumps its ``epoch``;
every write that acts for a service carries the epoch it was made under, and the fencing
trigger refuses it unless that epoch is the lease's current one and neither the lease nor
its owner's membership has run out (a replica that slept through its lease can neither act
nor record)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    any_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from phoenix_server.domain.cluster import Lease, Member
from phoenix_server.domain.errors import UnavailableError
from phoenix_server.store.tables import LeaseRow, MemberRow

MEMBERS_FORGOTTEN_AFTER = timedelta(hours=1)
"""A replica gone this long leaves the member list (until then it is listed as gone)."""


@dataclass(frozen=True)
class Beat:
    """What one heartbeat found: what this replica owns now (service → epoch), what it
    took in this beat, who is a member, and a fingerprint of the whole fleet's ownership
    (it changes whenever any lease changes hands: the owner map is re-read only then)."""

    owned: dict[str, int]
    taken: dict[str, int]
    members: tuple[str, ...]
    """The live replicas, this one included."""
    fair_share: int
    at: datetime
    """The server's time of the beat."""
    ownership: tuple[int, int, int] = (0, 0, 0)
    """Leases held, leases in all, sum of their epochs."""


class DuplicateReplicaError(UnavailableError):
    """Another live process beats under the same replica id (a copied data directory, two
    pods given one PHOENIX_INSTALLATION_ID): this one must not own anything."""


def beat(
    session: Session,
    *,
    member: str,
    incarnation: str,
    address: str,
    version: str,
    lease: timedelta,
    services: Sequence[str],
    new_services: Collection[str],
    held: Mapping[str, int],
    keep: Collection[str],
    give_away: int,
    pinned: Collection[str] = (),
    longest: timedelta | None = None,
) -> Beat:
    """One heartbeat of ``member``. ``services``: those any replica may own (shared out);
    ``pinned``: those only this member may own (a local service on its machine: always
    taken, never given away, not counted in the fair share); ``new_services``: those not
    seen in a beat before (their lease rows are made); ``held``: the leases this member
    believes it holds (checked against the database, which wins); ``keep``: services busy
    here (a recovery, a deploy) that are never given away; ``give_away``: at most this many
    leases beyond the fair share are let go; ``longest``: a beat that took longer (on the
    server's clock) is rolled back, having changed nothing — its answer would come too late
    to act on, and a replica that cannot beat in time must not keep leases it cannot use.

    The leases themselves are not renewed: they hold while the member's own row does, so a
    heartbeat costs the same for ten services or ten thousand."""
    now = session.scalar(select(func.now()))
    assert now is not None
    until = now + lease
    # Whoever beats notes when the members gone since last looked lost their leases (before
    # a member long gone is forgotten below, so no lease is left pointing at nobody). Their
    # rows are locked first, and one a member is renewing right now is skipped: that member
    # either renews in time (and keeps its leases) or finds its membership over (and lets
    # them go itself), never both at once.
    gone = session.execute(
        select(MemberRow.id, MemberRow.expires_at)
        .where(MemberRow.expires_at <= now)
        .with_for_update(skip_locked=True)
    ).all()
    for owner, ended in gone:
        session.execute(
            update(LeaseRow)
            .where(LeaseRow.owner == owner, LeaseRow.expires_at.is_(None))
            .values(expires_at=ended)
        )
    continued = _say_alive(
        session,
        member=member,
        incarnation=incarnation,
        address=address,
        version=version,
        at=now,
        until=until,
    )
    if new_services:
        session.execute(
            insert(LeaseRow)
            .values(
                [
                    {
                        "service": name,
                        "owner": "",
                        "epoch": 0,
                        "acquired_at": now,
                        "expires_at": now,
                    }
                    for name in new_services
                ]
            )
            .on_conflict_do_nothing(index_elements=["service"])
        )
    owned = _held(session, member, dict(held) if continued else {})
    live = tuple(
        session.scalars(
            select(MemberRow.id).where(MemberRow.expires_at > now).order_by(MemberRow.id)
        )
    )
    share = math.ceil(len(services) / max(len(live), 1))
    shareable = set(services)
    # A service no longer in this replica's file is let go (its lease would never lapse).
    released = [name for name in owned if name not in shareable and name not in pinned]
    shared = [name for name in owned if name in shareable]
    if len(shared) > share and give_away > 0:
        spare = sorted(name for name in shared if name not in keep)
        released += spare[: min(give_away, len(shared) - share)]
    if released:
        session.execute(
            update(LeaseRow)
            .where(LeaseRow.owner == member, LeaseRow.service == _any(released))
            .values(expires_at=now)
        )
        for name in released:
            del owned[name]
    taken = _take(
        session,
        member=member,
        now=now,
        lease=lease,
        wanted=share - sum(1 for name in owned if name in shareable),
        shareable=shareable,
        pinned=pinned,
    )
    owned.update(taken)
    ownership = session.execute(
        select(
            func.count().filter(or_(LeaseRow.expires_at.is_(None), LeaseRow.expires_at > now)),
            func.count(),
            func.coalesce(func.sum(LeaseRow.epoch), 0),
        )
    ).one()
    if longest is not None:
        took = session.scalar(select(func.clock_timestamp() - func.now()))
        if took is not None and took > longest:
            raise UnavailableError(
                f"the heartbeat took {took.total_seconds():.1f}s in the database, longer than "
                f"{longest.total_seconds():.1f}s: undone"
            )
    return Beat(owned, taken, live, share, now, (ownership[0], ownership[1], int(ownership[2])))


def _any(names: Collection[str]) -> ColumnElement[bool]:
    """``= ANY(:names)``: one array parameter, however many names (an IN list of thousands
    costs a bound parameter each)."""
    return any_(bindparam(None, list(names), type_=ARRAY(String), unique=True))


def _held(session: Session, member: str, believed: dict[str, int]) -> dict[str, int]:
    """The leases ``member`` holds: what it believes when the database agrees (a count and a
    sum of epochs, not thousands of rows), the database's rows otherwise (a beat whose
    answer was lost after it committed)."""
    mine = LeaseRow.owner == member, LeaseRow.expires_at.is_(None)
    count, epochs = session.execute(
        select(func.count(), func.coalesce(func.sum(LeaseRow.epoch), 0)).where(*mine)
    ).one()
    if count == len(believed) and epochs == sum(believed.values()):
        return believed
    return dict(session.execute(select(LeaseRow.service, LeaseRow.epoch).where(*mine)).all())


def _take(
    session: Session,
    *,
    member: str,
    now: datetime,
    lease: timedelta,
    wanted: int,
    shareable: Collection[str],
    pinned: Collection[str],
) -> dict[str, int]:
    """Take free leases: every pinned one, shared ones up to ``wanted``, and any shared one
    free for a whole lease that no one took (replicas whose files name fewer services, a
    member counted live that cannot act) whatever the share."""
    free = session.execute(
        select(LeaseRow.service, LeaseRow.expires_at).where(LeaseRow.expires_at <= now)
    ).all()
    if not free:
        return {}
    chosen = {name for name, _ in free if name in pinned}
    candidates = sorted(
        (name for name, _ in free if name in shareable),
        # Each member in its own order: two replicas taking at once rarely want one lease.
        key=lambda name: hashlib.blake2b(f"{member}/{name}".encode(), digest_size=8).digest(),
    )
    chosen.update(candidates[: max(wanted, 0)])
    abandoned = now - lease
    chosen.update(
        name
        for name, since in free
        if name in shareable and since is not None and since <= abandoned
    )
    if not chosen:
        return {}
    locked = list(
        session.scalars(
            select(LeaseRow.service)
            .where(LeaseRow.service == _any(chosen), LeaseRow.expires_at <= now)
            .order_by(LeaseRow.service)
            # Those another replica is taking right now are skipped, not waited for.
            .with_for_update(skip_locked=True)
        )
    )
    if not locked:
        return {}
    return _hand_over(session, locked, member=member, now=now, until=None)


def _hand_over(
    session: Session, names: Sequence[str], *, member: str, now: datetime, until: datetime | None
) -> dict[str, int]:
    """``member`` owns ``names`` from ``now`` under a new epoch each, ``until`` then (None:
    as long as its membership lasts); service → epoch."""
    return dict(
        session.execute(
            update(LeaseRow)
            .where(LeaseRow.service == _any(names))
            .values(owner=member, epoch=LeaseRow.epoch + 1, acquired_at=now, expires_at=until)
            .returning(LeaseRow.service, LeaseRow.epoch)
        ).all()
    )


def _say_alive(
    session: Session,
    *,
    member: str,
    incarnation: str,
    address: str,
    version: str,
    at: datetime,
    until: datetime,
) -> bool:
    """Renew ``member``'s membership (and so every lease it holds). False when it starts a
    new one — its first beat, another process of the same id, or the previous membership
    ran out: then whatever it still held is let go (free since that membership ended), so
    that a write of the earlier term is refused and the leases are taken afresh, each under
    a new epoch."""
    current = session.execute(
        select(MemberRow.incarnation, MemberRow.expires_at)
        .where(MemberRow.id == member)
        .with_for_update()
    ).one_or_none()
    if current is not None and current[0] != incarnation and current[1] > at:
        raise DuplicateReplicaError(
            f"another live Phoenix uses the replica id {member!r} (PHOENIX_INSTALLATION_ID): "
            "this one owns nothing until that one is gone; give each replica its own id"
        )
    continued = current is not None and current[0] == incarnation and current[1] > at
    if not continued:
        session.execute(
            update(LeaseRow)
            .where(
                LeaseRow.owner == member,
                or_(LeaseRow.expires_at.is_(None), LeaseRow.expires_at > at),
            )
            .values(expires_at=min(at, current[1]) if current is not None else at)
        )
    statement = insert(MemberRow).values(
        id=member,
        incarnation=incarnation,
        address=address,
        version=version,
        started_at=at,
        heartbeat_at=at,
        expires_at=until,
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "address": statement.excluded.address,
                "incarnation": statement.excluded.incarnation,
                "version": statement.excluded.version,
                "heartbeat_at": at,
                "expires_at": until,
                # A replica that comes back after it was gone starts a new membership.
                "started_at": case((MemberRow.expires_at > at, MemberRow.started_at), else_=at),
            },
        )
    )
    session.execute(delete(MemberRow).where(MemberRow.expires_at < at - MEMBERS_FORGOTTEN_AFTER))
    return continued


def leave(session: Session, *, member: str) -> int:
    """``member`` stops: its leases are let go at once (the others take them at their next
    beat, not a lease later) and it is listed as gone. Returns the leases let go."""
    now = session.scalar(select(func.now()))
    released = session.scalars(
        update(LeaseRow)
        .where(
            LeaseRow.owner == member,
            or_(LeaseRow.expires_at.is_(None), LeaseRow.expires_at > now),
        )
        .values(expires_at=now)
        .returning(LeaseRow.service)
    ).all()
    session.execute(update(MemberRow).where(MemberRow.id == member).values(expires_at=now))
    return len(released)


def claim_abandoned(
    session: Session,
    *,
    member: str,
    declared: Collection[str],
    free_for: timedelta,
    lease: timedelta,
) -> dict[str, int]:
    """Services no live replica declares any more, held by ``member`` for ``lease`` (their
    epoch bumped) so that none is taken over while what it left is removed; service →
    epoch. Such a service's lease has been free for ``free_for`` while ``member`` was live
    (every live replica that declares a service takes its free lease within a heartbeat,
    so time when no replica ran does not count), and ``declared`` (this replica's services)
    does not name it. One already cleared (let go with no owner) is not claimed again until
    a replica has taken it since. Let them go with :func:`release_claimed`."""
    now = session.scalar(select(func.now()))
    assert now is not None
    since = now - free_for
    started = session.scalar(
        select(MemberRow.started_at).where(MemberRow.id == member, MemberRow.expires_at > now)
    )
    if started is None or started > since:
        return {}
    found = session.execute(
        select(LeaseRow.service, LeaseRow.epoch)
        .where(LeaseRow.expires_at <= since, LeaseRow.epoch > 0, LeaseRow.owner != "")
        .with_for_update(skip_locked=True)
    ).all()
    names = [name for name, _ in found if name not in declared]
    if not names:
        return {}
    return _hand_over(session, names, member=member, now=now, until=now + lease)


def release_claimed(
    session: Session, *, member: str, claimed: Mapping[str, int], cleared: Collection[str]
) -> None:
    """Let go what :func:`claim_abandoned` held (unless it has changed hands since): those
    ``cleared`` with no owner, so no replica claims them again; the others (their engine
    could not be asked) to be claimed again once free long enough."""
    now = session.scalar(select(func.now()))
    for name, epoch in claimed.items():
        session.execute(
            update(LeaseRow)
            .where(LeaseRow.service == name, LeaseRow.owner == member, LeaseRow.epoch == epoch)
            .values(expires_at=now, owner="" if name in cleared else member)
        )


def members(session: Session) -> list[Member]:
    now = session.scalar(select(func.now()))
    assert now is not None
    rows = session.scalars(select(MemberRow).order_by(MemberRow.started_at, MemberRow.id))
    return [
        Member(
            row.id,
            row.address,
            row.version,
            row.started_at,
            row.heartbeat_at,
            row.expires_at,
            live=row.expires_at > now,
        )
        for row in rows
    ]


def leases(session: Session, *, services: Collection[str] | None = None) -> list[Lease]:
    """Every lease (or those of ``services``) with the time it holds until: its own expiry,
    or its owner's membership's for a lease with none (no member row: not held)."""
    now = session.scalar(select(func.now()))
    assert now is not None
    query = (
        select(
            LeaseRow.service,
            LeaseRow.owner,
            LeaseRow.epoch,
            LeaseRow.acquired_at,
            LeaseRow.expires_at,
            MemberRow.expires_at,
        )
        .outerjoin(MemberRow, MemberRow.id == LeaseRow.owner)
        .order_by(LeaseRow.service)
    )
    if services is not None:
        query = query.where(LeaseRow.service == _any(services))
    found = []
    for service, owner, epoch, acquired_at, own_expiry, membership in session.execute(query):
        until = _held_until(own_expiry, membership)
        found.append(
            Lease(
                service,
                owner,
                epoch,
                acquired_at,
                until if until is not None else acquired_at,
                held=bool(owner) and until is not None and until > now,
            )
        )
    return found


def _held_until(own: datetime | None, membership: datetime | None) -> datetime | None:
    """As the fencing trigger reads it: the earlier of the two, either may be missing."""
    if own is None:
        return membership
    if membership is None:
        return own
    return min(own, membership)
