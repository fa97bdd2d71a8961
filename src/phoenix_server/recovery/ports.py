"""What the recovery layer needs from the outside, as protocols the wiring satisfies.

The store implements :class:`RecoveryRecorder` and monitoring implements
:class:`HealthVerifier`; recovery imports neither, so it can be read and tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from phoenix_server.domain.health import Verification
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery, Step, Strategy
from phoenix_server.domain.services import Instance, ServiceSpec


class RecoveryRecorder(Protocol):
    """Durable record of recoveries and incidents: written before and after every step."""

    async def save_recovery(self, recovery: Recovery) -> None: ...

    async def save_step(self, recovery_id: str, step: Step) -> None: ...

    async def save_incident(self, incident: Incident) -> None: ...

    async def successful_durations(
        self, service: str, strategy: Strategy, limit: int
    ) -> list[float]: ...


class HealthVerifier(Protocol):
    async def verify(
        self, service: ServiceSpec, instances: Sequence[Instance], *, timeout: float
    ) -> Verification: ...
