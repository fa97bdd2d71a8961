"""The alert outbox: queue once per event, hand out what is due, record each try."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from phoenix_server.domain.alerts import Alert
from phoenix_server.store.tables import AlertRow


@dataclass(frozen=True)
class QueuedAlert:
    id: str
    body: bytes
    """The exact JSON bytes sent on every try (so a signature and a retry agree)."""
    attempts: int


def enqueue(session: Session, alert: Alert, *, epoch: int | None = None) -> bool:
    """Queue ``alert`` unless its event already has one; True if queued now."""
    if session.scalar(select(AlertRow.id).where(AlertRow.dedup_key == alert.dedup_key)):
        return False
    session.add(
        AlertRow(
            id=alert.id,
            dedup_key=alert.dedup_key,
            kind=alert.kind.value,
            service=alert.service,
            created_at=alert.created_at,
            payload=alert.payload(),
            attempts=0,
            next_attempt_at=alert.created_at,
            delivered_at=None,
            last_error="",
            epoch=epoch,
        )
    )
    return True


CLAIMED_AT_ONCE = 5
"""Alerts one replica takes at a time: 5 sends of at most 10 s each fit well within the
minute it holds them."""


def due(
    session: Session, *, now: datetime, limit: int = 50, claim_for: timedelta | None = None
) -> list[QueuedAlert]:
    """Undelivered alerts whose next try is due. ``claim_for`` (replicas sharing the
    outbox): taken for that long, so that no other replica sends them meanwhile; a replica
    that dies before saying how it went leaves them to the others after that."""
    if claim_for is not None:
        # The database's clock, not this replica's; and no more than can be sent before
        # the claim runs out (each send may take its whole timeout).
        now = session.scalar(select(func.now())) or now
        limit = min(limit, CLAIMED_AT_ONCE)
    query = (
        select(AlertRow)
        .where(AlertRow.delivered_at.is_(None), AlertRow.next_attempt_at <= now)
        .order_by(AlertRow.next_attempt_at, AlertRow.id)
        .limit(limit)
    )
    if claim_for is not None:
        query = query.with_for_update(skip_locked=True)
    rows = session.scalars(query).all()
    if claim_for is not None:
        for row in rows:
            row.next_attempt_at = now + claim_for
    return [
        QueuedAlert(row.id, json.dumps(row.payload, sort_keys=True).encode(), row.attempts)
        for row in rows
    ]


def delivered(session: Session, alert_id: str, *, at: datetime) -> None:
    row = session.get(AlertRow, alert_id)
    if row is not None:
        row.delivered_at = at
        row.attempts += 1
        row.last_error = ""


def failed(session: Session, alert_id: str, *, retry_at: datetime, error: str) -> None:
    row = session.get(AlertRow, alert_id)
    if row is not None:
        row.attempts += 1
        row.next_attempt_at = retry_at
        row.last_error = error[:500]


def undelivered(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(AlertRow).where(AlertRow.delivered_at.is_(None))
        )
        or 0
    )


def backlog(session: Session) -> tuple[int, datetime | None]:
    """How many alerts wait to be delivered, and when the oldest of them was raised."""
    count, oldest = session.execute(
        select(func.count(), func.min(AlertRow.created_at)).where(AlertRow.delivered_at.is_(None))
    ).one()
    return int(count), oldest
