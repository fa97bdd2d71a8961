"""Recoveries and their steps: the mapping between rows and domain objects, and the queries."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from phoenix_server.domain.errors import NotFoundError
from phoenix_server.domain.recoveries import (
    ACTIVE_RECOVERY_STATUSES,
    Candidate,
    DataIntegrity,
    Decision,
    DecisionSource,
    Outcome,
    Recovery,
    RecoveryMetrics,
    RecoveryStatus,
    RecoveryTrigger,
    Step,
    StepCondition,
    StepStatus,
    Strategy,
)
from phoenix_server.store.lookup import check_lookup_id
from phoenix_server.store.tables import LeaseRow, RecoveryRow, StepRow
from phoenix_server.store.upserting import upsert


@dataclass(frozen=True)
class RecoveryFilter:
    service: str | None = None
    status: RecoveryStatus | None = None
    strategy: Strategy | None = None
    incident_id: str | None = None


def _decision_to_json(decision: Decision) -> dict[str, Any]:
    return {
        "strategy": decision.strategy.value,
        "source": decision.source.value,
        "reason": decision.reason,
        "candidates": [_candidate_to_json(c) for c in decision.candidates],
    }


def _candidate_to_json(candidate: Candidate) -> dict[str, Any]:
    found: dict[str, Any] = {"strategy": candidate.strategy.value, "score": candidate.score}
    if candidate.estimate is not None:
        found["estimate"] = candidate.estimate
    if candidate.observations is not None:
        found["observations"] = candidate.observations
    return found


def _decision_from_json(data: dict[str, Any]) -> Decision:
    return Decision(
        strategy=Strategy(data["strategy"]),
        source=DecisionSource(data["source"]),
        reason=data.get("reason", ""),
        candidates=tuple(
            Candidate(
                Strategy(c["strategy"]),
                float(c["score"]),
                estimate=c.get("estimate"),
                observations=c.get("observations"),
            )
            for c in data.get("candidates", [])
        ),
    )


def _recovery_values(recovery: Recovery) -> dict[str, Any]:
    return {
        "id": recovery.id,
        "service": recovery.service,
        "incident_id": recovery.incident_id,
        "strategy": recovery.strategy.value,
        "status": recovery.status.value,
        "outcome": recovery.outcome.value if recovery.outcome else None,
        "trigger": recovery.trigger.value,
        "reason": recovery.reason,
        "attempt": recovery.attempt,
        "force": recovery.force,
        "decision": _decision_to_json(recovery.decision),
        "created_at": recovery.created_at,
        "started_at": recovery.started_at,
        "ended_at": recovery.ended_at,
        "estimated_duration": recovery.estimated_duration,
        "downtime": recovery.metrics.downtime,
        "requests_lost": recovery.metrics.requests_lost,
        "data_integrity": recovery.metrics.data_integrity.value,
        "playbook_id": recovery.playbook_id,
        "playbook_version": recovery.playbook_version,
    }


def _step_values(recovery_id: str, step: Step) -> dict[str, Any]:
    return {
        "recovery_id": recovery_id,
        "position": step.position,
        "name": step.name,
        "action": step.action,
        "status": step.status.value,
        "timeout": step.timeout,
        "condition": step.condition.value,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "detail": step.detail,
    }


def _step_from_row(row: StepRow) -> Step:
    return Step(
        position=row.position,
        name=row.name,
        action=row.action,
        status=StepStatus(row.status),
        timeout=row.timeout,
        condition=StepCondition(row.condition),
        started_at=row.started_at,
        ended_at=row.ended_at,
        detail=row.detail,
    )


def recovery_from_row(row: RecoveryRow, steps: list[StepRow] | None) -> Recovery:
    return Recovery(
        id=row.id,
        service=row.service,
        strategy=Strategy(row.strategy),
        status=RecoveryStatus(row.status),
        trigger=RecoveryTrigger(row.trigger),
        decision=_decision_from_json(row.decision),
        created_at=row.created_at,
        reason=row.reason,
        incident_id=row.incident_id,
        attempt=row.attempt,
        steps=tuple(_step_from_row(s) for s in steps or []),
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=Outcome(row.outcome) if row.outcome else None,
        metrics=RecoveryMetrics(
            downtime=row.downtime,
            requests_lost=row.requests_lost,
            data_integrity=DataIntegrity(row.data_integrity),
        ),
        estimated_duration=row.estimated_duration,
        force=row.force,
        playbook_id=row.playbook_id,
        playbook_version=row.playbook_version,
    )


def save_recovery(
    session: Session, recovery: Recovery, owner: str = "", *, epoch: int | None = None
) -> None:
    """Insert or update the recovery and every one of its steps (two statements).
    ``epoch``: the service's lease epoch it acts under (several replicas; see ``cluster``)."""
    values = {**_recovery_values(recovery), "owner": owner, "epoch": epoch}
    upsert(session, RecoveryRow, [values], ["id"])
    save_steps(session, recovery.id, recovery.steps, epoch=epoch)


def save_steps(
    session: Session, recovery_id: str, steps: Sequence[Step], *, epoch: int | None = None
) -> None:
    """Insert or update some steps of a recovery."""
    upsert(
        session,
        StepRow,
        [{**_step_values(recovery_id, step), "epoch": epoch} for step in steps],
        ["recovery_id", "position"],
    )


def get_recovery(session: Session, recovery_id: str) -> Recovery:
    check_lookup_id("recovery", recovery_id)
    row = session.scalars(
        select(RecoveryRow)
        .where(RecoveryRow.id == recovery_id)
        .options(selectinload(RecoveryRow.steps))
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no recovery with id '{recovery_id}'")
    return recovery_from_row(row, row.steps)


def list_recoveries(
    session: Session, *, where: RecoveryFilter, limit: int, offset: int
) -> tuple[list[Recovery], int]:
    """Newest first, without steps; and how many match in all."""
    conditions = []
    if where.service is not None:
        conditions.append(RecoveryRow.service == where.service)
    if where.status is not None:
        conditions.append(RecoveryRow.status == where.status.value)
    if where.strategy is not None:
        conditions.append(RecoveryRow.strategy == where.strategy.value)
    if where.incident_id is not None:
        conditions.append(RecoveryRow.incident_id == where.incident_id)
    total = session.scalar(select(func.count()).select_from(RecoveryRow).where(*conditions)) or 0
    rows = session.scalars(
        select(RecoveryRow)
        .where(*conditions)
        .order_by(RecoveryRow.created_at.desc(), RecoveryRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [recovery_from_row(row, None) for row in rows], total


def interrupt_unfinished(session: Session, *, at: datetime, owner: str = "") -> list[str]:
    """Close the recoveries this installation left open when it stopped: ``interrupted``,
    never stuck. Another Phoenix's recoveries (sharing the database) are not ours to close."""
    active = [status.value for status in ACTIVE_RECOVERY_STATUSES]
    ids = list(
        session.scalars(
            select(RecoveryRow.id).where(RecoveryRow.status.in_(active), RecoveryRow.owner == owner)
        )
    )
    _interrupt(session, ids, at=at, detail="Phoenix stopped", epoch=None)
    return ids


def interrupt_services(
    session: Session, *, services: Mapping[str, int], at: datetime, taking: bool = False
) -> list[str]:
    """A replica owns ``services`` (each under its lease epoch): whatever recovery of them
    an earlier owner (an earlier epoch) left open in the store — it died or lost the service
    mid-recovery — is closed as ``interrupted`` (the owner looks at the service afresh).
    Rows a stale writer still holds locked are skipped (never waited for): a later call
    closes them.

    ``taking``: the replica is taking the services at this moment and runs nothing for them
    yet, so a recovery open under the very epoch it takes is its own, stopped when it let go
    (its renew deadline passed) before the lease came back to it unchanged: closed too."""
    beyond = 1 if taking else 0  # epochs below the one held (+1: that one too) are closed
    active = [status.value for status in ACTIVE_RECOVERY_STATUSES]
    # Those open anywhere are few; the services taken may be thousands (not sent).
    unfinished = session.execute(
        select(RecoveryRow.id, RecoveryRow.service, RecoveryRow.epoch).where(
            RecoveryRow.status.in_(active)
        )
    ).all()
    left = [
        id_
        for id_, service, epoch in unfinished
        if service in services and (epoch is None or epoch < services[service] + beyond)
    ]
    if not left:
        return []
    found = session.execute(
        select(RecoveryRow.id, RecoveryRow.service, RecoveryRow.epoch)
        .where(RecoveryRow.id.in_(left), RecoveryRow.status.in_(active))
        .with_for_update(skip_locked=True)
    ).all()
    rows = [
        (recovery_id, service, epoch == services[service])
        for recovery_id, service, epoch in found
        if epoch is None or epoch < services[service] + beyond
    ]
    # It ended when its owner's lease did: that owner could act no later than that (closing
    # it later, once a paused writer let go of it, must not make it look longer). One of the
    # epoch taken back ended when its replica let go: some time before now.
    taken = dict(
        session.execute(
            select(LeaseRow.service, LeaseRow.acquired_at).where(
                LeaseRow.service.in_([service for _, service, _ in rows])
            )
        ).all()
    )
    for recovery_id, service, own in rows:
        _interrupt(
            session,
            [recovery_id],
            at=at if own else min(at, taken.get(service, at)),
            detail="its Phoenix replica lost the service",
            epoch=services[service],
        )
    return [recovery_id for recovery_id, _, _ in rows]


def _interrupt(
    session: Session, ids: list[str], *, at: datetime, detail: str, epoch: int | None
) -> None:
    if not ids:
        return
    stamp = {} if epoch is None else {"epoch": epoch}
    session.execute(
        update(StepRow)
        .where(StepRow.recovery_id.in_(ids), StepRow.status == StepStatus.RUNNING.value)
        .values(status=StepStatus.FAILED.value, ended_at=at, detail=detail, **stamp)
    )
    session.execute(
        update(RecoveryRow)
        .where(RecoveryRow.id.in_(ids))
        .values(status=RecoveryStatus.INTERRUPTED.value, ended_at=at, **stamp)
    )


def recent_successful_durations(
    session: Session, *, per_key: int, scan: int = 10_000
) -> dict[tuple[str, Strategy], list[float]]:
    """Newest-first durations of successful recoveries per (service, strategy), ``per_key``
    each, from the latest ``scan`` recoveries (what estimates start from after a restart)."""
    rows = session.execute(
        select(
            RecoveryRow.service, RecoveryRow.strategy, RecoveryRow.started_at, RecoveryRow.ended_at
        )
        .where(RecoveryRow.outcome == Outcome.SUCCESS.value)
        .order_by(RecoveryRow.created_at.desc())
        .limit(scan)
    ).all()
    found: dict[tuple[str, Strategy], list[float]] = {}
    for service, strategy, started, ended in rows:
        durations = found.setdefault((service, Strategy(strategy)), [])
        if started and ended and len(durations) < per_key:
            durations.append((ended - started).total_seconds())
    return found


def last_successes(session: Session, *, scan: int = 10_000) -> dict[str, tuple[datetime, str]]:
    """Per service, when its latest successful recovery ended, and its id (what tells a
    late alert about an already fixed failure from news, after a restart); from the latest
    ``scan`` successes."""
    rows = session.execute(
        select(RecoveryRow.service, RecoveryRow.ended_at, RecoveryRow.id)
        .where(RecoveryRow.outcome == Outcome.SUCCESS.value, RecoveryRow.ended_at.is_not(None))
        .order_by(RecoveryRow.ended_at.desc())
        .limit(scan)
    ).all()
    found: dict[str, tuple[datetime, str]] = {}
    for service, ended, recovery_id in rows:
        if ended is not None:
            found.setdefault(service, (ended, recovery_id))
    return found


def recovery_totals(
    session: Session, *, owner: str | None = None, excluding: Collection[str] = ()
) -> list[tuple[str, str, str, str | None, int]]:
    """(service, strategy, status, outcome, count) over the ended recoveries (those the
    installation ``owner`` ran, if given), but for those in ``excluding`` (still
    stabilising: their verdict may change, and a counter must never go down)."""
    ended = [status.value for status in RecoveryStatus if status.terminal]
    query = select(
        RecoveryRow.service,
        RecoveryRow.strategy,
        RecoveryRow.status,
        RecoveryRow.outcome,
        func.count(),
    ).where(RecoveryRow.status.in_(ended))
    if owner is not None:
        query = query.where(RecoveryRow.owner == owner)
    if excluding:
        query = query.where(RecoveryRow.id.not_in(list(excluding)))
    rows = session.execute(
        query.group_by(
            RecoveryRow.service, RecoveryRow.strategy, RecoveryRow.status, RecoveryRow.outcome
        )
    ).all()
    return [(s, st, status, outcome, int(n)) for s, st, status, outcome, n in rows]
