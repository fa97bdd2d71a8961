"""Failure reports from outside (Alertmanager, chaos tooling, a health monitor) into incidents.

Senders repeat themselves: Alertmanager re-sends a firing alert at every group interval
(and both members of an HA pair send it), and a webhook sender retries what it is unsure
was received. A report with a key seen before changes nothing — even after its resolution,
so a late copy of the firing alert does not reopen it (a new firing has a new start time,
hence a new key). The key also remembers which incident it opened, so the matching
resolution closes exactly that incident and never one Phoenix opened on its own. Keys live
in memory and in the incidents' evidence (``report key: …``), from which they are restored
when Phoenix starts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportResult

REMEMBERED = 10_000
"""Report keys kept (oldest forgotten first)."""
KEY_EVIDENCE = "report key: "


class ReportedIncidents(Protocol):
    """What the intake needs from the orchestrator."""

    async def open_reported(self, report: FailureReport) -> ReportResult: ...

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult: ...

    def open_incident_id(self, service: str) -> str | None: ...


class _Seen:
    """What a key led to: the incident it opened (None: it opened none), and whether its
    resolution came."""

    __slots__ = ("incident_id", "resolved")

    def __init__(self, incident_id: str | None) -> None:
        self.incident_id = incident_id
        self.resolved = False


class ReportIntake:
    def __init__(self, incidents: ReportedIncidents) -> None:
        self._incidents = incidents
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._by_service: dict[str, str] = {}
        """Per service, the incident the latest keyless firing report opened."""
        self._lock = asyncio.Lock()
        """Reports are taken one at a time: two copies of one alert arriving together must
        not both open an incident."""

    def restore(self, unresolved: Iterable[Incident]) -> None:
        """Keys of the incidents a previous run left open, from their evidence."""
        for incident in unresolved:
            for line in incident.evidence:
                if line.startswith(KEY_EVIDENCE):
                    self._remember(line.removeprefix(KEY_EVIDENCE), _Seen(incident.id))

    async def receive(self, report: FailureReport) -> ReportResult:
        async with self._lock:
            if report.firing:
                return await self._firing(report)
            return await self._resolved(report)

    def _remember(self, key: str, seen: _Seen) -> None:
        self._seen[key] = seen
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)

    async def _firing(self, report: FailureReport) -> ReportResult:
        if report.key is not None and report.key in self._seen:
            seen = self._seen[report.key]
            self._seen.move_to_end(report.key)
            return ReportResult(
                ReportAction.DUPLICATE,
                "already received" + (" (and resolved)" if seen.resolved else ""),
                service=report.service,
                incident_id=seen.incident_id,
            )
        result = await self._incidents.open_reported(report)
        opened = result.incident_id
        if result.action not in (ReportAction.RECOVERING, ReportAction.RECORDED):
            opened = None  # joined an incident it did not open: that one closes otherwise
            if result.action is ReportAction.JOINED and result.incident_id is not None:
                # It started the recovery of an incident it had recorded earlier.
                opened = result.incident_id if result.recovery_id else None
        if report.key is None and opened is not None:
            self._by_service[report.service] = opened
        if report.key is not None:
            self._remember(report.key, _Seen(opened))
        return result

    async def _resolved(self, report: FailureReport) -> ReportResult:
        incident_id: str | None
        if report.key is not None:
            seen = self._seen.get(report.key)
            incident_id = seen.incident_id if seen is not None else None
        else:
            seen = None
            incident_id = self._by_service.pop(report.service, None)
        if incident_id is None:
            if seen is not None:
                seen.resolved = True
            return ReportResult(
                ReportAction.IGNORED,
                "no open incident came from this report",
                service=report.service,
            )
        if self._incidents.open_incident_id(report.service) != incident_id:
            if seen is not None:
                seen.resolved = True
            return ReportResult(
                ReportAction.IGNORED,
                f"incident {incident_id} is no longer open",
                service=report.service,
                incident_id=incident_id,
            )
        why = f"{report.origin.value} reported it resolved"
        result = await self._incidents.close_reported(report.service, incident_id, why)
        if seen is not None and result.action is ReportAction.RESOLVED:
            seen.resolved = True  # kept: a late copy of the firing report is a duplicate
        return result
