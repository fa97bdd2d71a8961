"""Incidents: one failure of one service, its classified type and the evidence behind it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FailureType(StrEnum):
    SERVICE_DOWN = "service_down"
    HIGH_ERROR_RATE = "high_error_rate"
    MEMORY_LEAK = "memory_leak"
    HIGH_LOAD = "high_load"
    CASCADING = "cascading"
    LATENCY_DEGRADATION = "latency_degradation"
    UNKNOWN = "unknown"


class IncidentStatus(StrEnum):
    OPEN = "open"
    """Detected; recovery running or about to."""
    RESOLVED = "resolved"
    """The service is healthy again."""
    UNRESOLVED = "unresolved"
    """Phoenix gave up (attempts exhausted, or nothing it can do); a person must act."""


class IncidentSource(StrEnum):
    DETECTED = "detected"
    MANUAL = "manual"
    ALERT = "alert"
    """Reported by a Prometheus Alertmanager alert."""
    EVENT = "event"
    """Reported through ``POST /api/events`` (chaos tooling, a health monitor)."""


@dataclass(frozen=True)
class Incident:
    id: str
    service: str
    failure_type: FailureType
    status: IncidentStatus
    detected_at: datetime
    source: IncidentSource = IncidentSource.DETECTED
    summary: str = ""
    evidence: tuple[str, ...] = ()
    resolved_at: datetime | None = None
    false_positive: bool = False
