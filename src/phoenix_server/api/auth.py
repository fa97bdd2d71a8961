"""Bearer-token authentication, role checks, and the audit trail of every mutating call.

Which role a request needs follows from its method and the route it reaches
(:func:`needed_role` on the route's path template, found by :func:`route_of`): reading
needs ``viewer``; acting on services (triggers, playbook executions, deploys, reports,
pushed metrics, marking false positives) ``operator``; changing playbooks and reading the
audit log ``admin``. ``GET /health`` and the API's own documentation need nothing. With no
token configured Phoenix serves loopback only (see ``config.settings``) and every caller
is ``anonymous`` with every right; the audit log records them all the same. A request
that reaches no route needs only a valid token, and gets its 404 or 405 from the app.

Before any of that, :mod:`api.request_checks` refuses what a hostile web page could make
a browser send: an unknown ``Host`` (421), a body that is not JSON (415), and a mutating
request carried by the session cookie, or by nothing without tokens, from another origin
(403).

The token is never logged or echoed: problems name the token's holder at most.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phoenix_server.api import request_checks
from phoenix_server.api.request_checks import Refusal
from phoenix_server.domain.auth import ApiToken, Role, TokenRegistry

log = logging.getLogger("phoenix.api")

OPEN_PATHS = frozenset(
    {"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/api/session"}
)
"""Liveness, the API's documentation, the dashboard's page and its sign-in."""
READING = frozenset({"GET", "HEAD", "OPTIONS"})
ANONYMOUS = ApiToken("anonymous", Role.ADMIN, "")
"""Every caller when no token is configured (loopback only)."""


ROUTE_ROLES = {
    ("POST", "/api/playbooks/validate"): Role.VIEWER,  # acts on nothing
    ("POST", "/api/playbooks/{playbook_id}/dry-run"): Role.VIEWER,
    ("POST", "/api/playbooks/{playbook_id}/execute"): Role.OPERATOR,
}
"""Mutating routes whose role is not their resource's default."""


def needed_role(method: str, route: str) -> Role | None:
    """The least role that may call ``method`` on the route with path template ``route``
    (``/api/playbooks/{playbook_id}``); None: anyone may."""
    if route in OPEN_PATHS or route.startswith("/static/"):
        return None
    if route == "/api/audit" or route.startswith("/api/audit/"):
        return Role.ADMIN
    if method in READING:
        return Role.VIEWER
    if (method, route) in ROUTE_ROLES:
        return ROUTE_ROLES[method, route]
    if route.startswith("/api/playbooks"):
        return Role.ADMIN  # changing what Phoenix does
    return Role.OPERATOR


@dataclass(frozen=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]


def _routes(app: Any) -> list[_Route]:
    """The app's operations, from its OpenAPI document: the contract lists every route a
    token can act through, with its path template (the router's own route objects are
    FastAPI internals). Built once per app."""
    routes: list[_Route] | None = getattr(app.state, "auth_routes", None)
    if routes is None:
        routes = [
            _Route(template, compile_path(template)[0], frozenset(m.upper() for m in item))
            for template, item in app.openapi().get("paths", {}).items()
        ]
        app.state.auth_routes = routes
    return routes


def route_of(scope: Scope) -> str | None:
    """The path template of the route that takes this method and path; None if no route
    does (the app answers 404 or 405)."""
    method, path = scope["method"], scope["path"]
    for route in _routes(scope["app"]):
        if method in route.methods and route.pattern.match(path):
            return route.template
    return None


def required_role(scope: Scope) -> Role | None:
    method, path = scope["method"], scope["path"]
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    route = route_of(scope)
    if route is None:
        return Role.VIEWER  # any valid caller may learn that it does not exist
    return needed_role(method, route)


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
        self._hosts: tuple[frozenset[str] | None, frozenset[str]] | None = None

    def _host_names(self, scope: Scope) -> tuple[frozenset[str] | None, frozenset[str]]:
        """(names answered, None: any; names the operator configured), from the runtime's
        settings on first use: the app is built before this middleware sees a request."""
        if self._hosts is None:
            settings = scope["app"].state.runtime.settings
            self._hosts = (settings.accepted_hosts, frozenset(settings.allowed_hosts))
        return self._hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = None
        refusal = request_checks.host_refusal(scope, self._host_names(scope)[0])
        caller: ApiToken | None = None
        if refusal is None:
            caller, refusal = self._authorize(scope)
        scope["state"]["caller"] = caller
        if refusal is None:
            refusal = self._browser_refusal(scope, caller)
        if refusal is not None:
            challenge = [(b"www-authenticate", b"Bearer")] if refusal.status == 401 else []
            await send_error(send, refusal.status, refusal.code, refusal.message, challenge)
            await self._audit(scope, caller, refusal.status)
            return
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            await self._audit(scope, caller, status)

    async def _audit(self, scope: Scope, caller: ApiToken | None, status: int) -> None:
        if scope["method"] not in READING:
            await self.audit(scope, caller, status)

    def _authorize(self, scope: Scope) -> tuple[ApiToken | None, Refusal | None]:
        """The caller, and the refusal if it may not make this request."""
        if not self.tokens:
            return ANONYMOUS, None
        needed = required_role(scope)
        presented = _bearer(scope)
        caller = self.tokens.holder(presented) if presented else None
        session = _cookie(scope, SESSION_COOKIE) if presented is None else None
        ended = False
        if session and self.sessions is not None:
            caller = self.sessions(session)
            presented, ended = session, caller is None
            scope["state"]["by_cookie"] = True
        if needed is None:
            return caller, None
        if presented is None:
            return caller, Refusal(
                401, "unauthorized", "an API token is required: Authorization: Bearer <token>"
            )
        if ended:
            return caller, Refusal(
                401,
                "unauthorized",
                "the session has ended (it expired, or Phoenix restarted): sign in again",
            )
        if caller is None:
            return caller, Refusal(401, "unauthorized", "the API token is not valid")
        if not caller.role.allows(needed):
            return caller, Refusal(
                403,
                "forbidden",
                f"this needs the {needed.value} role; the token of "
                f"'{caller.name}' has {caller.role.value}",
            )
        return caller, None

    def _browser_refusal(self, scope: Scope, caller: ApiToken | None) -> Refusal | None:
        """What a hostile page could make a browser send (see ``api.request_checks``)."""
        refusal = request_checks.content_type_refusal(scope)
        ambient = caller is ANONYMOUS or scope["state"].get("by_cookie", False)
        if refusal is None and ambient and scope["method"] not in READING:
            refusal = request_checks.origin_refusal(scope, self._host_names(scope)[1])
        return refusal
