"""``GET /api/cluster``: the replicas sharing this database, and who owns which service."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from phoenix_server.api.common import RuntimeDep, WireModel
from phoenix_server.domain.cluster import ClusterState
from phoenix_server.domain.errors import UnavailableError
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/cluster", tags=["cluster"])

OWNED_LISTED = 100
"""Services named in ``/health``'s cluster section (all are counted)."""


class ClusterHealth(WireModel):
    """``/health``'s account of this replica's membership (from memory)."""

    replica: str
    members: list[str]
    """The live replicas at the last heartbeat, this one included."""
    owned: int
    owned_services: list[str]
    """The first ones, by name (all are in ``/api/cluster``)."""
    fair_share: int
    last_heartbeat: str | None
    """The database's time of the last heartbeat that went through."""
    acting_for: float
    """Seconds this replica may still act on its services without another heartbeat."""
    lease_state: str
    """``held`` (renewed on time), ``renewing`` (a heartbeat failed, still acting),
    ``lost`` (stopped acting until a heartbeat goes through), ``starting``."""


def cluster_health(state: ClusterState) -> ClusterHealth:
    if state.last_beat is None:
        lease_state = "starting"
    elif state.acting_for <= 0:
        lease_state = "lost"
    elif state.problem:
        lease_state = "renewing"
    else:
        lease_state = "held"
    return ClusterHealth(
        replica=state.replica,
        members=list(state.members),
        owned=len(state.owned),
        owned_services=list(state.owned[:OWNED_LISTED]),
        fair_share=state.fair_share,
        last_heartbeat=iso_ms(state.last_beat),
        acting_for=round(state.acting_for, 3),
        lease_state=lease_state,
    )


class MemberOut(WireModel):
    id: str
    address: str
    version: str
    started_at: str | None
    heartbeat_at: str | None
    live: bool
    owns: int
    """Services whose lease it holds now."""


class LeaseOut(WireModel):
    service: str
    owner: str | None
    """None: no replica holds it now (its owner stopped or died; another takes it)."""
    epoch: int
    """Grows with every change of owner (the fencing token of the writes made for it)."""
    acquired_at: str | None
    expires_at: str | None
    held: bool


class ClusterOut(WireModel):
    success: bool = True
    enabled: bool
    """False: one Phoenix (``PHOENIX_CLUSTER`` unset), which owns every service."""
    replica: str
    """The replica that answered."""
    lease_seconds: float | None
    members: list[MemberOut]
    leases: list[LeaseOut]


@router.get("", response_model=ClusterOut, response_model_by_alias=True)
async def cluster_view(runtime: RuntimeDep) -> ClusterOut:
    """Every replica (live or gone within the last hour) and every service's lease, read
    from the database: the same on every replica."""
    cluster = runtime.cluster
    if cluster is None:
        return ClusterOut(
            enabled=False, replica=runtime.owner, lease_seconds=None, members=[], leases=[]
        )
    try:
        async with asyncio.timeout(cluster.lease):
            members = await cluster.members()
            leases = await cluster.leases()
    except TimeoutError:
        raise UnavailableError(
            f"the database did not answer within {cluster.lease:g}s: the cluster's view "
            "cannot be read now (this replica's own is in /health)"
        ) from None
    owned: dict[str, int] = {}
    for lease in leases:
        if lease.held:
            owned[lease.owner] = owned.get(lease.owner, 0) + 1
    return ClusterOut(
        enabled=True,
        replica=cluster.replica,
        lease_seconds=cluster.lease,
        members=[
            MemberOut(
                id=m.id,
                address=m.address,
                version=m.version,
                started_at=iso_ms(m.started_at),
                heartbeat_at=iso_ms(m.heartbeat_at),
                live=m.live,
                owns=owned.get(m.id, 0),
            )
            for m in members
        ],
        leases=[
            LeaseOut(
                service=lease.service,
                owner=lease.owner if lease.held else None,
                epoch=lease.epoch,
                acquired_at=iso_ms(lease.acquired_at),
                expires_at=iso_ms(lease.expires_at),
                held=lease.held,
            )
            for lease in leases
        ],
    )
