"""Every failure as API.md's envelope: ``{"success": false, "error": {code, message, details}}``.

Phoenix's own exceptions map to their statuses; FastAPI's validation errors become 400
(the body is not JSON) or 422 (each problem with a path such as ``steps[1].condition``);
anything unexpected is logged and answered 500 without internals. The body-size guard is
here too: a client cannot make Phoenix buffer an unbounded body (413).

The OpenAPI document says the same (:func:`describe_errors`): every error status an
operation can answer, each with this envelope as its schema, instead of FastAPI's own
``HTTPValidationError`` that Phoenix never sends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phoenix_server.api.auth import READING, needed_role
from phoenix_server.domain.auth import Role
from phoenix_server.domain.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PhoenixError,
    PlatformError,
    Problem,
    RecoveryInProgressError,
    UnauthorizedError,
    UnavailableError,
    problem_path,
)

log = logging.getLogger("phoenix.api")

MAX_BODY_BYTES = 1024 * 1024
LARGER_BODIES = {"/api/alerts/alertmanager": 16 * 1024 * 1024}
"""Routes whose bodies may be larger: Alertmanager sends a whole group in one payload
(1,000 alerts with long annotations are a few MB), and refusing it with a 4xx would make it
re-send the same payload forever."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
            "message": _sendable(message),
            "details": [
                {"path": _sendable(p.path), "message": _sendable(p.message)} for p in details
            ],
        },
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _sendable(text: str) -> str:
    """``text`` as UTF-8 can carry it. A message may quote what the client sent, and JSON
    can escape half a surrogate pair (``"\\udc00"``), which no UTF-8 body can hold: it is
    shown escaped instead of failing the answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_STATUS = {
    UnauthorizedError: 401,
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
    if isinstance(exc, InvalidRequestError) and not details:
        # Every 422 names where the problem is; without a field, it is the request itself.
        details = [Problem("body" if request.method in BODY_METHODS else "", exc.message)]
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


UNPARSABLE_BODY = "There was an error parsing the body"
"""FastAPI's 400 when the body fails to decode other than as a JSON syntax error."""


def _unparsable(cause: BaseException | None) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number with too many digits"  # over sys.get_int_max_str_digits()
    return "it cannot be read"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    message = str(exc.detail)
    if exc.status_code == 400 and message == UNPARSABLE_BODY:
        codes[400] = "malformed"
        message = f"the request body is not valid JSON: {_unparsable(exc.__cause__)}"
    elif exc.status_code == 404 and message == "Not Found":
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
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, larger=LARGER_BODIES)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            describe_errors(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


class ErrorDetail(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorEnvelope(BaseModel):
    """Every error answer (a 409 for a running recovery adds its ``recoveryId``)."""

    success: Literal[False]
    error: ErrorBody


ERROR_STATUSES = {
    400: "Malformed: the body is not JSON, or not a JSON object",
    401: "No API token, or not a valid one",
    403: "The token's role is too low (the message names the role needed), or a browser's "
    "request came from another origin",
    404: "Unknown thing (named in the message)",
    409: "Conflict with the current state (a running recovery adds its recoveryId)",
    413: f"Request body over {MAX_BODY_BYTES} bytes (16 MiB for Alertmanager's webhook)",
    415: "The body is not JSON (Content-Type must be application/json)",
    421: "The Host header names a host this Phoenix does not answer to (PHOENIX_ALLOWED_HOSTS)",
    422: "Invalid: each problem in details, with a path such as steps[1].condition",
    503: "Phoenix is temporarily unable to serve this (the reason is given; Retry-After)",
}


FASTAPI_422 = "Validation Error"
"""The description of the 422 FastAPI declares on its own."""


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses any operation of this shape can answer (a route declares the
    404s and 409s that its own logic adds)."""
    declared = [int(code) for code in operation.get("responses", {}) if code.isdigit()]
    statuses = {code for code in declared if code >= 400}
    needed = needed_role(method.upper(), path)
    if needed is not None:
        statuses.add(401)
        if needed is not Role.VIEWER:
            statuses.add(403)
    parameters = operation.get("parameters", [])
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413}
    if method.upper() in BODY_METHODS:
        # Any POST/PUT/PATCH may carry a body, declared or not: too big, or not JSON.
        statuses |= {413, 415}
    if method.upper() not in READING:
        statuses.add(403)  # a browser's request from another origin
    statuses.add(421)  # a Host this Phoenix does not answer to
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.add(404)
    if path.startswith("/api/"):
        statuses.add(503)
    return statuses


def describe_errors(document: dict[str, Any]) -> None:
    """Declare the error statuses of every operation in ``document`` with the envelope."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(envelope.pop("$defs", {}))
    schemas["ErrorEnvelope"] = envelope
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(method, path, operation)):
                declared = responses.get(str(status), {}).get("description")
                if not declared or declared == FASTAPI_422:
                    declared = ERROR_STATUSES.get(status, "Error")
                responses[str(status)] = {"description": declared, "content": content}


class _TooLarge(HTTPException):
    """Raised while reading the body; FastAPI passes HTTPExceptions through to the handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over {limit} bytes")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (or the ``larger`` limit of their path)
    with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, limit)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
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
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "code": "too_large",
                    "message": f"request body over {limit} bytes",
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
