"""Browser sign-in for the dashboard: a token once, then a session cookie.

A browser cannot put a bearer token on an ``EventSource`` request, so the dashboard signs
in with ``POST /api/session {"token": ...}`` and carries ``phoenix_session``: an opaque
random id (the token itself never goes into the cookie), ``HttpOnly`` (page scripts cannot
read it), ``SameSite=Strict`` (other sites' pages cannot send it), ``Secure`` when the
request came over HTTPS, valid :data:`SESSION_HOURS` hours or until ``DELETE
/api/session``. Sessions live in memory: a Phoenix restart signs everyone out.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from phoenix_server.api.auth import ANONYMOUS, SESSION_COOKIE
from phoenix_server.api.common import RuntimeDep, StrictInput, WireModel
from phoenix_server.domain.auth import ApiToken, Role
from phoenix_server.domain.errors import UnauthorizedError

router = APIRouter(prefix="/api/session", tags=["session"])

COOKIE = SESSION_COOKIE
SESSION_HOURS = 12
MAX_SESSIONS = 10_000


class Sessions:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, tuple[ApiToken, float]] = OrderedDict()

    def open(self, holder: ApiToken) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (holder, time.monotonic() + SESSION_HOURS * 3600)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def holder(self, session: str) -> ApiToken | None:
        found = self._sessions.get(session)
        if found is None:
            return None
        holder, expires = found
        if time.monotonic() >= expires:
            del self._sessions[session]
            return None
        return holder

    def close(self, session: str) -> None:
        self._sessions.pop(session, None)


class SignIn(StrictInput):
    token: str = Field(min_length=1, max_length=4096)


class Who(WireModel):
    success: bool = True
    name: str
    role: Role
    auth_required: bool
    """False when Phoenix has no tokens (loopback only): everyone may do everything."""


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}


@router.get("", response_model=Who, response_model_by_alias=True, responses=UNAUTHORIZED)
async def who_am_i(request: Request, runtime: RuntimeDep) -> Who:
    """Who this request is (by bearer token or session cookie)."""
    caller: ApiToken | None = request.scope.get("state", {}).get("caller")
    if caller is None:
        raise UnauthorizedError("not signed in: POST /api/session with an API token")
    return Who(name=caller.name, role=caller.role, auth_required=bool(runtime.tokens))


@router.post("", response_model=Who, response_model_by_alias=True, responses=UNAUTHORIZED)
async def sign_in(body: SignIn, request: Request, response: Response, runtime: RuntimeDep) -> Who:
    """Exchange an API token for a session cookie (the dashboard's sign-in)."""
    if not runtime.tokens:
        return Who(name=ANONYMOUS.name, role=ANONYMOUS.role, auth_required=False)
    holder = runtime.tokens.holder(body.token)
    if holder is None:
        raise UnauthorizedError("the API token is not valid")
    response.set_cookie(
        COOKIE,
        _sessions(request).open(holder),
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return Who(name=holder.name, role=holder.role, auth_required=True)


@router.delete("", status_code=204)
async def sign_out(request: Request, response: Response) -> None:
    """End this browser's session."""
    session = request.cookies.get(COOKIE)
    if session:
        _sessions(request).close(session)
    response.delete_cookie(COOKIE, path="/")
