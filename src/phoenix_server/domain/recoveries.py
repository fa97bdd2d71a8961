"""Recoveries: the decision, the plan (steps as data), and the record of running it.

A strategy turns a service into a list of :class:`PlannedStep`; the executor runs
them and records each as a :class:`Step`. A :class:`Recovery` is one attempt; the
attempts for one incident share its ``incident_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Strategy(StrEnum):
    RESTART = "restart"
    ROLLBACK = "rollback"
    SCALE = "scale"
    FAILOVER = "failover"
    CIRCUIT_BREAK = "circuit_break"


class RecoveryStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (RecoveryStatus.PENDING, RecoveryStatus.IN_PROGRESS)


ACTIVE_RECOVERY_STATUSES = (RecoveryStatus.PENDING, RecoveryStatus.IN_PROGRESS)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"


class StepCondition(StrEnum):
    ALWAYS = "always"
    IF_PREVIOUS_FAILED = "if_previous_failed"
    IF_PREVIOUS_SUCCEEDED = "if_previous_succeeded"
    IF_HEALTHY = "if_healthy"
    IF_UNHEALTHY = "if_unhealthy"


class RecoveryTrigger(StrEnum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"
    PLAYBOOK = "playbook"
    ALERT = "alert"


class DecisionSource(StrEnum):
    PLAYBOOK = "playbook"
    LEARNED = "learned"
    DEFAULT = "default"
    MANUAL = "manual"


class DataIntegrity(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    FAILED = "failed"


@dataclass(frozen=True)
class Candidate:
    strategy: Strategy
    score: float
    """What ranked it: the learned policy's speed-weighted draw, the default table's
    preference (1, 1/2, …), or 1 for the operator's choice."""
    estimate: float | None = None
    """Learned decisions: the posterior mean success rate behind the draw."""
    observations: int | None = None
    """Learned decisions: the outcomes behind the estimate (this service's and others')."""


@dataclass(frozen=True)
class Decision:
    """Which strategy, where the choice came from, and why (stored with every recovery)."""

    strategy: Strategy
    source: DecisionSource
    reason: str
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class PlannedStep:
    """One step of a plan, before it runs. ``action`` names an executor handler."""

    name: str
    action: str
    timeout: float
    condition: StepCondition = StepCondition.ALWAYS
    params: Mapping[str, object] = field(default_factory=dict)
    abort_on_failure: bool = True
    """Strategy plans stop at the first failure; playbook steps let conditions decide."""


@dataclass(frozen=True)
class Step:
    """A step as recorded: planned, running, or finished with its outcome."""

    position: int
    name: str
    action: str
    status: StepStatus
    timeout: float
    condition: StepCondition = StepCondition.ALWAYS
    started_at: datetime | None = None
    ended_at: datetime | None = None
    detail: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RecoveryMetrics:
    downtime: float | None = None
    """Seconds during which no instance was serving, measured."""
    requests_lost: int | None = None
    """Requests failed or rejected during the recovery; None where nothing counts them."""
    data_integrity: DataIntegrity = DataIntegrity.UNVERIFIED


@dataclass(frozen=True)
class Recovery:
    id: str
    service: str
    strategy: Strategy
    status: RecoveryStatus
    trigger: RecoveryTrigger
    decision: Decision
    created_at: datetime
    reason: str = ""
    incident_id: str | None = None
    attempt: int = 1
    steps: tuple[Step, ...] = ()
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    metrics: RecoveryMetrics = field(default_factory=RecoveryMetrics)
    estimated_duration: float | None = None
    force: bool = False
    playbook_id: str | None = None
    playbook_version: int | None = None
    resource_shortage: str | None = None
    """Set (not stored) when the attempt failed because the machine ran out of something it
    gets back (descriptors, memory): the orchestrator retries it without counting it."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def start_time(self) -> datetime:
        return self.started_at or self.created_at
