"""Deployments: which version of a service ran when, and which versions are known good.

A service that declares ``versions`` runs one of them at a time. Every change of version
(an operator's deploy, a rollback, or the first start) is a :class:`Deployment`. A version
is *known good* when the configuration says so (``known_good: true``) or when a deployment
of it ran healthy for the service's ``known_good_after``; rollback goes to the newest
known-good version declared before the current one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from phoenix_server.domain.recoveries import Step
from phoenix_server.domain.services import ServiceSpec


class DeploymentReason(StrEnum):
    INITIAL = "initial"
    """The version Phoenix found running (or first started) for the service."""
    DEPLOY = "deploy"
    """An operator's ``POST /api/services/{name}/deploy``."""
    ROLLBACK = "rollback"
    """A rollback recovery."""


class DeploymentStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    """Every instance runs the version and it verified healthy (and smoke-tested)."""
    FAILED = "failed"
    """The version did not come up healthy; what happened next is in ``detail``."""
    INTERRUPTED = "interrupted"
    """Phoenix stopped while it ran."""


@dataclass(frozen=True)
class Deployment:
    id: str
    service: str
    version: str
    previous_version: str | None
    reason: DeploymentReason
    status: DeploymentStatus
    started_at: datetime
    ended_at: datetime | None = None
    known_good_at: datetime | None = None
    """When this run of the version had been healthy for ``known_good_after``."""
    recovery_id: str | None = None
    """The rollback recovery that made it, if one did."""
    detail: str = ""
    steps: tuple[Step, ...] = ()
    artifact: str | None = None
    """What the version ran as, in its platform's immutable terms (the image ID of a docker
    version's containers; None where a version is its declaration, as for local processes)."""


def known_good_versions(service: ServiceSpec, proven: Iterable[str]) -> list[str]:
    """Declared versions that are known good, oldest first: declared so, or ``proven``."""
    proven_names = set(proven)
    return [v.name for v in service.versions if v.known_good or v.name in proven_names]


def rollback_target(service: ServiceSpec, current: str | None, proven: Iterable[str]) -> str | None:
    """The newest known-good version declared before ``current``; None if there is none."""
    names = [v.name for v in service.versions]
    if current not in names:
        return None
    older = set(names[: names.index(current)])
    good = [name for name in known_good_versions(service, proven) if name in older]
    return good[-1] if good else None


def no_rollback_reason(service: ServiceSpec, current: str | None, proven: Iterable[str]) -> str:
    """Why :func:`rollback_target` found nothing, in words an operator can act on."""
    if not service.versions:
        return (
            f"service '{service.name}' declares no versions to roll back to "
            "(add a versions: list to its service file)"
        )
    good = known_good_versions(service, proven)
    names = [v.name for v in service.versions]
    if names and current == names[0]:
        return f"'{service.name}' runs {current}, its oldest declared version: nothing older"
    known = ", ".join(good) if good else "none"
    return (
        f"no known-good version of '{service.name}' older than {current} (known good: {known}); "
        f"mark one known_good: true or let one run healthy for "
        f"{service.known_good_after:g}s"
    )
