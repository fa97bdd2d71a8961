"""What the learned policy learns from: each finished recovery attempt's result, against its
service, failure type and strategy.

Outcomes are not a table of their own: they are read back from the recoveries (which carry
status, outcome, duration, downtime and requests lost) joined with their incidents (which
carry the failure type), so the evidence is exactly the history operators can inspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.recoveries import Outcome, Recovery, RecoveryStatus, Strategy

PARTIAL_REWARD = 0.5
"""A partial result (an open circuit awaiting restoration) is half a success: the service is
protected, not fixed."""


@dataclass(frozen=True)
class AttemptOutcome:
    service: str
    failure_type: FailureType
    strategy: Strategy
    reward: float
    """1 for success, 0 for failure, :data:`PARTIAL_REWARD` for a partial result."""
    at: datetime
    incident_id: str | None = None
    time_to_recover: float | None = None
    """Seconds the attempt took, when it succeeded."""
    downtime: float | None = None
    requests_lost: int | None = None


def outcome_of(recovery: Recovery, failure_type: FailureType | None) -> AttemptOutcome | None:
    """The evidence one attempt gives about its strategy, or None if it gives none.

    Only attempts that answered a failure count (an operator's restart of a working service
    says nothing about a failure type), and only those the strategy itself decided: a
    playbook's run reflects the playbook, and a cancelled or interrupted attempt never got
    to show whether its strategy works.
    """
    if failure_type is None or recovery.playbook_id is not None:
        return None
    if recovery.status is RecoveryStatus.COMPLETED:
        reward = PARTIAL_REWARD if recovery.outcome is Outcome.PARTIAL else 1.0
    elif recovery.status is RecoveryStatus.FAILED:
        reward = 0.0
    else:
        return None
    return AttemptOutcome(
        service=recovery.service,
        failure_type=failure_type,
        strategy=recovery.strategy,
        reward=reward,
        at=recovery.ended_at or recovery.created_at,
        incident_id=recovery.incident_id,
        time_to_recover=recovery.duration if reward > 0 else None,
        downtime=recovery.metrics.downtime,
        requests_lost=recovery.metrics.requests_lost,
    )
