"""The one door to a running Phoenix: its REST API over HTTP, through httpx.

Every client command talks to Phoenix through :class:`Phoenix`. Whatever goes wrong on
the way comes out of here as a :class:`~phoenix_server.cli.errors.CliError` whose one line
an operator can act on: the server's own error message (with the paths of its details)
and exit status 1 when Phoenix answered no; "cannot reach Phoenix at URL: …" and exit
status 2 when it could not be asked. The token (``$PHOENIX_TOKEN``) goes in the
``Authorization`` header and nowhere else: it is never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from phoenix_server import __version__
from phoenix_server.cli.errors import REFUSED, USAGE, CliError

DEFAULT_URL = "http://127.0.0.1:3051"
TOKEN_VARIABLE = "PHOENIX_TOKEN"
TIMEOUT = 10.0
"""Seconds one request may take (Phoenix answers in milliseconds; a hang is a problem)."""
MAX_DETAILS = 3
"""Details of an error named on its one line; the rest are counted."""

Json = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """Which Phoenix to talk to, and the token to show it (never printed)."""

    url: str
    token: str | None = None

    @property
    def shown(self) -> str:
        """The URL as messages print it: without any password in it."""
        return shown_url(self.url)


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def target(url: str, environ: Mapping[str, str] = os.environ) -> Target:
    """The URL as given (``--url``, else ``$PHOENIX_URL``, else the default) and the token
    from ``$PHOENIX_TOKEN``; a URL that is not http(s)://host is a usage error."""
    url = url.strip().rstrip("/") or DEFAULT_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"--url {shown_url(url)!r} is not an http:// or https:// URL of a host "
            f"(e.g. {DEFAULT_URL}); set --url or PHOENIX_URL",
            USAGE,
        )
    token = environ.get(TOKEN_VARIABLE, "").strip() or None
    return Target(url=url, token=token)


class Phoenix:
    """A Phoenix server's API: JSON in, JSON out, failures as CliError."""

    def __init__(
        self,
        where: Target,
        *,
        timeout: float = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.target = where
        headers = {"user-agent": f"phoenix-cli/{__version__}", "accept": "application/json"}
        if where.token is not None:
            headers["authorization"] = f"Bearer {where.token}"
        self._http = httpx.Client(
            base_url=where.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Phoenix:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, str | int | None] | None = None) -> Json:
        given = {k: v for k, v in (params or {}).items() if v is not None}
        return self._call("GET", path, params=given)

    def post(self, path: str, body: object | None = None) -> Json:
        return self._call("POST", path, json=body)

    def put(self, path: str, body: object) -> Json:
        return self._call("PUT", path, json=body)

    def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise CliError(
                f"Phoenix at {self.target.shown} did not answer {method} {path} within "
                f"{self._http.timeout.read:g}s; is it overloaded, or is that the right --url?",
                USAGE,
                transient=True,
            ) from None
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach Phoenix at {self.target.shown}: {_reason(exc)}; is it running? "
                "(set --url or PHOENIX_URL)",
                USAGE,
                transient=True,
            ) from None
        body = _json_object(answer)
        if body is None:
            raise CliError(
                f"{self.target.shown} answered {method} {path} with HTTP {answer.status_code} "
                "and no Phoenix JSON; is --url (or PHOENIX_URL) a Phoenix server?",
                USAGE,
            )
        if answer.is_success:
            return body
        raise CliError(
            refusal(answer.status_code, body), REFUSED, transient=answer.status_code == 503
        )


def refusal(status: int, body: Json) -> str:
    """The one line for an error answer: the server's message, then its details briefly
    (each ``path: message``, those the message already says left out), then what to do."""
    found = body.get("error")
    error: Json = found if isinstance(found, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    said = []
    for detail in details:
        path, text = str(detail.get("path") or ""), str(detail.get("message") or "")
        if text in message:  # the message says it already: only where
            said.append(f"at {path}" if path and f"{path}:" not in message else "")
        else:
            said.append(f"{path}: {text}" if path else text)
    said = [text for text in said if text]
    if said:
        shown = "; ".join(said[:MAX_DETAILS])
        more = len(said) - MAX_DETAILS
        message += f" ({shown}" + (f"; and {more} more" if more > 0 else "") + ")"
    hint = _hint(status, str(error.get("code") or ""), body)
    return message + hint


def _hint(status: int, code: str, body: Json) -> str:
    if status == 401:
        return f"; set {TOKEN_VARIABLE} to an API token of this Phoenix"
    if code == "recovery_in_progress" and body.get("recoveryId"):
        return f"; follow it with: phoenix recovery {body['recoveryId']} (or trigger with --force)"
    if status == 503:
        return "; try again shortly"
    return ""


def _json_object(answer: httpx.Response) -> Json | None:
    if "json" not in answer.headers.get("content-type", ""):
        return None
    try:
        body = answer.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _reason(exc: httpx.TransportError) -> str:
    """The OS's reason without its errno decoration (``[Errno 111] Connection refused``)."""
    text = str(exc) or exc.__class__.__name__
    if "] " in text and text.startswith("["):
        text = text.split("] ", 1)[1]
    return text[:1].lower() + text[1:]
