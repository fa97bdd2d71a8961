"""Playbooks: mapping and CRUD. Names are unique; every update bumps the version."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from phoenix_server.domain.errors import ConflictError, NotFoundError
from phoenix_server.domain.playbooks import (
    Playbook,
    PlaybookSource,
    PlaybookStatus,
    PlaybookStep,
    PlaybookTrigger,
    TriggerType,
)
from phoenix_server.domain.recoveries import StepCondition
from phoenix_server.store.lookup import check_lookup_id
from phoenix_server.store.tables import PlaybookRow


def _trigger_json(trigger: PlaybookTrigger) -> dict[str, Any]:
    return {
        "type": trigger.type.value,
        "threshold": trigger.threshold,
        "duration": trigger.duration,
        "params": dict(trigger.params),
    }


def _step_json(step: PlaybookStep) -> dict[str, Any]:
    return {
        "action": step.action,
        "timeout": step.timeout,
        "condition": step.condition.value,
        "params": dict(step.params),
        "name": step.name,
    }


def _from_row(row: PlaybookRow) -> Playbook:
    return Playbook(
        id=row.id,
        name=row.name,
        service=row.service,
        description=row.description,
        status=PlaybookStatus(row.status),
        priority=row.priority,
        version=row.version,
        source=PlaybookSource(row.source),
        created_at=row.created_at,
        updated_at=row.updated_at,
        triggers=tuple(
            PlaybookTrigger(
                type=TriggerType(t["type"]),
                threshold=t.get("threshold"),
                duration=t.get("duration"),
                params=t.get("params") or {},
            )
            for t in row.triggers
        ),
        steps=tuple(
            PlaybookStep(
                action=s["action"],
                timeout=s.get("timeout"),
                condition=StepCondition(s.get("condition", "always")),
                params=s.get("params") or {},
                name=s.get("name"),
            )
            for s in row.steps
        ),
    )


def _fill_row(row: PlaybookRow, playbook: Playbook) -> None:
    row.name = playbook.name
    row.service = playbook.service
    row.description = playbook.description
    row.status = playbook.status.value
    row.priority = playbook.priority
    row.version = playbook.version
    row.source = playbook.source.value
    row.triggers = [_trigger_json(t) for t in playbook.triggers]
    row.steps = [_step_json(s) for s in playbook.steps]
    row.created_at = playbook.created_at
    row.updated_at = playbook.updated_at


def _refuse_duplicate_name(session: Session, name: str, except_id: str | None) -> None:
    query = select(PlaybookRow.id).where(PlaybookRow.name == name)
    existing = session.scalar(query)
    if existing is not None and existing != except_id:
        raise ConflictError(f"a playbook named '{name}' already exists ({existing})")


def create_playbook(session: Session, playbook: Playbook) -> Playbook:
    _refuse_duplicate_name(session, playbook.name, None)
    row = PlaybookRow(id=playbook.id)
    _fill_row(row, playbook)
    session.add(row)
    return playbook


def get_playbook(session: Session, playbook_id: str) -> Playbook:
    check_lookup_id("playbook", playbook_id)
    row = session.get(PlaybookRow, playbook_id)
    if row is None:
        raise NotFoundError(f"no playbook with id '{playbook_id}'")
    return _from_row(row)


def update_playbook(session: Session, playbook: Playbook) -> Playbook:
    """Replace the stored playbook with its next version. The stored version must be the
    one just before (checked under a row lock): a concurrent edit is a conflict, not a loss."""
    row = session.get(PlaybookRow, playbook.id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"no playbook with id '{playbook.id}'")
    if row.version != playbook.version - 1:
        raise ConflictError(
            f"playbook '{playbook.id}' changed meanwhile (now version {row.version}); "
            "fetch it and apply your change again"
        )
    _refuse_duplicate_name(session, playbook.name, playbook.id)
    _fill_row(row, playbook)
    return playbook


def delete_playbook(session: Session, playbook_id: str) -> None:
    check_lookup_id("playbook", playbook_id)
    row = session.get(PlaybookRow, playbook_id)
    if row is None:
        raise NotFoundError(f"no playbook with id '{playbook_id}'")
    session.delete(row)


def list_playbooks(
    session: Session,
    *,
    service: str | None,
    status: PlaybookStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Playbook], int]:
    conditions = []
    if service is not None:
        conditions.append(PlaybookRow.service == service)
    if status is not None:
        conditions.append(PlaybookRow.status == status.value)
    total = session.scalar(select(func.count()).select_from(PlaybookRow).where(*conditions)) or 0
    rows = session.scalars(
        select(PlaybookRow)
        .where(*conditions)
        .order_by(PlaybookRow.created_at.desc(), PlaybookRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [_from_row(row) for row in rows], total


ACTIVE_KEPT = 1000
"""Active playbooks the engine holds at most (the oldest first beyond that are ignored)."""


def active_playbooks(session: Session) -> list[Playbook]:
    """Every active playbook (up to :data:`ACTIVE_KEPT`), oldest first."""
    rows = session.scalars(
        select(PlaybookRow)
        .where(PlaybookRow.status == PlaybookStatus.ACTIVE.value)
        .order_by(PlaybookRow.created_at, PlaybookRow.id)
        .limit(ACTIVE_KEPT)
    ).all()
    return [_from_row(row) for row in rows]


def count_active(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(PlaybookRow)
            .where(PlaybookRow.status == PlaybookStatus.ACTIVE.value)
        )
        or 0
    )


def sync_file_playbooks(session: Session, playbooks: list[Playbook]) -> list[str]:
    """Make the stored file playbooks exactly ``playbooks``: new ones added, changed ones
    stored as their next version (same id, so their history stays), the others removed.
    Returns why some could not be taken (their name belongs to an API playbook)."""
    refused: list[str] = []
    wanted = {p.id for p in playbooks}
    for playbook in playbooks:
        clash = session.scalar(
            select(PlaybookRow).where(
                PlaybookRow.name == playbook.name, PlaybookRow.id != playbook.id
            )
        )
        if clash is not None:
            refused.append(
                f"'{playbook.name}': the name belongs to playbook {clash.id} "
                f"({clash.source}); rename one of them"
            )
            wanted.discard(playbook.id)
            continue
        row = session.get(PlaybookRow, playbook.id)
        if row is None:
            row = PlaybookRow(id=playbook.id)
            _fill_row(row, playbook)
            session.add(row)
            continue
        stored = _from_row(row)
        same = replace(
            playbook,
            version=stored.version,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )
        if same != stored:
            _fill_row(
                row,
                replace(playbook, version=stored.version + 1, created_at=stored.created_at),
            )
    for row in session.scalars(
        select(PlaybookRow).where(PlaybookRow.source == PlaybookSource.FILE.value)
    ).all():
        if row.id not in wanted:
            session.delete(row)
    return refused
