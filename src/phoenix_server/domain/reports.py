"""Failures reported from outside: Prometheus Alertmanager alerts and events from chaos
tooling or a health monitor. Each becomes (or joins) an incident like one Phoenix detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from phoenix_server.domain.incidents import FailureType


class ReportOrigin(StrEnum):
    ALERTMANAGER = "alertmanager"
    EVENT = "event"


@dataclass(frozen=True)
class FailureReport:
    """One report that a service is failing (``firing``) or no longer is."""

    service: str
    firing: bool
    origin: ReportOrigin
    key: str | None
    """What identifies the same report when it is sent again (an alert's fingerprint and
    start, an event's id); None: every report is new."""
    failure_type: FailureType = FailureType.UNKNOWN
    summary: str = ""
    evidence: tuple[str, ...] = ()
    alert_name: str | None = None
    """For ``alert`` playbook triggers."""
    recover: bool = True
    """False: record the incident, do not act (the reporter only informs)."""
    started_at: datetime | None = None
    """When the failure began as the reporter saw it (an alert's ``startsAt``): a report of
    a failure that began before Phoenix's last successful recovery of the service ended is
    about that fixed failure, and is not acted on."""


class ReportAction(StrEnum):
    RECOVERING = "recovering"
    """A new incident, and a recovery started for it."""
    RECORDED = "recorded"
    """A new incident, recorded only (auto-recovery off, a deploy under way, asked not to
    act, or a service Phoenix can only monitor); ``reason`` says which."""
    JOINED = "joined"
    """The service already had an open incident or a running recovery: the report joins it."""
    DUPLICATE = "duplicate"
    """Sent before (same key): nothing new."""
    RESOLVED = "resolved"
    """The incident this report's source opened is closed."""
    STALE = "stale"
    """About a failure that began before the service's last successful recovery ended:
    already fixed, so not acted on (``reason`` names the recovery)."""
    IGNORED = "ignored"
    """Nothing to do (a resolution for an incident that is gone, an unmapped alert);
    ``reason`` says why."""


@dataclass(frozen=True)
class ReportResult:
    action: ReportAction
    reason: str
    service: str | None = None
    incident_id: str | None = None
    recovery_id: str | None = None


@dataclass(frozen=True)
class SeenReport:
    """A report key Phoenix received, kept (in memory and in the store) so that copies sent
    later change nothing: Alertmanager re-sends a firing alert for as long as it fires, and
    again after Phoenix restarts."""

    key: str
    service: str
    incident_id: str | None
    """The incident it opened or joined (None: it opened and joined none)."""
    holds_open: bool
    """Its incident stays open while it fires: it opened that incident, or joined one a
    report opened. (An incident Phoenix opened itself closes when Phoenix sees the service
    healthy, whatever reports joined it.)"""
    resolved: bool
    seen_at: datetime
    """When a copy of it last arrived: kept for a day after that."""
