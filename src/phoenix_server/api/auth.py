"""Bearer-token authentication, role checks, and the audit trail of every mutating call.

Which role a request needs follows from its method and path (:func:`needed_role`): reading
needs ``viewer``; acting on services (triggers, playbook executions, deploys, reports,
pushed metrics, marking false positives) ``operator``; changing playbooks and reading the
audit log ``admin``. ``GET /health`` and the API's own documentation need nothing. With no
token configured Phoenix serves loopback only (see ``config.settings``) and every caller
is ``anonymous`` with every right; the audit log records them all the same.

The token is never logged or echoed: problems name the token's holder at most.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phoenix_server.domain.auth import ApiToken, Role, TokenRegistry

log = logging.getLogger("phoenix.api")

OPEN_PATHS = frozenset(
    {"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/api/session"}
)
"""Liveness, the API's documentation, the dashboard's page and its sign-in."""
READING = frozenset({"GET", "HEAD", "OPTIONS"})
ANONYMOUS = ApiToken("anonymous", Role.ADMIN, "")
"""Every caller when no token is configured (loopback only)."""


def needed_role(method: str, path: str) -> Role | None:
    """The least role that may make this request; None: anyone may."""
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    if path == "/api/audit" or path.startswith("/api/audit/"):
        return Role.ADMIN
    if method in READING:
        return Role.VIEWER
    if path.startswith("/api/playbooks"):
        if path.endswith("/dry-run") or path == "/api/playbooks/validate":
            return Role.VIEWER  # acts on nothing
        if path.endswith("/execute"):
            return Role.OPERATOR
        return Role.ADMIN
    return Role.OPERATOR


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text: str = bytes(value).decode("latin-1")
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return ""
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                key, _, found = part.strip().partition("=")
                if key == name and found:
                    return found
    return None


async def send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(
        {"success": False, "error": {"code": code, "message": message, "details": []}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


SESSION_COOKIE = "phoenix_session"

AuditWriter = Callable[[Scope, ApiToken | None, int], Awaitable[None]]


class Authorization:
    """Who is calling (``scope["state"]["caller"]``), and whether they may; every mutating
    call, allowed or not, goes to ``audit`` with its result."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenRegistry,
        audit: AuditWriter,
        sessions: Callable[[str], ApiToken | None] | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.audit = audit
        self.sessions = sessions
        """A browser session's holder, from its cookie (the dashboard)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        needed = needed_role(method, path)
        caller: ApiToken | None = ANONYMOUS
        refusal: tuple[int, str, str] | None = None
        if self.tokens:
            presented = _bearer(scope)
            caller = self.tokens.holder(presented) if presented else None
            session = _cookie(scope, SESSION_COOKIE) if presented is None else None
            ended = False
            if session and self.sessions is not None:
                caller = self.sessions(session)
                presented, ended = session, caller is None
            if needed is not None:
                if presented is None:
                    refusal = (
                        401,
                        "unauthorized",
                        "an API token is required: Authorization: Bearer <token>",
                    )
                elif ended:
                    refusal = (
                        401,
                        "unauthorized",
                        "the session has ended (it expired, or Phoenix restarted): sign in again",
                    )
                elif caller is None:
                    refusal = (401, "unauthorized", "the API token is not valid")
                elif not caller.role.allows(needed):
                    refusal = (
                        403,
                        "forbidden",
                        f"this needs the {needed.value} role; the token of "
                        f"'{caller.name}' has {caller.role.value}",
                    )
        scope.setdefault("state", {})["caller"] = caller
        status = 500
        if refusal is not None:
            status, code, message = refusal
            challenge = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await send_error(send, status, code, message, challenge)
        else:

            async def noting_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, noting_status)
            finally:
                if method not in READING:
                    await self.audit(scope, caller, status)
            return
        if method not in READING:
            await self.audit(scope, caller, status)
