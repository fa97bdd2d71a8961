"""Alerts: what Phoenix tells people, once per event, however often delivery is retried."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from phoenix_server.support.timefmt import iso_ms


class AlertKind(StrEnum):
    RECOVERY_FAILED = "recovery_failed"
    """An attempt failed (Phoenix tries again if attempts remain)."""
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    """Phoenix gave up: a person must act."""
    CASCADING = "cascading"
    """A dependency's failure took its callers down with it."""
    PLAYBOOK_ERROR = "playbook_error"
    """A playbook run ended without the service recovered."""
    RECOVERY_SUCCEEDED = "recovery_succeeded"
    """Only when configured (``PHOENIX_ALERT_ON_SUCCESS``)."""
    FLEET_PAUSED = "fleet_paused"
    """Too many services failed at once: automatic recovery is paused (service ``*``)."""
    CANNOT_RECOVER = "cannot_recover"
    """The service fails in a way Phoenix leaves to its platform (a crash loop under Docker's
    own restart policy): a person must act."""
    BUDGET_SPENT = "budget_spent"
    """A service used its recovery budget: Phoenix stops recovering it until a person acts
    or it stays healthy."""


@dataclass(frozen=True)
class Alert:
    id: str
    dedup_key: str
    """One alert per event: the same key is never queued twice."""
    kind: AlertKind
    service: str
    created_at: datetime
    text: str
    recovery_id: str | None = None
    incident_id: str | None = None
    tried: tuple[str, ...] = ()
    """Strategies tried so far for the incident."""
    details: Mapping[str, object] = field(default_factory=dict)

    def payload(self) -> dict[str, object]:
        """The JSON a webhook receives (``text`` makes it readable in Slack-style hooks)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "service": self.service,
            "recoveryId": self.recovery_id,
            "incidentId": self.incident_id,
            "tried": list(self.tried),
            "statusPath": f"/api/recovery/status/{self.recovery_id}" if self.recovery_id else None,
            "incidentPath": f"/api/incidents/{self.incident_id}" if self.incident_id else None,
            "timestamp": iso_ms(self.created_at),
            "text": self.text,
            **dict(self.details),
        }
