"""The open cases: per service, the recovery working on it, its unresolved incident, a
recovery proving itself, when Phoenix gave up on it — and how their records are made.

The intake (which opens, joins and closes incidents) and the attempts (which carry a
recovery to its end) both work on these; neither owns them, so they live here, with the
few operations that must keep them consistent (closing an incident, making a record).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime

from phoenix_server.detection.classifying import Diagnosis
from phoenix_server.domain import ids
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.incidents import Incident, IncidentSource, IncidentStatus
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import (
    Decision,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.recovery.claims import Claim
from phoenix_server.recovery.estimating import DurationEstimates
from phoenix_server.recovery.persisting import EventualWrites

REPORTED_SOURCES = frozenset({IncidentSource.ALERT, IncidentSource.EVENT})
"""Incidents someone else reported."""


@dataclass
class Run:
    """The recovery work for one service: its current attempt and how to stop it."""

    service: ServiceSpec
    incident: Incident | None
    """None for an operator's restart of a service that was not failing (maintenance)."""
    recovery: Recovery
    down_since: datetime | None
    delay: float = 0.0
    """Crash-loop backoff to wait before the first attempt."""
    rollback_to: str | None = None
    """The version a rollback goes to, when its requester named it (a failed deploy goes
    back to what ran before); otherwise the newest known-good older version."""
    playbook: Playbook | None = None
    """The playbook its first attempt runs (later attempts follow the default policy)."""
    failed: list[Strategy] = field(default_factory=list)
    """Strategies whose attempts failed for this incident: the next attempt escalates."""
    shortages: int = 0
    """Attempts that met a machine out of resources (retried, not counted)."""
    claim: Claim | None = None
    """Its claim of the service, while it holds it."""
    asked: bool = False
    """Someone asked for it (an operator, or Phoenix after a failed deploy): it runs even if
    the service looks healthy by then, unlike one started by detection."""
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def tried(self, last: Recovery | None) -> tuple[str, ...]:
        """The strategies tried for the incident so far, each once, in order: every alert
        about one incident says the same (``last``: the attempt just ended, if any)."""
        strategies = [*self.failed, *((last.strategy,) if last is not None else ())]
        return tuple(dict.fromkeys(s.value for s in strategies))


@dataclass
class Stabilising:
    """A verified recovery waiting to have held for its stabilisation period."""

    run: Run
    result: Recovery
    until: float
    """Monotonic time at which it counts as a success."""

    @property
    def verified_at(self) -> float:
        return self.until - self.run.service.recovery.stabilisation_period


def is_reported(incident: Incident) -> bool:
    """Someone else reported it: their resolution (or a recovery) closes it, not a healthy
    look from Phoenix's own checks, which may not see what they saw — also once Phoenix has
    given up on it (the reporter still sees the failure until it says otherwise)."""
    return incident.source in REPORTED_SOURCES


class Cases:
    def __init__(self, clock: Clock, writes: EventualWrites) -> None:
        self._clock = clock
        self.writes = writes
        """Records on their way to the database (kept while it refuses them)."""
        self.estimates = DurationEstimates()
        self.runs: dict[str, Run] = {}
        """The recovery holding each service's claim (the claims say who holds the others)."""
        self.incidents: dict[str, Incident] = {}
        """Per service, the latest incident not yet resolved (open, or given up on)."""
        self.stabilising: dict[str, Stabilising] = {}
        """Services recovered moments ago, until their recovery has held."""
        self.gave_up_at: dict[str, float] = {}
        """Monotonic time Phoenix gave up on each service it has not recovered since."""
        self.last_fixed: dict[str, tuple[Run, Recovery]] = {}
        """Per service, its latest recovery of an incident that held (with its run): if the
        report that opened the incident still fires well after it, it did not fix it."""
        self.fixed_until: dict[str, tuple[datetime, str]] = {}
        """Per service, when its latest successful recovery ended (and which it was): a
        report of a failure that began before then is about that fixed failure."""

    def make_incident(self, service: str, diagnosis: Diagnosis, source: IncidentSource) -> Incident:
        return Incident(
            id=ids.new_id(ids.INCIDENT),
            service=service,
            failure_type=diagnosis.failure_type,
            status=IncidentStatus.OPEN,
            detected_at=self._clock.now(),
            source=source,
            summary=diagnosis.summary,
            evidence=diagnosis.evidence,
        )

    async def close_incident(
        self, incident: Incident, status: IncidentStatus, summary: str
    ) -> None:
        """Resolve ``incident`` (it leaves the open cases) or mark it given up on (it stays,
        for a person to act on), with ``summary`` added to what it says."""
        closed = replace(
            incident,
            status=status,
            resolved_at=self._clock.now() if status is IncidentStatus.RESOLVED else None,
            summary=f"{incident.summary}; {summary}",
        )
        current = self.incidents.get(incident.service)
        if status is IncidentStatus.RESOLVED:
            if current is not None and current.id == incident.id:
                del self.incidents[incident.service]
        elif current is None or current.id == incident.id:
            self.incidents[incident.service] = closed
        await self.writes.write(closed)

    def new_recovery(
        self,
        spec: ServiceSpec,
        incident: Incident | None,
        decision: Decision,
        trigger: RecoveryTrigger,
        reason: str,
        *,
        attempt: int = 1,
        force: bool = False,
        playbook: Playbook | None = None,
    ) -> Recovery:
        return Recovery(
            id=ids.new_id(ids.RECOVERY),
            service=spec.name,
            strategy=decision.strategy,
            status=RecoveryStatus.PENDING,
            trigger=trigger,
            decision=decision,
            created_at=self._clock.now(),
            reason=reason,
            incident_id=incident.id if incident else None,
            attempt=attempt,
            force=force,
            estimated_duration=self.estimates.estimate(spec.name, decision.strategy),
            playbook_id=playbook.id if playbook else None,
            playbook_version=playbook.version if playbook else None,
        )
