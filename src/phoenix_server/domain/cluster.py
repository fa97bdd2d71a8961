"""Several Phoenix replicas sharing one database: who is alive, who owns which service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Member:
    """A replica, as the database last heard from it."""

    id: str
    address: str
    """Where the other replicas reach its API."""
    version: str
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    live: bool
    """Its last heartbeat is younger than its lease (on the database's clock)."""


@dataclass(frozen=True)
class Lease:
    """A service's ownership: which replica, in which term, until when."""

    service: str
    owner: str
    epoch: int
    """Grows with every change of owner: the fencing token every acting write carries."""
    acquired_at: datetime
    expires_at: datetime
    held: bool
    """Not run out (its owner renewed it in time)."""


@dataclass(frozen=True)
class ClusterState:
    """What this replica knows of its membership, from memory (``/health``)."""

    replica: str
    owned: tuple[str, ...]
    members: tuple[str, ...]
    """The live replicas at the last heartbeat, this one included."""
    fair_share: int
    last_beat: datetime | None
    """The database's time of the last heartbeat that went through."""
    acting_for: float
    """Seconds this replica may still act on what it owns without another heartbeat."""
    problem: str | None
