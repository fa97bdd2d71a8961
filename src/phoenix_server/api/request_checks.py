"""Checks that keep a browser from being turned against a Phoenix it can reach.

A Phoenix on loopback with no tokens trusts whoever can connect, and a web page the
operator opens can make the browser connect. Three doors are closed here:

* **DNS rebinding.** A page on ``rebind.attacker.example`` whose name then resolves to
  127.0.0.1 reaches Phoenix as same-origin. Its requests still carry ``Host:
  rebind.attacker.example``, so only known names are answered (:func:`host_refusal`).
* **Cross-site forms.** A plain HTML form posts ``application/x-www-form-urlencoded``
  without a CORS preflight; Phoenix takes JSON only (:func:`content_type_refusal`), and a
  browser sends ``application/json`` cross-site only after a preflight Phoenix never grants.
* **Ambient credentials.** A request carried by the session cookie (or by no credential at
  all, without tokens) must come from a page of Phoenix's own origin when the browser says
  where it came from (:func:`origin_refusal`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import Scope

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = bytes(value).decode("latin-1")
            return text
    return None


def host_name(netloc: str) -> str:
    """The host of ``host[:port]`` or ``[v6][:port]``, lower case, without brackets."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    name, colon, port = netloc.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else netloc


def host_acceptable(host: str, accepted: frozenset[str]) -> bool:
    """``host`` is one of ``accepted``, or an IP address: a rebinding page always reaches
    Phoenix under a name (the attacker's), so an address is never one, and a kubelet or
    load balancer probing ``10.0.0.7:3051`` must be answered."""
    name = host_name(host)
    if name in accepted:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_refusal(scope: Scope, accepted: frozenset[str] | None) -> Refusal | None:
    """421 for a ``Host`` that is not one of ``accepted`` (None: any host)."""
    if accepted is None:
        return None
    host = header(scope, b"host")
    if host is None or host_acceptable(host, accepted):
        return None  # no Host at all is HTTP/1.0 from a tool: no browser sends that
    return Refusal(
        421,
        "misdirected_request",
        f"this Phoenix does not answer to host {host!r} (it answers to "
        f"{', '.join(sorted(accepted))}); if that name is Phoenix's, add it to "
        "PHOENIX_ALLOWED_HOSTS",
    )


def _has_body(scope: Scope) -> bool:
    length = header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return header(scope, b"transfer-encoding") is not None


def content_type_refusal(scope: Scope) -> Refusal | None:
    """415 for a POST/PUT/PATCH that is not JSON. No body and no type is fine (optional
    bodies); a form's type is refused even with no body, as a browser sends it cross-site
    without asking first."""
    if scope["method"] not in BODY_METHODS:
        return None
    given = header(scope, b"content-type")
    if given is None:
        if not _has_body(scope):
            return None
        message = f"a request body needs Content-Type: {JSON}; none was given"
    elif given.partition(";")[0].strip().lower() == JSON:
        return None
    else:
        message = f"expected Content-Type: {JSON}, got {given[:200]!r}"
    return Refusal(415, "unsupported_media_type", message)


def origin_refusal(scope: Scope, configured: frozenset[str]) -> Refusal | None:
    """403 for an ``Origin`` that is neither this request's ``Host`` nor a host name the
    operator configured (a proxy may rewrite ``Host``). No ``Origin``: not a browser's
    cross-site request, nothing to check."""
    origin = header(scope, b"origin")
    if origin is None:
        return None
    host = header(scope, b"host")
    netloc = urlsplit(origin.strip()).netloc.lower() if origin.strip() != "null" else ""
    if netloc and (netloc == (host or "").strip().lower() or host_name(netloc) in configured):
        return None
    return Refusal(
        403,
        "forbidden",
        f"cross-origin request refused: Origin {origin[:200]!r} is not this Phoenix "
        f"({host!r}); a page of another site cannot act with your session",
    )
