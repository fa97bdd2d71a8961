"""The Docker engine as Phoenix reaches it: where it is, its errors in words an operator
can act on, and what its stats say a container uses."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import aiodocker
import aiohttp

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import DockerEngine
from phoenix_server.platforms.base import Usage

log = logging.getLogger("phoenix.platform.docker")

UNREACHABLE = 900
"""aiodocker's status for an engine it could not connect to."""


def tls_context(engine: DockerEngine) -> ssl.SSLContext | None:
    """The TLS context for a named engine over TCP: its certificate must be signed by the
    declared CA (and name its host), and Phoenix presents its client certificate."""
    if engine.ca is None or engine.cert is None or engine.key is None:
        return None
    try:
        context = ssl.create_default_context(cafile=engine.ca)
        context.load_cert_chain(engine.cert, engine.key)
    except (OSError, ssl.SSLError) as exc:
        raise PlatformError(
            f"cannot use the TLS certificates of Docker engine '{engine.name}': {exc}"
        ) from exc
    return context


def engine_address() -> str:
    """The engine Phoenix talks to: ``DOCKER_HOST``, else the local socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def usage_of(stats: dict[str, Any]) -> Usage | None:
    """Memory (less the page cache) and CPU (percent of one core) from one stats answer."""
    memory = stats.get("memory_stats") or {}
    used = memory.get("usage")
    if used is None:
        return None
    details = memory.get("stats") or {}
    # As `docker stats` counts it: cgroup v1 names the page cache total_inactive_file, v2
    # inactive_file.
    cache = details.get("total_inactive_file", details.get("inactive_file", 0))
    cpu, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    spent = cpu.get("cpu_usage", {}).get("total_usage", 0) - before.get("cpu_usage", {}).get(
        "total_usage", 0
    )
    elapsed = cpu.get("system_cpu_usage", 0) - before.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    percent = spent / elapsed * cores * 100.0 if elapsed > 0 and spent > 0 else 0.0
    return Usage(memory=float(max(0, used - cache)), cpu=percent)


class EngineErrors:
    """Engine and connection errors as PlatformErrors saying what Phoenix was doing."""

    def __init__(self, doing: str, address: str) -> None:
        self._doing = doing
        self._address = address

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        if isinstance(exc, aiodocker.exceptions.DockerError) and exc.status == UNREACHABLE:
            raise PlatformError(
                f"{self._doing}: cannot reach the Docker engine at {self._address} ({exc.message})"
            ) from exc
        if isinstance(exc, aiodocker.exceptions.DockerError):
            raise PlatformError(f"{self._doing}: the Docker engine said: {exc.message}") from exc
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise PlatformError(
                f"{self._doing}: cannot reach the Docker engine at {self._address}: {exc}"
            ) from exc


async def remove_quietly(container: aiodocker.containers.DockerContainer) -> None:
    try:
        await container.delete(force=True)
    except aiodocker.exceptions.DockerError:
        log.warning("could not remove container %s after a failed start", container.id)
