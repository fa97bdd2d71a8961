"""``GET /api/audit`` (admin): every mutating API call — who, what, when, from where, and
its result — newest first.

The recorded path keeps its query string for context, but never a secret in it: values of
keys such as ``token`` or ``password`` are replaced by :data:`REDACTED` (a client that put
its token in the URL must not leave it in the log for every admin to read). ``remote`` is
the peer address, or the client a trusted proxy (``TRUSTED_PROXIES``) names.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import APIRouter, Query
from starlette.types import Scope

from phoenix_server.api.auth import ANONYMOUS, AuditWriter
from phoenix_server.api.common import Limit, Offset, RuntimeDep, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.domain import ids
from phoenix_server.domain.auth import ApiToken, AuditEntry, Role
from phoenix_server.store import audit
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/audit", tags=["audit"])

REDACTED = "[redacted]"
SECRET_KEY = re.compile(
    r"token|passw|secret|api[-_]?key|apikey|auth|credential|session|signature|sig$|^key$",
    re.IGNORECASE,
)
"""Query keys whose values are secrets (``token``, ``access_token``, ``api_key``, ...)."""


def redacted_query(query: str) -> str:
    """``query`` with the value of every key that names a secret replaced."""
    parts = []
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if equals and value and SECRET_KEY.search(unquote_plus(key)):
            value = REDACTED
        parts.append(f"{key}{equals}{value}")
    return "&".join(parts)


def recorded_path(scope: Scope) -> str:
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    path: str = scope["path"]
    return path + (f"?{redacted_query(query)}" if query else "")


class AuditEntryOut(WireModel):
    id: str
    timestamp: str
    actor: str
    role: Role | None
    method: str
    path: str
    remote: str | None
    status: int


class AuditLog(WireModel):
    success: bool = True
    entries: list[AuditEntryOut]
    total: int
    limit: int
    offset: int


def audit_writer(runtime: Engine) -> AuditWriter:
    async def write(scope: Scope, caller: ApiToken | None, status: int) -> None:
        client = scope.get("client")
        path = recorded_path(scope)
        await runtime.audit.record(
            AuditEntry(
                id=ids.new_id(ids.AUDIT),
                at=runtime.clock.now(),
                actor=caller.name if caller is not None else "unauthenticated",
                role=caller.role if caller is not None and caller is not ANONYMOUS else None,
                method=scope["method"],
                path=path,
                remote=client[0] if client else None,
                status=status,
            )
        )

    return write


@router.get("", response_model=AuditLog, response_model_by_alias=True)
async def audit_log(
    runtime: RuntimeDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AuditLog:
    """Mutating calls, newest first (``actor`` narrows to one token holder)."""
    entries, total = await runtime.store.read(
        audit.list_entries, actor=actor, limit=limit, offset=offset
    )
    return AuditLog(
        entries=[
            AuditEntryOut(
                id=e.id,
                timestamp=iso_ms(e.at) or "",
                actor=e.actor,
                role=e.role,
                method=e.method,
                path=e.path,
                remote=e.remote,
                status=e.status,
            )
            for e in entries
        ],
        total=total,
        limit=limit,
        offset=offset,
    )
