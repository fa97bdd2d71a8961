"""Requests that act on a service, carried out by the replica that owns it.

With several replicas any of them answers the API, but only a service's owner acts on it.
A replica that does not own the service passes the request on to the owner (its
``PHOENIX_ADVERTISE_URL``, as the member table says) and answers with the owner's status
and body, byte for byte: the contract is the same whichever replica a client reaches, and
what the client is told was accepted, the owner accepted. Never more than one hop: a
forwarded request that reaches a replica which no longer owns the service is refused
(409), and while no replica owns it (its owner just died) the answer is 503 with
``Retry-After``: nothing is acknowledged that no owner took.

The owner's front door judges the forwarded request's ``Host`` (the advertised URL's host):
with replicas on separate machines, list that name in ``PHOENIX_ALLOWED_HOSTS``.
"""

from __future__ import annotations

import logging

import aiohttp
from fastapi import Request, Response

from phoenix_server.api.engine import Engine
from phoenix_server.domain.errors import NotOwnerError, UnavailableError

log = logging.getLogger("phoenix.api")

FORWARDED_BY = "x-phoenix-forwarded-by"
"""Names the replica that passed a request on (so that it is never passed on again)."""
PASSED_ON = ("authorization", "cookie", "content-type", "x-request-id")
"""Request headers the owner needs to judge the request as the first replica would."""
ANSWERED_WITH = ("content-type", "retry-after", "location", "x-request-id")
FORWARD_TIMEOUT = 30.0
"""A trigger answers once the recovery is recorded; a deploy once it started."""


async def to_owner(request: Request, runtime: Engine, service: str) -> Response | None:
    """The owner's answer to ``request`` when another replica owns ``service``; None when
    this replica should answer it itself (one Phoenix, or it owns the service, or the
    service is unknown: the usual 404 follows)."""
    cluster = runtime.cluster
    if cluster is None or service not in runtime.catalog or cluster.owns(service):
        return None
    if request.headers.get(FORWARDED_BY):
        raise NotOwnerError(
            f"service '{service}' is not owned by replica {cluster.replica} any more (it "
            f"moved while the request was passed on from {request.headers[FORWARDED_BY]}); "
            "send it again"
        )
    lease = await cluster.lease_of(service)
    members = {member.id: member for member in await cluster.members()}
    owner = members.get(lease.owner) if lease is not None and lease.held else None
    if owner is None or not owner.live or not owner.address:
        raise UnavailableError(
            f"service '{service}' has no live owner right now (its replica stopped or died; "
            f"another takes it over within {2 * cluster.lease:.0f}s): nothing was done, "
            "send it again"
        )
    url = owner.address + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    headers = {name: request.headers[name] for name in PASSED_ON if name in request.headers}
    headers[FORWARDED_BY] = cluster.replica
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as session,
            session.request(
                request.method, url, data=await request.body(), headers=headers
            ) as answer,
        ):
            body = await answer.read()
            kept = {n: answer.headers[n] for n in ANSWERED_WITH if n in answer.headers}
            return Response(content=body, status_code=answer.status, headers=kept)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("could not pass %s %s on to replica %s: %r", request.method, url, owner.id, exc)
        raise UnavailableError(
            f"service '{service}' is owned by replica {owner.id}, which did not answer "
            f"({type(exc).__name__}): it may just have died; another replica takes the "
            f"service over within {2 * cluster.lease:.0f}s. Whether it acted is in "
            "/api/recovery/history; send it again if not"
        ) from None
