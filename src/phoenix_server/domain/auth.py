"""Who may do what: API tokens with roles.

``viewer`` reads; ``operator`` also acts on services (trigger, execute playbooks, deploy,
report failures, push metrics); ``admin`` also changes what Phoenix does (playbooks) and
reads the audit log. Tokens are kept only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

MIN_TOKEN_LENGTH = 16


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    name: str
    """Who holds it: the audit log's actor (never the token itself)."""
    role: Role
    sha256: str
    """Hex digest of the token."""

    def __repr__(self) -> str:  # never print a digest by accident either
        return f"ApiToken(name={self.name!r}, role={self.role.value})"


class TokenRegistry:
    def __init__(self, tokens: list[ApiToken]) -> None:
        self._tokens = tuple(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def holder(self, presented: str) -> ApiToken | None:
        """The token's holder, or None. Compares with every known digest in constant time,
        so neither the answer's timing nor an early exit says how close a guess was."""
        wanted = digest(presented)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(wanted, token.sha256):
                found = token
        return found


@dataclass(frozen=True)
class AuditEntry:
    """One mutating API call: who, what, when, from where, and how it ended."""

    id: str
    at: datetime
    actor: str
    """The token holder's name; ``anonymous`` without tokens; ``unauthenticated`` when the
    caller presented no valid token."""
    role: Role | None
    method: str
    path: str
    remote: str | None
    status: int
