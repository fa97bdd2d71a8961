"""The store as the engine sees it: the recovery recorder and the platforms' instance journal.

These adapters satisfy the protocols of ``recovery.ports`` and ``platforms.base``
structurally, so neither layer imports the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from phoenix_server.domain.alerts import Alert
from phoenix_server.domain.deployments import Deployment
from phoenix_server.domain.errors import StaleOwnerError, UnavailableError
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery, Step
from phoenix_server.domain.reports import SeenReport
from phoenix_server.domain.services import Instance, PlatformKind
from phoenix_server.store import (
    alerts,
    deployments,
    incidents,
    instances,
    recoveries,
    report_keys,
)
from phoenix_server.store.database import Store

log = logging.getLogger("phoenix.store")

JOURNAL_KEPT = 10_000
JOURNAL_FIRST_RETRY = 0.5
JOURNAL_MAX_RETRY = 30.0
"""The instance journal's bound and retry backoff (seconds) while the database refuses."""


Epochs = Callable[[str], "int | None"]
"""A service's lease epoch this replica acts under (None: one Phoenix, no leases)."""


def no_epochs(_service: str) -> int | None:
    return None


def _save_recovery_and_incident(
    session: Session, recovery: Recovery, incident: Incident | None, owner: str, epoch: int | None
) -> None:
    if incident is not None:
        incidents.save_incident(session, incident, epoch=epoch)
    recoveries.save_recovery(session, recovery, owner, epoch=epoch)


BOUND_KEPT = 10_000
"""Records whose epoch is remembered (the oldest forgotten first)."""


class StoreRecorder:
    """Every write carries the lease epoch its record was first written under — not the
    one held at the time of the write — so the database refuses what a replica that lost
    the service still tries to record, even after it has taken the service back (a later
    epoch: the earlier run must not go on under it)."""

    def __init__(self, store: Store, owner: str = "", epochs: Epochs = no_epochs) -> None:
        self._store = store
        self._owner = owner
        self._epochs = epochs
        self._bound: dict[str, tuple[str, int | None]] = {}
        """Per record id, its service and the epoch it is written under."""

    def _epoch(self, record_id: str, service: str) -> int | None:
        bound = self._bound.get(record_id)
        if bound is None:
            bound = (service, self._epochs(service))
            self._bound[record_id] = bound
            while len(self._bound) > BOUND_KEPT:
                del self._bound[next(iter(self._bound))]
        return bound[1]

    def carry_on(self, record_id: str) -> None:
        """``record_id`` (an open incident) is carried on by this replica under the lease it
        holds now: written under that epoch from here on. Every other record keeps the
        epoch it began in — a run of an earlier term never writes under a later one."""
        self._bound.pop(record_id, None)

    async def save_recovery(self, recovery: Recovery, *, incident: Incident | None = None) -> None:
        epoch = self._epoch(recovery.id, recovery.service)
        if incident is not None:
            self._bound.setdefault(incident.id, (incident.service, epoch))
        await self._store.write(_save_recovery_and_incident, recovery, incident, self._owner, epoch)

    async def save_steps(self, recovery: Recovery, steps: Sequence[Step]) -> None:
        epoch = self._epoch(recovery.id, recovery.service)
        await self._store.write(recoveries.save_steps, recovery.id, steps, epoch=epoch)

    async def save_incident(self, incident: Incident) -> None:
        epoch = self._epoch(incident.id, incident.service)
        await self._store.write(incidents.save_incident, incident, epoch=epoch)

    async def save_deployment(self, deployment: Deployment) -> None:
        epoch = self._epoch(deployment.id, deployment.service)
        await self._store.write(deployments.save_deployment, deployment, self._owner, epoch=epoch)


class StoreAlertQueue:
    def __init__(
        self, store: Store, epochs: Epochs = no_epochs, *, shared: timedelta | None = None
    ) -> None:
        """``shared``: several replicas deliver from this outbox; each takes what it sends
        for that long (see ``alerts.due``)."""
        self._store = store
        self._epochs = epochs
        self._shared = shared

    async def enqueue(self, alert: Alert) -> bool:
        epoch = self._epochs(alert.service)
        queued: bool = await self._store.write(alerts.enqueue, alert, epoch=epoch)
        return queued

    async def due(self, now: datetime) -> list[tuple[str, bytes, int]]:
        if self._shared is None:
            found = await self._store.read(alerts.due, now=now)
        else:
            found = await self._store.write(alerts.due, now=now, claim_for=self._shared)
        return [(a.id, a.body, a.attempts) for a in found]

    async def delivered(self, alert_id: str, at: datetime) -> None:
        await self._store.write(alerts.delivered, alert_id, at=at)

    async def failed(self, alert_id: str, retry_at: datetime, error: str) -> None:
        await self._store.write(alerts.failed, alert_id, retry_at=retry_at, error=error)


class StoreReportKeys:
    """The report keys received, for recognising copies after a restart."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def save(self, seen: SeenReport) -> None:
        await self._store.write(report_keys.save_seen, seen)

    async def prune(self, before: datetime, keep: int) -> None:
        await self._store.write(report_keys.prune_seen, before=before, keep=keep)


class StoreJournal:
    """Which instances Phoenix runs, for adopting them after a restart. Starting and
    stopping processes never waits for it: while the database refuses writes, the latest
    change of each instance is kept (bounded) and written when it takes them again."""

    def __init__(self, store: Store, owner: str = "", epochs: Epochs = no_epochs) -> None:
        self._store = store
        self._owner = owner
        self._epochs = epochs
        self._pending: dict[str, Instance | None] = {}
        """Per instance id, its latest unwritten state (None: removed)."""
        self._retrying: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def save_instance(self, instance: Instance) -> None:
        await self._apply(instance.id, instance)

    async def remove_instance(self, instance_id: str) -> None:
        await self._apply(instance_id, None)

    async def _write(self, instance_id: str, instance: Instance | None) -> None:
        if instance is None:
            await self._store.write(instances.remove_instance, instance_id)
        else:
            epoch = self._epochs(instance.service)
            await self._store.write(instances.save_instance, instance, self._owner, epoch=epoch)

    async def _apply(self, instance_id: str, instance: Instance | None) -> None:
        self._pending.pop(instance_id, None)
        try:
            await self._write(instance_id, instance)
        except StaleOwnerError as exc:
            log.warning("instance %s not recorded: %s", instance_id, exc.message)
        except UnavailableError as exc:
            log.warning("instance %s recorded later (%s)", instance_id, exc.message)
            self._pending[instance_id] = instance
            while len(self._pending) > JOURNAL_KEPT:
                del self._pending[next(iter(self._pending))]
            if self._retrying is None or self._retrying.done():
                self._retrying = asyncio.get_running_loop().create_task(
                    self._retry(), name="instance-journal"
                )

    async def _retry(self) -> None:
        delay = JOURNAL_FIRST_RETRY
        while self._pending:
            await asyncio.sleep(delay)
            for instance_id, instance in list(self._pending.items()):
                try:
                    await self._write(instance_id, instance)
                except StaleOwnerError:
                    pass  # another replica owns the service now: not ours to record
                except UnavailableError:
                    delay = min(delay * 2, JOURNAL_MAX_RETRY)
                    break
                if self._pending.get(instance_id, "gone") is instance:
                    del self._pending[instance_id]

    async def load_instances(self, platform: PlatformKind) -> list[Instance]:
        return await self._store.read(instances.load_instances, platform, self._owner)
