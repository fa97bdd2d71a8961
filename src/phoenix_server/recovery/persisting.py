"""Writes that must happen eventually, even if the database is briefly away.

When a recovery's bookkeeping cannot be written (SQLite locked by another process, a
PostgreSQL failover), the engine keeps working and hands the record here: it is retried in
the background with backoff, and for each record only its latest state is kept, so a late
retry never overwrites a newer write of the same record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from phoenix_server.domain.errors import StaleOwnerError, UnavailableError
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery
from phoenix_server.recovery.ports import RecoveryRecorder
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")

FIRST_RETRY = 0.5
MAX_RETRY = 30.0
MAX_KEPT = 10_000
"""Records held for the database at most; beyond, the oldest are dropped (and counted):
memory stays bounded through an outage of any length."""


class EventualWrites:
    def __init__(self, recorder: RecoveryRecorder, tasks: SupervisedTasks) -> None:
        self._recorder = recorder
        self._tasks = tasks
        self._latest: dict[str, Incident | Recovery] = {}
        self._in_flight: dict[str, Incident | Recovery] = {}
        """Records being written right now (their latest state is not in the database yet)."""
        self._retrying: asyncio.Task[None] | None = None
        self.dropped = 0
        """Records given up on because more than ``MAX_KEPT`` were waiting."""

    @property
    def pending(self) -> int:
        return len(self._latest)

    def keep(self, record: Incident | Recovery) -> None:
        """Hold ``record`` for the database without trying now (it just refused)."""
        self._latest.pop(record.id, None)
        self._latest[record.id] = record
        while len(self._latest) > MAX_KEPT:
            oldest = next(iter(self._latest))
            del self._latest[oldest]
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "%d record(s) dropped: the database has refused them too long", self.dropped
                )
        if self._retrying is None or self._retrying.done():
            self._retrying = self._tasks.spawn(self._retry(), name="eventual-writes")

    async def write(self, record: Incident | Recovery) -> None:
        """Write now if possible, otherwise keep retrying in the background."""
        self._latest.pop(record.id, None)
        self._in_flight[record.id] = record
        try:
            await self._save(record)
        except StaleOwnerError as exc:
            # This replica lost the service: its new owner closes what was left open.
            log.warning("%s not recorded: %s", record.id, exc.message)
        except UnavailableError as exc:
            log.warning("could not record %s yet (%s); retrying in the background", record.id, exc)
            self.keep(record)
        except asyncio.CancelledError:
            # Cut off mid-write (its run cancelled, or Phoenix stopping): not lost — retried
            # in the background, and written by ``flush`` at shutdown.
            self.keep(record)
            raise
        finally:
            if self._in_flight.get(record.id) is record:
                del self._in_flight[record.id]

    def forget_service(self, service: str) -> None:
        """Drop what waits to be written for ``service``: a replica that takes a service
        back under a new lease must not write its previous term's records under it."""
        for record_id in [r for r, record in self._latest.items() if record.service == service]:
            del self._latest[record_id]

    def unwritten_ids(self) -> set[str]:
        """Records whose latest state is not yet in the database (waiting or being written)."""
        return set(self._latest) | set(self._in_flight)

    async def flush(self, timeout: float) -> None:
        """At shutdown: one last try, within ``timeout`` seconds, for every record not yet
        written (waiting for the database, or cut off mid-write by the shutdown itself)."""
        if self._retrying is not None:
            self._retrying.cancel()
        records = {**self._in_flight, **self._latest}
        self._latest.clear()
        self._in_flight.clear()
        if not records:
            return
        try:
            async with asyncio.timeout(timeout):
                for record in list(records.values()):
                    with contextlib.suppress(StaleOwnerError):  # not ours to write any more
                        await self._save(record)
                    del records[record.id]
        except (UnavailableError, TimeoutError) as exc:
            log.error(
                "%d record(s) could not be written before stopping (%s): %s",
                len(records),
                exc or "timed out",
                ", ".join(records),
            )

    async def _save(self, record: Incident | Recovery) -> None:
        if isinstance(record, Incident):
            await self._recorder.save_incident(record)
        else:
            await self._recorder.save_recovery(record)

    async def _retry(self) -> None:
        delay = FIRST_RETRY
        while self._latest:
            await asyncio.sleep(delay)
            for record_id, record in list(self._latest.items()):
                try:
                    await self._save(record)
                except StaleOwnerError:
                    pass  # another replica owns the service now: not ours to record
                except UnavailableError:
                    delay = min(delay * 2, MAX_RETRY)
                    break
                if self._latest.get(record_id) is record:
                    del self._latest[record_id]
            else:
                delay = FIRST_RETRY
