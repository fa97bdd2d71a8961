"""Deployments: mapping and queries (one installation's own, by ``owner``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from phoenix_server.domain.deployments import Deployment, DeploymentReason, DeploymentStatus
from phoenix_server.domain.recoveries import Step, StepCondition, StepStatus
from phoenix_server.store.tables import DeploymentRow
from phoenix_server.store.upserting import upsert
from phoenix_server.support.timefmt import as_utc, iso_ms


def _step_to_json(step: Step) -> dict[str, Any]:
    return {
        "position": step.position,
        "name": step.name,
        "action": step.action,
        "status": step.status.value,
        "timeout": step.timeout,
        "condition": step.condition.value,
        "started_at": iso_ms(step.started_at),
        "ended_at": iso_ms(step.ended_at),
        "detail": step.detail,
    }


def _step_from_json(data: dict[str, Any]) -> Step:
    def when(value: str | None) -> datetime | None:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00"))) if value else None

    return Step(
        position=int(data["position"]),
        name=str(data["name"]),
        action=str(data["action"]),
        status=StepStatus(data["status"]),
        timeout=float(data["timeout"]),
        condition=StepCondition(data.get("condition", "always")),
        started_at=when(data.get("started_at")),
        ended_at=when(data.get("ended_at")),
        detail=data.get("detail"),
    )


def _values(deployment: Deployment, owner: str) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "service": deployment.service,
        "version": deployment.version,
        "previous_version": deployment.previous_version,
        "reason": deployment.reason.value,
        "status": deployment.status.value,
        "started_at": deployment.started_at,
        "ended_at": deployment.ended_at,
        "known_good_at": deployment.known_good_at,
        "recovery_id": deployment.recovery_id,
        "detail": deployment.detail,
        "steps": [_step_to_json(step) for step in deployment.steps],
        "owner": owner,
        "artifact": deployment.artifact,
    }


def _from_row(row: DeploymentRow) -> Deployment:
    return Deployment(
        id=row.id,
        service=row.service,
        version=row.version,
        previous_version=row.previous_version,
        reason=DeploymentReason(row.reason),
        status=DeploymentStatus(row.status),
        started_at=row.started_at,
        ended_at=row.ended_at,
        known_good_at=row.known_good_at,
        recovery_id=row.recovery_id,
        detail=row.detail,
        steps=tuple(_step_from_json(step) for step in row.steps or ()),
        artifact=row.artifact,
    )


def save_deployment(
    session: Session, deployment: Deployment, owner: str = "", *, epoch: int | None = None
) -> None:
    upsert(session, DeploymentRow, [{**_values(deployment, owner), "epoch": epoch}], ["id"])


def list_deployments(
    session: Session, *, service: str, owner: str = "", limit: int, offset: int
) -> tuple[list[Deployment], int]:
    """Newest first, and how many there are in all."""
    where = (DeploymentRow.owner == owner, DeploymentRow.service == service)
    total = session.scalar(select(func.count()).select_from(DeploymentRow).where(*where)) or 0
    rows = session.scalars(
        select(DeploymentRow)
        .where(*where)
        .order_by(DeploymentRow.started_at.desc(), DeploymentRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [_from_row(row) for row in rows], total


def _of(owner: str | None) -> list[ColumnElement[bool]]:
    """Rows of one installation's own, or (None: several replicas share every service's
    history) of all."""
    return [] if owner is None else [DeploymentRow.owner == owner]


def latest_deployments(session: Session, *, owner: str | None = "") -> dict[str, Deployment]:
    """Each service's newest deployment: the version it runs (or was moving to)."""
    newest = (
        select(DeploymentRow.service, func.max(DeploymentRow.started_at).label("at"))
        .where(*_of(owner))
        .group_by(DeploymentRow.service)
        .subquery()
    )
    rows = session.scalars(
        select(DeploymentRow)
        .join(
            newest,
            (DeploymentRow.service == newest.c.service) & (DeploymentRow.started_at == newest.c.at),
        )
        .where(*_of(owner))
    ).all()
    return {row.service: _from_row(row) for row in rows}


def proven_versions(session: Session, *, owner: str | None = "") -> dict[str, set[str]]:
    """Per service, the versions some deployment of which ran healthy long enough."""
    rows = session.execute(
        select(DeploymentRow.service, DeploymentRow.version)
        .where(*_of(owner), DeploymentRow.known_good_at.is_not(None))
        .distinct()
    ).all()
    found: dict[str, set[str]] = {}
    for service, version in rows:
        found.setdefault(service, set()).add(version)
    return found


def proven_artifacts(session: Session, *, owner: str | None = "") -> dict[str, dict[str, str]]:
    """Per service and known-good version, the artifact its newest known-good deployment
    ran (a container's image ID): what a later start of that version runs."""
    rows = session.execute(
        select(DeploymentRow.service, DeploymentRow.version, DeploymentRow.artifact)
        .where(
            *_of(owner),
            DeploymentRow.known_good_at.is_not(None),
            DeploymentRow.artifact.is_not(None),
        )
        .order_by(DeploymentRow.known_good_at)
    ).all()
    found: dict[str, dict[str, str]] = {}
    for service, version, artifact in rows:
        found.setdefault(service, {})[version] = str(artifact)  # the newest wins
    return found


def interrupt_unfinished(session: Session, *, at: datetime, owner: str = "") -> int:
    """Deployments this installation left running when it stopped become ``interrupted``."""
    rows = session.scalars(
        select(DeploymentRow).where(
            DeploymentRow.owner == owner,
            DeploymentRow.status == DeploymentStatus.IN_PROGRESS.value,
        )
    ).all()
    for row in rows:
        row.status = DeploymentStatus.INTERRUPTED.value
        row.ended_at = at
        row.detail = (row.detail + "; " if row.detail else "") + "Phoenix stopped while it ran"
    return len(rows)


def interrupt_services(
    session: Session, *, services: Mapping[str, int], at: datetime, taking: bool = False
) -> int:
    """A replica takes ``services`` over (each under its lease epoch): a deployment of them
    still in progress in the store (a previous owner died or lost it) becomes
    ``interrupted``. ``taking``: as for recoveries (recoveries.interrupt_services), one open
    under the very epoch taken is the replica's own, stopped when it let go: closed too."""
    beyond = 1 if taking else 0  # epochs below the one held (+1: that one too) are closed
    # Those in progress anywhere are few; the services taken may be thousands (not sent).
    unfinished = session.execute(
        select(DeploymentRow.id, DeploymentRow.service, DeploymentRow.epoch).where(
            DeploymentRow.status == DeploymentStatus.IN_PROGRESS.value
        )
    ).all()
    left = [
        id_
        for id_, service, epoch in unfinished
        if service in services and (epoch is None or epoch < services[service] + beyond)
    ]
    if not left:
        return 0
    found = session.scalars(
        select(DeploymentRow)
        .where(
            DeploymentRow.id.in_(left),
            DeploymentRow.status == DeploymentStatus.IN_PROGRESS.value,
        )
        .with_for_update(skip_locked=True)
    ).all()
    rows = [row for row in found if row.epoch is None or row.epoch < services[row.service] + beyond]
    for row in rows:
        row.status = DeploymentStatus.INTERRUPTED.value
        row.ended_at = at
        row.epoch = services[row.service]
        row.detail = (row.detail + "; " if row.detail else "") + (
            "its Phoenix replica lost the service while it ran"
        )
    return len(rows)
