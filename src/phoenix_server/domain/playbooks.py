"""Playbooks: declared recovery procedures, triggers plus ordered steps with conditions.

The enumerations are the contract of API.md. Validation of a playbook document lives
with the input formats (``config``); this module holds the validated result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from phoenix_server.domain.recoveries import StepCondition


class PlaybookStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class PlaybookSource(StrEnum):
    API = "api"
    FILE = "file"


class TriggerType(StrEnum):
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    MEMORY = "memory"
    CPU = "cpu"
    SERVICE_DOWN = "service_down"
    FAILURE_TYPE = "failure_type"
    ANOMALY_SCORE = "anomaly_score"
    ALERT = "alert"
    MANUAL = "manual"


SIGNAL_TRIGGERS = frozenset(
    {
        TriggerType.ERROR_RATE,
        TriggerType.LATENCY,
        TriggerType.MEMORY,
        TriggerType.CPU,
        TriggerType.ANOMALY_SCORE,
    }
)


class BuiltinAction(StrEnum):
    RESTART_SERVICE = "restart_service"
    ROLLBACK = "rollback"
    SCALE = "scale"
    FAILOVER = "failover"
    CIRCUIT_BREAK = "circuit_break"
    HTTP_REQUEST = "http_request"
    WAIT = "wait"
    VERIFY_HEALTH = "verify_health"
    NOTIFY = "notify"
    RUN_COMMAND = "run_command"
    """Only in playbooks loaded from the operator's files, never through the API."""


@dataclass(frozen=True)
class PlaybookTrigger:
    type: TriggerType
    threshold: float | None = None
    duration: float | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    """Type-specific settings: ``percentile`` for latency, ``failureType``, ``alert`` name."""


@dataclass(frozen=True)
class PlaybookStep:
    action: str
    """A :class:`BuiltinAction` value or a named action the service declares."""
    timeout: float | None = None
    condition: StepCondition = StepCondition.ALWAYS
    params: Mapping[str, object] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Playbook:
    id: str
    name: str
    triggers: tuple[PlaybookTrigger, ...]
    steps: tuple[PlaybookStep, ...]
    created_at: datetime
    updated_at: datetime
    service: str | None = None
    """Bound to one service, or None for a playbook that applies wherever its triggers match."""
    description: str = ""
    status: PlaybookStatus = PlaybookStatus.ACTIVE
    priority: int = 0
    version: int = 1
    source: PlaybookSource = PlaybookSource.API

    @property
    def triggers_on_signals(self) -> bool:
        """Whether a trigger watches a metric (and so can fire with no failure detected)."""
        return any(t.type in SIGNAL_TRIGGERS for t in self.triggers)
