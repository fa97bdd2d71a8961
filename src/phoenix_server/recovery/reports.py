"""Failure reports from outside (Alertmanager, chaos tooling, a health monitor) into incidents.

Senders repeat themselves: Alertmanager re-sends a firing alert at every repeat interval
(and both members of an HA pair send it), and a webhook sender retries what it is unsure
was received. A report with a key seen before changes nothing — even after its resolution,
so a late copy of the firing alert does not reopen it (a new firing has a new start time,
hence a new key). Keys are kept in the store for a day after a copy last arrived and
restored when Phoenix starts, so a restart does not turn the re-sent alerts into new
incidents.

A key also remembers the incident it opened or joined. An incident a report opened stays
open while any report that opened or joined it still fires, and closes when the last of
them resolves; one Phoenix opened itself closes when Phoenix sees the service healthy, and
a report's resolution never closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from phoenix_server.domain.errors import UnavailableError
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.reports import (
    FailureReport,
    ReportAction,
    ReportOrigin,
    ReportResult,
    SeenReport,
)
from phoenix_server.support.timefmt import utcnow

log = logging.getLogger("phoenix.recovery")

REMEMBERED = 10_000
"""Report keys kept (oldest forgotten first), in memory and in the store."""
KEPT_FOR = timedelta(days=1)
"""How long a key is kept after a copy of its report last arrived (longer while it holds
its incident open). Alertmanager re-sends a firing alert every ``repeat_interval`` (4 h by
default) for as long as it fires, so each copy renews it."""
RENEWED_AFTER = timedelta(hours=1)
"""A copy renews its key in the store at most this often (a write per copy is not needed)."""
PRUNED_EVERY = 1000
"""New keys between two prunings of the store."""
KEY_EVIDENCE = "report key: "
"""Keys also go into the evidence of the incident they open (how earlier versions kept
them): restored from there too."""


class ReportedIncidents(Protocol):
    """What the intake needs from the orchestrator."""

    async def open_reported(
        self, report: FailureReport, *, repeated: bool = False
    ) -> ReportResult: ...

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult: ...

    def open_incident_id(self, service: str) -> str | None: ...

    async def still_firing(
        self, report: FailureReport, incident_id: str
    ) -> ReportResult | None: ...


class ReportKeyJournal(Protocol):
    """Where keys are kept across restarts (the store implements it)."""

    async def save(self, seen: SeenReport) -> None: ...

    async def prune(self, before: datetime, keep: int) -> None: ...


class _Seen:
    """What a key led to (see :class:`SeenReport`)."""

    __slots__ = ("holds_open", "incident_id", "resolved", "seen_at", "service")

    def __init__(
        self,
        service: str,
        incident_id: str | None,
        holds_open: bool,
        seen_at: datetime,
        resolved: bool = False,
    ) -> None:
        self.service = service
        self.incident_id = incident_id
        self.holds_open = holds_open
        self.resolved = resolved
        self.seen_at = seen_at

    def record(self, key: str) -> SeenReport:
        return SeenReport(
            key=key,
            service=self.service,
            incident_id=self.incident_id,
            holds_open=self.holds_open,
            resolved=self.resolved,
            seen_at=self.seen_at,
        )


class ReportIntake:
    def __init__(
        self,
        incidents: ReportedIncidents,
        journal: ReportKeyJournal | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._incidents = incidents
        self._journal = journal
        self._now = now
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._holding: dict[str, set[str]] = {}
        """Per incident a report opened, the keys still firing that keep it open."""
        self._by_service: dict[str, str] = {}
        """Per service, the incident the latest keyless firing report opened."""
        self._unsaved: dict[str, SeenReport] = {}
        """Keys the store refused: written with the next report that gets through."""
        self._since_pruned = 0
        self.received: Counter[tuple[str, str]] = Counter()
        """Reports received since start, by origin and what became of them (action)."""
        self.truncated: Counter[str] = Counter()
        """Alerts left out of payloads since start, by who left them out (``alertmanager``
        for its ``max_alerts``, ``phoenix`` for more than it reads in one payload)."""
        self.last_truncation: tuple[datetime, str] | None = None
        """When alerts were last left out, and how many by whom (for ``/health``)."""
        self._lock = asyncio.Lock()
        """Reports are taken one at a time: two copies of one alert arriving together must
        not both open an incident."""

    @property
    def unsaved(self) -> int:
        """Keys received but not yet in the store (the database refused them)."""
        return len(self._unsaved)

    def restore(self, unresolved: Iterable[Incident], seen: Iterable[SeenReport] = ()) -> None:
        """Keys a previous run received (oldest first), and those in the evidence of the
        incidents it left open."""
        for record in seen:
            self._remember(
                record.key,
                _Seen(
                    record.service,
                    record.incident_id,
                    record.holds_open,
                    record.seen_at,
                    record.resolved,
                ),
            )
        for incident in unresolved:
            for line in incident.evidence:
                key = line.removeprefix(KEY_EVIDENCE)
                if key != line and key not in self._seen:
                    self._remember(
                        key, _Seen(incident.service, incident.id, True, incident.detected_at)
                    )

    async def receive(self, report: FailureReport) -> ReportResult:
        async with self._lock:
            if report.firing:
                result = await self._firing(report)
            else:
                result = await self._resolved(report)
        self.received[(report.origin.value, result.action.value)] += 1
        return result

    def note_unmapped(self, origin: ReportOrigin) -> None:
        """A report that never became one: invalid, or naming no service Phoenix knows."""
        self.received[(origin.value, ReportAction.IGNORED.value)] += 1

    def note_truncated(self, *, by_sender: int, by_phoenix: int, limit: int) -> None:
        """Alerts of one payload that Phoenix did not act on: ``by_sender`` left out by
        Alertmanager (its ``max_alerts``), ``by_phoenix`` beyond the ``limit`` Phoenix reads
        in one payload."""
        if not by_sender and not by_phoenix:
            return
        self.truncated["alertmanager"] += by_sender
        self.truncated["phoenix"] += by_phoenix
        parts = [f"{by_sender} by Alertmanager (max_alerts)"] if by_sender else []
        if by_phoenix:
            parts.append(f"{by_phoenix} by Phoenix (over {limit} in one payload)")
        self.last_truncation = (self._now(), ", ".join(parts))

    # -- keys -------------------------------------------------------------------------------

    def _remember(self, key: str, seen: _Seen) -> None:
        self._forget_holder(key)
        self._seen[key] = seen
        self._seen.move_to_end(key)
        if seen.holds_open and not seen.resolved and seen.incident_id is not None:
            self._holding.setdefault(seen.incident_id, set()).add(key)
        while len(self._seen) > REMEMBERED:
            # The oldest that keeps no incident open goes first: forgetting a holder would
            # leave its incident open with no resolution to close it.
            oldest = next(
                (k for k, v in self._seen.items() if not (v.holds_open and not v.resolved)),
                next(iter(self._seen)),
            )
            self._forget_holder(oldest)
            del self._seen[oldest]

    def _forget_holder(self, key: str) -> None:
        known = self._seen.get(key)
        if known is None or known.incident_id is None:
            return
        holders = self._holding.get(known.incident_id)
        if holders is not None:
            holders.discard(key)
            if not holders:
                del self._holding[known.incident_id]

    async def _keep(self, key: str, seen: _Seen) -> None:
        """Write ``key``'s state to the store (and what it refused before). A refusal does
        not fail the report: the key works from memory and is written with a later one."""
        self._unsaved.pop(key, None)
        self._unsaved[key] = seen.record(key)
        if self._journal is None:
            self._unsaved.clear()
            return
        try:
            for waiting_key, record in list(self._unsaved.items()):
                await self._journal.save(record)
                del self._unsaved[waiting_key]
        except UnavailableError as exc:
            log.warning("report key(s) kept in memory for now: %s", exc.message)
            while len(self._unsaved) > REMEMBERED:
                del self._unsaved[next(iter(self._unsaved))]
            return
        self._since_pruned += 1
        if self._since_pruned >= PRUNED_EVERY:
            self._since_pruned = 0
            try:
                await self._journal.prune(self._now() - KEPT_FOR, REMEMBERED)
            except UnavailableError as exc:
                log.warning("report keys not pruned: %s", exc.message)

    # -- firing -----------------------------------------------------------------------------

    async def _firing(self, report: FailureReport) -> ReportResult:
        now = self._now()
        if report.key is not None and report.key in self._seen:
            seen = self._seen[report.key]
            self._seen.move_to_end(report.key)
            if now - seen.seen_at >= RENEWED_AFTER:
                seen.seen_at = now
                await self._keep(report.key, seen)
            if seen.holds_open and not seen.resolved and seen.incident_id is not None:
                # Still firing: past the grace after a recovery, that recovery did not fix it.
                carried_on = await self._incidents.still_firing(report, seen.incident_id)
                if carried_on is not None:
                    return carried_on
            elif seen.incident_id is None and not seen.resolved:
                # It was stale (about a fixed failure): still firing long after, it is not.
                again = await self._incidents.open_reported(report, repeated=True)
                if again.action is not ReportAction.STALE:
                    return await self._opened(report, report.key, again, now)
            return ReportResult(
                ReportAction.DUPLICATE,
                "already received" + (" (and resolved)" if seen.resolved else ""),
                service=report.service,
                incident_id=seen.incident_id,
            )
        result = await self._incidents.open_reported(report)
        return await self._opened(report, report.key, result, now)

    async def _opened(
        self, report: FailureReport, key: str | None, result: ReportResult, now: datetime
    ) -> ReportResult:
        """Remember what ``report`` (``key``) led to: the incident it opened or joined."""
        incident_id = result.incident_id
        holds_open = incident_id is not None and (
            result.action in (ReportAction.RECOVERING, ReportAction.RECORDED)
            or incident_id in self._holding  # joined an incident a report opened
            or incident_id == self._by_service.get(report.service)
        )
        if key is None:
            if holds_open and incident_id is not None:
                self._by_service[report.service] = incident_id
            return result
        seen = _Seen(report.service, incident_id, holds_open, now)
        self._remember(key, seen)
        await self._keep(key, seen)
        return result

    # -- resolved ---------------------------------------------------------------------------

    async def _resolved(self, report: FailureReport) -> ReportResult:
        if report.key is None:
            incident_id = self._by_service.pop(report.service, None)
            if incident_id is None:
                return self._ignored(report, None, "no open incident came from this report")
            return await self._close(report, incident_id)
        seen = self._seen.get(report.key)
        if seen is None:
            # Its firing never arrived (or was forgotten): remember the resolution, so a
            # late copy of the firing does not open an incident for a failure that is over.
            seen = _Seen(report.service, None, False, self._now(), resolved=True)
            self._remember(report.key, seen)
            await self._keep(report.key, seen)
            return self._ignored(report, None, "no open incident came from this report")
        if seen.resolved:
            return self._ignored(report, seen.incident_id, "already resolved")
        self._forget_holder(report.key)
        seen.resolved = True
        seen.seen_at = self._now()
        await self._keep(report.key, seen)
        if seen.incident_id is None:
            return self._ignored(report, None, "no open incident came from this report")
        if not seen.holds_open:
            return self._ignored(
                report,
                seen.incident_id,
                f"incident {seen.incident_id} was not opened by a report: it closes when "
                "Phoenix sees the service healthy",
            )
        still = len(self._holding.get(seen.incident_id, ()))
        if still:
            return self._ignored(
                report,
                seen.incident_id,
                f"incident {seen.incident_id} stays open: {still} other report(s) about it "
                "still firing",
            )
        return await self._close(report, seen.incident_id)

    def _ignored(self, report: FailureReport, incident_id: str | None, why: str) -> ReportResult:
        return ReportResult(
            ReportAction.IGNORED, why, service=report.service, incident_id=incident_id
        )

    async def _close(self, report: FailureReport, incident_id: str) -> ReportResult:
        if self._incidents.open_incident_id(report.service) != incident_id:
            return self._ignored(report, incident_id, f"incident {incident_id} is no longer open")
        why = f"{report.origin.value} reported it resolved"
        return await self._incidents.close_reported(report.service, incident_id, why)
