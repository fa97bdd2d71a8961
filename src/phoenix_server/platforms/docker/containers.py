"""One container as Phoenix keeps it, the labels that say what it is, and what a service's
declaration makes of a container (image, limits, stop timeout)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import psutil

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import (
    ContainerHealthcheck,
    ContainerRun,
    Instance,
    ServiceSpec,
)
from phoenix_server.platforms.base import Usage

log = logging.getLogger("phoenix.platform.docker")

OWNER_LABEL = "phoenix.owner"
CLUSTER_OWNER = "phoenix-cluster"
"""The owner label of containers of services any replica may own (several replicas on one
database): every replica of the cluster knows them as its cluster's. One cluster per engine:
two clusters looking after services of the same names on one engine would adopt each other's."""
SERVICE_LABEL = "phoenix.service"
CONFIG_LABEL = "phoenix.config"
INSTANCE_LABEL = "phoenix.instance"
PORT_LABEL = "phoenix.port"
VERSION_LABEL = "phoenix.version"
IMAGE_LABEL = "phoenix.image"
"""The image reference the container was started from (its Image is the resolved ID)."""
ROLE_LABEL = "phoenix.role"
"""``service`` or ``standby`` as created; a standby the router serves was promoted."""


@dataclass
class ContainerRecord:
    instance: Instance
    grace: int = 10
    """Seconds ``docker stop`` waits before SIGKILL (the service's ``stop.grace``)."""
    adopted: bool = False
    """Someone else created it: stopped and started in place, never removed."""
    memory_limit: int | None = None
    """Bytes it may use (None: no limit)."""
    routed: bool = False
    """Behind the service's router, on a port Phoenix assigned (released when forgotten)."""
    settle: float = 10.0
    """Seconds up after which a failure counts as fresh (the service's ``reset_after``)."""
    restarts: list[float] = field(default_factory=list)
    """Monotonic times Docker's restart policy started it again, within ``settle``."""
    stopping: bool = False
    starting: bool = False
    """Phoenix is starting it again (an adopted container): not a restart by Docker."""
    oom: bool = False
    usage: Usage | None = None
    """The latest stats sample (None until the first)."""
    exited: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def limits_of(service: ServiceSpec) -> dict[str, Any]:
    """The declared resources as the engine's HostConfig: a memory limit (the kernel's OOM
    killer ends the container past it), the CPUs it may run on, its open-file limit."""
    resources = service.resources
    limits: dict[str, Any] = {}
    if resources.memory_max is not None:
        limits["Memory"] = resources.memory_max
        limits["MemorySwap"] = resources.memory_max  # no swap beyond it: a leak ends at it
    if resources.cpus is not None:
        limits["CpusetCpus"] = ",".join(str(cpu) for cpu in resources.cpus)
    if resources.open_files is not None:
        files = resources.open_files
        limits["Ulimits"] = [{"Name": "nofile", "Soft": files, "Hard": files}]
    return limits


def stopped_processes(pid: int | None) -> list[psutil.Process]:
    """The container's processes (its first and every descendant) stopped by a signal
    (SIGSTOP, SIGTSTP), as far as this host can see them (an engine elsewhere: none)."""
    if pid is None:
        return []
    try:
        first = psutil.Process(pid)
        every = [first, *first.children(recursive=True)]
    except (psutil.Error, OSError):
        return []
    stopped = []
    for process in every:
        try:
            if process.status() == psutil.STATUS_STOPPED:
                stopped.append(process)
        except (psutil.Error, OSError):
            continue  # gone meanwhile
    return stopped


def resume(stopped: list[psutil.Process]) -> None:
    for process in stopped:
        try:
            process.resume()  # SIGCONT
        except (psutil.Error, OSError) as exc:
            log.warning("cannot continue process %d: %s", process.pid, exc)


def megabytes(limit: int | None) -> str:
    return "none" if limit is None else f"{limit / 1024 / 1024:g} MiB"


def healthcheck_of(check: ContainerHealthcheck) -> dict[str, Any]:
    """A declared healthcheck as the engine's Healthcheck (durations in nanoseconds)."""
    nanos = 1_000_000_000
    return {
        "Test": ["CMD", *check.command],
        "Interval": round(check.interval * nanos),
        "Timeout": round(check.timeout * nanos),
        "Retries": check.retries,
        "StartPeriod": round(check.start_period * nanos),
    }


def stop_timeout(service: ServiceSpec) -> int:
    """``docker stop``'s timeout: whole seconds, at least one."""
    return max(1, round(service.stop.grace))


def image_of(service: ServiceSpec) -> str:
    """The image a new container of ``service`` runs: the pinned image ID if its current
    version proved good with one, else the version's image, else the service's."""
    version = service.version(service.current_version or "")
    if version is not None:
        pinned = service.pins.get(version.name)
        if pinned is not None:
            return pinned
        if version.image is not None:
            return version.image
    return run_of(service).image


def run_of(service: ServiceSpec) -> ContainerRun:
    if not isinstance(service.run, ContainerRun):
        raise PlatformError(f"service '{service.name}' declares no image to run")
    return service.run
