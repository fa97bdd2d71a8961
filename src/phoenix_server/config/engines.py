"""The ``docker_engines`` section of the service file: Docker engines other than the default
one (``DOCKER_HOST``), by name, so that one Phoenix looks after containers on several hosts.

An engine is a ``unix://`` socket or a ``tcp://`` address; over TCP it must be TLS with a
client certificate (``tls: {ca, cert, key}``, files relative to the service file), because
the engine's API is root on its host and plain TCP would hand it to anyone on the network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import Problem

ENGINE_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
_HOST = re.compile(r"^(unix:///.+|tcp://[^/\s:]+:\d{1,5})$")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsDoc(_Doc):
    ca: str = Field(min_length=1)
    """The CA certificate the engine's certificate must be signed by (PEM)."""
    cert: str = Field(min_length=1)
    """Phoenix's client certificate (PEM)."""
    key: str = Field(min_length=1)
    """Its private key (PEM)."""


class EngineDoc(_Doc):
    host: str
    """``unix:///var/run/docker.sock`` or ``tcp://10.0.0.5:2376``."""
    tls: TlsDoc | None = None


def parse_engines(raw: object, base_dir: Path) -> tuple[dict[str, svc.DockerEngine], list[Problem]]:
    """The declared engines by name, and what is wrong with the declaration."""
    if raw is None:
        return {}, []
    if not isinstance(raw, Mapping):
        return {}, [Problem("docker_engines", "expected a mapping of engine names to engines")]
    engines: dict[str, svc.DockerEngine] = {}
    problems: list[Problem] = []
    for name, item in raw.items():
        where = f"docker_engines.{name}"
        if not isinstance(name, str) or not re.match(ENGINE_NAME, name):
            problems.append(
                Problem(where, "an engine's name: lowercase letters, digits, '.', '_' and '-'")
            )
            continue
        try:
            doc = EngineDoc.model_validate(item)
        except ValidationError as exc:
            for error in exc.errors():
                path = ".".join([where, *(str(part) for part in error["loc"])])
                message = str(error["msg"])
                if error["type"] == "extra_forbidden":
                    message = "unknown key (host, tls: {ca, cert, key})"
                problems.append(Problem(path, message))
            continue
        found = _check(doc, where, base_dir)
        if found:
            problems.extend(found)
            continue
        tls = doc.tls
        engines[name] = svc.DockerEngine(
            name=name,
            host=doc.host,
            ca=str(base_dir / tls.ca) if tls else None,
            cert=str(base_dir / tls.cert) if tls else None,
            key=str(base_dir / tls.key) if tls else None,
        )
    return engines, problems


def _check(doc: EngineDoc, where: str, base_dir: Path) -> list[Problem]:
    problems = []
    if not _HOST.match(doc.host):
        problems.append(
            Problem(
                f"{where}.host",
                f"expected unix:///path/to/docker.sock or tcp://host:port, got {doc.host!r}",
            )
        )
    elif doc.host.startswith("tcp://") and doc.tls is None:
        problems.append(
            Problem(
                f"{where}.tls",
                "an engine over TCP needs TLS with a client certificate (tls: {ca, cert, key}): "
                "its API is root on its host",
            )
        )
    elif doc.host.startswith("unix://") and doc.tls is not None:
        problems.append(Problem(f"{where}.tls", "TLS is for engines over tcp://"))
    if doc.tls is not None:
        for field in ("ca", "cert", "key"):
            path = base_dir / getattr(doc.tls, field)
            if not path.is_file():
                problems.append(Problem(f"{where}.tls.{field}", f"no such file: {path}"))
    return problems
