"""Every failure as API.md's envelope: ``{"success": false, "error": {code, message, details}}``.

Phoenix's own exceptions map to their statuses; FastAPI's validation errors become 400
(the body is not JSON) or 422 (each problem with a path such as ``steps[1].condition``);
anything unexpected is logged and answered 500 without internals. The body-size guard is
here too: a client cannot make Phoenix buffer an unbounded body (413).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phoenix_server.domain.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PhoenixError,
    PlatformError,
    Problem,
    RecoveryInProgressError,
    UnavailableError,
    problem_path,
)

log = logging.getLogger("phoenix.api")

MAX_BODY_BYTES = 1024 * 1024


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[Problem] = (),
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "success": False,
        "error": {
            "code": code,
            "message": message,
            "details": [{"path": p.path, "message": p.message} for p in details],
        },
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


_STATUS = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidRequestError: 422,
    UnavailableError: 503,
    PlatformError: 503,
}


async def _phoenix_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PhoenixError)
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    details = exc.problems if isinstance(exc, InvalidRequestError) else []
    extra = {"recoveryId": exc.recovery_id} if isinstance(exc, RecoveryInProgressError) else None
    headers = {"Retry-After": "5"} if status == 503 else None
    if status == 500:
        log.error("unmapped Phoenix error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(status, exc.code, exc.message, details, extra=extra, headers=headers)


def _location(loc: Sequence[int | str]) -> tuple[str, str]:
    where = str(loc[0]) if loc else "body"
    return where, problem_path(tuple(loc[1:]))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        error = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(400, "malformed", f"the request body is not valid JSON: {reason}")
    problems = []
    for error in errors:
        where, path = _location(error.get("loc", ()))
        if error.get("type") == "missing" and where == "body" and not path:
            return error_response(
                400, "malformed", "a JSON body is required (Content-Type: application/json)"
            )
        if error.get("type") == "model_attributes_type" or (
            error.get("type") == "dict_type" and where == "body" and not path
        ):
            return error_response(400, "malformed", "the request body must be a JSON object")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "missing":
            message = "required"
        elif error.get("type") == "enum":
            expected = (error.get("ctx") or {}).get("expected", "")
            message = f"unknown value {error.get('input')!r}; expected one of {expected}"
        problems.append(Problem(path or where, message))
    summary = "; ".join(str(p) for p in problems[:3])
    return error_response(422, "invalid", f"invalid request: {summary}", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this answer and the server logs the traceback once.
    return error_response(500, "internal", "Phoenix failed to handle this request; see its log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(PhoenixError, _phoenix_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)


class _TooLarge(HTTPException):
    """Raised while reading the body; FastAPI passes HTTPExceptions through to the handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over {limit} bytes")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "code": "too_large",
                    "message": f"request body over {self.limit} bytes",
                    "details": [],
                },
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
