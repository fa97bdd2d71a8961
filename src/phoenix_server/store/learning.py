"""The learned policy's evidence, read back from recorded history: each finished attempt
joined with its incident's failure type (see ``domain.learning``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.learning import AttemptOutcome, outcome_of
from phoenix_server.domain.recoveries import RecoveryStatus
from phoenix_server.store.recoveries import recovery_from_row
from phoenix_server.store.tables import IncidentRow, RecoveryRow

SCAN = 20_000
"""Latest finished attempts read at start (the policy keeps 50 per key anyway)."""


def recent_outcomes(session: Session, *, scan: int = SCAN) -> list[AttemptOutcome]:
    """Newest first. Incidents an operator marked as false positives teach nothing: the
    service was not failing, so the recovery's result says nothing about the strategy."""
    rows = session.execute(
        select(RecoveryRow, IncidentRow.failure_type)
        .join(IncidentRow, IncidentRow.id == RecoveryRow.incident_id)
        .where(
            RecoveryRow.status.in_([RecoveryStatus.COMPLETED.value, RecoveryStatus.FAILED.value]),
            RecoveryRow.playbook_id.is_(None),
            IncidentRow.false_positive.is_(False),
        )
        .order_by(RecoveryRow.created_at.desc())
        .limit(scan)
    ).all()
    found = []
    for row, failure_type in rows:
        outcome = outcome_of(recovery_from_row(row, None), FailureType(failure_type))
        if outcome is not None:
            found.append(outcome)
    return found
