"""Phoenix's own exception tree. Foreign exceptions (SDKs, OS, database drivers) are
translated into these at the door of the layer that meets them, so callers handle one tree::

    PhoenixError
    ├── NotFoundError            a named thing does not exist            → HTTP 404
    ├── ConflictError            the request collides with current state → HTTP 409
    │   └── RecoveryInProgressError   carries the running recovery's id
    ├── InvalidRequestError      well-formed but not acceptable          → HTTP 422
    │   └── UnsupportedStrategyError  the service cannot do that strategy
    ├── UnavailableError         Phoenix temporarily cannot serve this   → HTTP 503
    ├── ConfigError              settings or service file invalid: refuse to start
    └── PlatformError            a platform failed to act (spawn, stop, adopt)
        ├── ProcessStartError    a local process could not be started
        └── ResourceExhaustedError   the machine is out of something it gets back

Every error carries a message a person can act on; 4xx errors name the offending
field or thing.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

RESOURCE_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM, errno.ENOBUFS, errno.ENOSPC}
)
"""OS errors that say the machine (or Phoenix) ran out of something for now: descriptors,
processes, memory, buffers, disk. Trying again later works; the strategy did not fail."""


@dataclass(frozen=True)
class Problem:
    """One problem in an input, located by a path such as ``steps[1].condition``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def problem_path(loc: tuple[int | str, ...]) -> str:
    """``('steps', 1, 'condition')`` → ``steps[1].condition``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


class PhoenixError(Exception):
    """Base of everything Phoenix raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(PhoenixError):
    code = "not_found"


class ConflictError(PhoenixError):
    code = "conflict"


class RecoveryInProgressError(ConflictError):
    code = "recovery_in_progress"

    def __init__(self, service: str, recovery_id: str) -> None:
        super().__init__(
            f"service '{service}' already has recovery {recovery_id} in progress; "
            "wait for it, or send force=true to cancel it and start anew"
        )
        self.service = service
        self.recovery_id = recovery_id


class StaleOwnerError(ConflictError):
    """A write for a service refused by the database: the lease it was made under (its
    epoch) is no longer the service's current one, so another replica owns it now."""

    code = "stale_owner"


class NotOwnerError(ConflictError):
    """Another replica owns the service (several Phoenixes share a database): only its
    owner acts on it."""

    code = "not_owner"


class UnauthorizedError(PhoenixError):
    """No valid credentials (an unknown token, no session)."""

    code = "unauthorized"


class InvalidRequestError(PhoenixError):
    code = "invalid"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnsupportedStrategyError(InvalidRequestError):
    code = "unsupported_strategy"


class UnavailableError(PhoenixError):
    code = "unavailable"


class ConfigError(PhoenixError):
    """Invalid configuration; ``problems`` lists every one found, not just the first."""

    code = "config_invalid"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    def lines(self) -> list[str]:
        """One line per problem, prefixed with the source (file or variable)."""
        if not self.problems:
            return [self.message]
        return [f"{self.message}: {problem}" for problem in self.problems]


class PlatformError(PhoenixError):
    code = "platform_error"


class ProcessStartError(PlatformError):
    code = "process_start_failed"


class ResourceExhaustedError(PlatformError):
    """Out of descriptors, processes, memory or disk: transient. A recovery step that
    meets it is retried after a delay and does not use up an attempt."""

    code = "resource_exhausted"


def is_resource_exhaustion(exc: BaseException) -> bool:
    """``exc`` says the machine ran out of something it will have again."""
    if isinstance(exc, ResourceExhaustedError):
        return True
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS
