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

import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from fastapi import Request, Response

from phoenix_server.api.engine import ClusterView, Engine
from phoenix_server.domain.errors import NotOwnerError, UnavailableError

log = logging.getLogger("phoenix.api")

FORWARDED_BY = "x-phoenix-forwarded-by"
"""Names the replica that passed a request on (so that it is never passed on again)."""
PASSED_ON = ("authorization", "content-type", "x-request-id")
"""Request headers the owner needs to judge the request as the first replica would. Not
the session cookie: sessions live in each replica's memory (the dashboard's sign-in is
refused by another replica; an API token works everywhere)."""
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
    owner = _owner(request, cluster, service)
    status, headers, body = await _send(
        request, cluster, owner, await request.body(), f"service '{service}'"
    )
    return Response(content=body, status_code=status, headers=headers)


def split_by_owner(
    request: Request, runtime: Engine, services: Sequence[str | None]
) -> dict[str, tuple[tuple[str, str], list[int]]]:
    """For a batch whose items each name a service (a report, an event): the positions of
    the items other replicas own, by owner. Items of this replica, of no known service or
    of none, stay here. Raises 503 if an item's service has no live owner (nothing of the
    batch is done: its sender sends it again, and what was done is then a duplicate)."""
    cluster = runtime.cluster
    if cluster is None:
        return {}
    parts: dict[str, tuple[tuple[str, str], list[int]]] = {}
    for index, service in enumerate(services):
        if service is None or service not in runtime.catalog or cluster.owns(service):
            continue
        owner = _owner(request, cluster, service)
        parts.setdefault(owner[0], (owner, []))[1].append(index)
    return parts


async def pass_part(
    request: Request, runtime: Engine, owner: tuple[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    """The owner's JSON answer to ``body``, sent as ``request`` was; 503 unless it is 200."""
    cluster = runtime.cluster
    assert cluster is not None
    status, _headers, answer = await _send(
        request, cluster, owner, json.dumps(body).encode(), f"a part of it ({owner[0]}'s)"
    )
    if status != 200:
        raise UnavailableError(
            f"replica {owner[0]}, which owns some of the services named, answered {status}: "
            "nothing of this request is settled, send it again (what was done is then a "
            "duplicate)"
        )
    result: dict[str, Any] = json.loads(answer)
    return result


def _owner(request: Request, cluster: ClusterView, service: str) -> tuple[str, str]:
    if request.headers.get(FORWARDED_BY):
        raise NotOwnerError(
            f"service '{service}' is not owned by replica {cluster.replica} any more (it "
            "moved while the request was passed on to it); send it again"
        )
    owner = cluster.owner_address(service)
    if owner is None and cluster.owner_of(service) == cluster.replica:
        raise UnavailableError(
            f"replica {cluster.replica} is taking service '{service}' over right now (closing "
            "what its previous owner left open): nothing was done, send it again in a moment"
        )
    if owner is None:
        raise UnavailableError(
            f"service '{service}' has no live owner right now (its replica stopped or died; "
            f"another takes it over within {2 * cluster.lease:.0f}s): nothing was done, "
            "send it again"
        )
    return owner


async def _send(
    request: Request, cluster: ClusterView, owner: tuple[str, str], body: bytes, what: str
) -> tuple[int, dict[str, str], bytes]:
    owner_id, address = owner
    url = address + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    headers = {name: request.headers[name] for name in PASSED_ON if name in request.headers}
    headers[FORWARDED_BY] = cluster.replica
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as session,
            session.request(request.method, url, data=body, headers=headers) as answer,
        ):
            content = await answer.read()
            kept = {n: answer.headers[n] for n in ANSWERED_WITH if n in answer.headers}
            return answer.status, kept, content
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("could not pass %s %s on to replica %s: %r", request.method, url, owner_id, exc)
        raise UnavailableError(
            f"{what} is owned by replica {owner_id}, which did not answer "
            f"({type(exc).__name__}): it may just have died; another replica takes over "
            f"within {2 * cluster.lease:.0f}s. Whether it acted is in the history; send it "
            "again if not"
        ) from None
