"""Replicas sharing one PostgreSQL database: membership and per-service leases.

Every time here is the database server's (``now()``), never a replica's own clock: a replica
whose clock is wrong, or that was paused, cannot extend what it holds by believing it is
earlier than it is. One :func:`beat` is one transaction that says the replica is alive,
renews the leases it still holds, gives away a few beyond its fair share and takes free
ones up to that share. Taking a lease bumps its ``epoch``; every write that acts for a
service carries the epoch it was made under, and the trigger of migration 0010 refuses it
unless that epoch is the lease's current one and the lease has not run out (fencing: a
replica that slept through its lease can neither act nor record).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select, update
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
    took in this beat, and how many replicas are alive (itself included)."""

    owned: dict[str, int]
    taken: dict[str, int]
    members: tuple[str, ...]
    """The live replicas, this one included."""
    fair_share: int
    at: datetime
    """The server's time of the beat."""


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
    keep: Collection[str],
    give_away: int,
    pinned: Collection[str] = (),
    longest: timedelta | None = None,
) -> Beat:
    """One heartbeat of ``member``. ``services``: those any replica may own (shared out);
    ``pinned``: those only this member may own (a local service on its machine: always
    taken, never given away, not counted in the fair share); ``new_services``: those not
    seen in a beat before (their lease rows are made); ``keep``: services busy here (a
    recovery, a deploy) that are never given away; ``give_away``: at most this many leases
    beyond the fair share are let go; ``longest``: a beat that took longer (on the server's
    clock) is rolled back, having changed nothing — its answer would come too late to act
    on, and a replica that cannot beat in time must not keep leases it cannot use."""
    now = session.scalar(select(func.now()))
    assert now is not None
    until = now + lease
    _say_alive(
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
    mine = [*services, *pinned]
    owned: dict[str, int] = dict(
        session.execute(
            update(LeaseRow)
            .where(
                LeaseRow.owner == member,
                LeaseRow.expires_at > now,
                LeaseRow.service.in_(mine),
            )
            .values(expires_at=until)
            .returning(LeaseRow.service, LeaseRow.epoch)
        ).all()
    )
    live = tuple(
        session.scalars(
            select(MemberRow.id).where(MemberRow.expires_at > now).order_by(MemberRow.id)
        )
    )
    share = math.ceil(len(services) / max(len(live), 1))
    shared = [name for name in owned if name not in pinned]
    if len(shared) > share and give_away > 0:
        spare = sorted(name for name in shared if name not in keep)
        released = spare[: min(give_away, len(shared) - share)]
        if released:
            session.execute(
                update(LeaseRow)
                .where(LeaseRow.owner == member, LeaseRow.service.in_(released))
                .values(expires_at=now)
            )
            for name in released:
                del owned[name]
                shared.remove(name)
    free = _free(session, [name for name in pinned if name not in owned], now, limit=None)
    wanted = share - len(shared)
    if wanted > 0:
        free += _free(session, services, now, limit=wanted)
    # Free for a whole lease and no one took it (replicas whose files name fewer services,
    # a member counted live that cannot act): taken whatever the share, never left alone.
    free += _free(
        session,
        [name for name in services if name not in free],
        now - lease,
        limit=None,
    )
    taken: dict[str, int] = {}
    if free:
        taken = dict(
            session.execute(
                update(LeaseRow)
                .where(LeaseRow.service.in_(free))
                .values(owner=member, epoch=LeaseRow.epoch + 1, acquired_at=now, expires_at=until)
                .returning(LeaseRow.service, LeaseRow.epoch)
            ).all()
        )
        owned.update(taken)
    if longest is not None:
        took = session.scalar(select(func.clock_timestamp() - func.now()))
        if took is not None and took > longest:
            raise UnavailableError(
                f"the heartbeat took {took.total_seconds():.1f}s in the database, longer than "
                f"{longest.total_seconds():.1f}s: undone"
            )
    return Beat(owned, taken, live, share, now)


def _free(
    session: Session, services: Sequence[str], now: datetime, *, limit: int | None
) -> list[str]:
    """Services among ``services`` whose lease ran out, locked for this transaction (those
    another replica is taking right now are skipped, not waited for)."""
    if not services:
        return []
    query = (
        select(LeaseRow.service)
        .where(LeaseRow.service.in_(services), LeaseRow.expires_at <= now)
        .order_by(LeaseRow.service)
        .with_for_update(skip_locked=True)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def _say_alive(
    session: Session,
    *,
    member: str,
    incarnation: str,
    address: str,
    version: str,
    at: datetime,
    until: datetime,
) -> None:
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


def leave(session: Session, *, member: str) -> int:
    """``member`` stops: its leases are let go at once (the others take them at their next
    beat, not a lease later) and it is listed as gone. Returns the leases let go."""
    now = session.scalar(select(func.now()))
    released = session.scalars(
        update(LeaseRow)
        .where(LeaseRow.owner == member, LeaseRow.expires_at > now)
        .values(expires_at=now)
        .returning(LeaseRow.service)
    ).all()
    session.execute(update(MemberRow).where(MemberRow.id == member).values(expires_at=now))
    return len(released)


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
    now = session.scalar(select(func.now()))
    assert now is not None
    query = select(LeaseRow).order_by(LeaseRow.service)
    if services is not None:
        query = query.where(LeaseRow.service.in_(services))
    return [
        Lease(
            row.service,
            row.owner,
            row.epoch,
            row.acquired_at,
            row.expires_at,
            held=bool(row.owner) and row.expires_at > now,
        )
        for row in session.scalars(query)
    ]
