"""What the recovery layer needs from the outside, as protocols the wiring satisfies.

The store implements :class:`RecoveryRecorder` and monitoring implements
:class:`HealthVerifier`; recovery imports neither, so it can be read and tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from phoenix_server.domain.alerts import Alert
from phoenix_server.domain.health import Verification
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery, Step
from phoenix_server.domain.services import Instance, ServiceSpec


class RecoveryRecorder(Protocol):
    """Durable record of recoveries and incidents: written before and after every step.

    ``save_recovery`` writes the whole recovery with its steps; ``save_steps`` only the
    steps given (the end of one step and the start of the next go in one transaction).
    """

    async def save_recovery(self, recovery: Recovery, *, incident: Incident | None = None) -> None:
        """Write the recovery (and, in the same transaction, its new incident if given)."""
        ...

    async def save_steps(self, recovery: Recovery, steps: Sequence[Step]) -> None: ...

    async def save_incident(self, incident: Incident) -> None: ...


class HealthVerifier(Protocol):
    async def verify(
        self, service: ServiceSpec, instances: Sequence[Instance], *, timeout: float
    ) -> Verification: ...


class AlertQueue(Protocol):
    """The durable alert outbox (the store implements it)."""

    async def enqueue(self, alert: Alert) -> bool:
        """Queue unless the alert's event already has one; True if queued now."""
        ...

    async def due(self, now: datetime) -> list[tuple[str, bytes, int]]:
        """Undelivered alerts whose next try is due: (id, exact body, tries so far)."""
        ...

    async def delivered(self, alert_id: str, at: datetime) -> None: ...

    async def failed(self, alert_id: str, retry_at: datetime, error: str) -> None: ...
