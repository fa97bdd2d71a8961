"""API tokens from ``PHOENIX_API_TOKENS`` and ``PHOENIX_TOKENS_FILE``.

``PHOENIX_API_TOKENS`` is a comma-separated list of ``name:role:token`` (for example
``ci:operator:8f3e…,alice:admin:…``). The tokens file is YAML::

    tokens:
      - {name: ci, role: operator, sha256: "<hex digest of the token>"}
      - {name: alice, role: admin, token: "<the token itself>"}

A digest (``printf %s TOKEN | sha256sum``) keeps the token itself out of the file. Tokens
are at least 16 characters. Problems name the entry, never the token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from phoenix_server.domain.auth import MIN_TOKEN_LENGTH, ApiToken, Role, digest
from phoenix_server.domain.errors import ConfigError, Problem

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_ROLES = ", ".join(r.value for r in Role)


def _role(value: object, where: str, problems: list[Problem]) -> Role | None:
    try:
        return Role(str(value))
    except ValueError:
        problems.append(Problem(where, f"unknown role {value!r}; expected one of {_ROLES}"))
        return None


def _name(value: object, where: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str) or not _NAME.match(value):
        problems.append(
            Problem(where, "a name of 1-64 letters, digits, '_', '.', '@' or '-' is required")
        )
        return None
    return value


def parse_env_tokens(text: str) -> list[ApiToken]:
    problems: list[Problem] = []
    tokens = []
    for index, entry in enumerate(part.strip() for part in text.split(",")):
        where = f"PHOENIX_API_TOKENS[{index}]"
        parts = entry.split(":", 2)
        if len(parts) != 3:
            problems.append(Problem(where, "expected name:role:token"))
            continue
        name = _name(parts[0], where, problems)
        role = _role(parts[1], where, problems)
        if len(parts[2]) < MIN_TOKEN_LENGTH:
            problems.append(Problem(where, f"the token is shorter than {MIN_TOKEN_LENGTH}"))
            continue
        if name is not None and role is not None:
            tokens.append(ApiToken(name, role, digest(parts[2])))
    _raise_if(problems)
    return tokens


def load_tokens_file(path: Path) -> list[ApiToken]:
    try:
        document: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"tokens file {path} is not valid YAML{where}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise ConfigError(f"tokens file {path}: expected a mapping with a 'tokens' list")
    problems: list[Problem] = []
    tokens = []
    for index, entry in enumerate(document["tokens"]):
        where = f"tokens[{index}]"
        if not isinstance(entry, dict):
            problems.append(Problem(where, "expected a mapping with name, role and token"))
            continue
        unknown = set(entry) - {"name", "role", "token", "sha256"}
        if unknown:
            problems.append(Problem(where, f"unknown key(s): {', '.join(sorted(unknown))}"))
        name = _name(entry.get("name"), f"{where}.name", problems)
        role = _role(entry.get("role"), f"{where}.role", problems)
        secret, hashed = entry.get("token"), entry.get("sha256")
        sha = None
        if (secret is None) == (hashed is None):
            problems.append(Problem(where, "give exactly one of token or sha256"))
        elif secret is not None:
            if not isinstance(secret, str) or len(secret) < MIN_TOKEN_LENGTH:
                problems.append(
                    Problem(f"{where}.token", f"a string of at least {MIN_TOKEN_LENGTH}")
                )
            else:
                sha = digest(secret)
        elif not isinstance(hashed, str) or not _HEX.match(hashed.lower()):
            problems.append(Problem(f"{where}.sha256", "64 hex digits (a SHA-256 digest)"))
        else:
            sha = hashed.lower()
        if name is not None and role is not None and sha is not None:
            tokens.append(ApiToken(name, role, sha))
    _raise_if(problems, f"tokens file {path}")
    return tokens


def _raise_if(problems: list[Problem], what: str = "invalid environment") -> None:
    if problems:
        raise ConfigError(what if what == "invalid environment" else f"{what} is invalid", problems)


def check_unique(tokens: list[ApiToken]) -> None:
    names = [t.name for t in tokens]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            "API tokens are invalid",
            [Problem("name", f"token name(s) used more than once: {', '.join(twice)}")],
        )
    digests = [t.sha256 for t in tokens]
    if len(set(digests)) != len(digests):
        raise ConfigError(
            "API tokens are invalid",
            [Problem("token", "the same token is given twice (under different names)")],
        )


def configured_tokens(env_tokens: str | None, tokens_file: Path | None) -> list[ApiToken]:
    """Every configured token (environment and file together), checked."""
    tokens = parse_env_tokens(env_tokens) if env_tokens else []
    if tokens_file is not None:
        tokens += load_tokens_file(tokens_file)
    if (env_tokens or tokens_file is not None) and not tokens:
        raise ConfigError(
            "API tokens are invalid", [Problem("PHOENIX_TOKENS_FILE", "no token is configured")]
        )
    check_unique(tokens)
    return tokens
