"""API errors as a real server reports them: ``Status`` objects with the reasons and messages
Kubernetes uses, so a client's error handling meets what it will meet in a cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .resources import ResourceType


@dataclass(frozen=True)
class Cause:
    """One field error of an Invalid status (``details.causes``)."""

    field: str
    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, ...
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ApiStatusError(Exception):
    """Raised anywhere in the fake; the HTTP layer answers it as a ``Status`` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiStatusError:
    return ApiStatusError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def no_such_path() -> ApiStatusError:
    return ApiStatusError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(rt: ResourceType, name: str) -> ApiStatusError:
    return ApiStatusError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> ApiStatusError:
    return ApiStatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiStatusError:
    listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(map(str, causes)) + "]"
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [
        {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
    ]
    return ApiStatusError(
        422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {listed}', details
    )


def bad_request(message: str) -> ApiStatusError:
    return ApiStatusError(400, "BadRequest", message)


def expired(message: str) -> ApiStatusError:
    return ApiStatusError(410, "Expired", message)


def method_not_allowed() -> ApiStatusError:
    return ApiStatusError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unsupported_media_type(content_type: str) -> ApiStatusError:
    return ApiStatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        "types include: application/json-patch+json, application/merge-patch+json, "
        "application/apply-patch+yaml, application/strategic-merge-patch+json",
    )


def unauthorized() -> ApiStatusError:
    return ApiStatusError(401, "Unauthorized", "Unauthorized")


def forbidden(
    user: str, verb: str, resource: str, group: str, namespace: str | None, name: str | None
) -> ApiStatusError:
    target = f'{resource} "{name}"' if name else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (
        f'{target} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{group}"{where}'
    )
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource.split("/")[0]
    return ApiStatusError(403, "Forbidden", message, details)


def internal(message: str) -> ApiStatusError:
    return ApiStatusError(500, "InternalError", f"Internal error occurred: {message}", {})


def unavailable(message: str) -> ApiStatusError:
    return ApiStatusError(503, "ServiceUnavailable", message, {})


def by_code(code: int, message: str) -> ApiStatusError:
    """An injected failure: the Status a server sends with that code."""
    reasons = {
        429: "TooManyRequests",
        500: "InternalError",
        502: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return ApiStatusError(code, reasons.get(code, "InternalError"), message, {})
