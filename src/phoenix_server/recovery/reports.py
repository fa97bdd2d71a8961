"""Failure reports from outside (Alertmanager, chaos tooling, a health monitor) into incidents.

Senders repeat themselves: Alertmanager re-sends a firing alert at every group interval,
and a webhook sender retries what it is unsure was received. A report with a key seen
before changes nothing; the key also remembers which incident it opened, so the matching
resolution closes exactly that incident — and never one Phoenix opened on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from phoenix_server.domain.reports import FailureReport, ReportAction, ReportResult

REMEMBERED = 10_000
"""Report keys kept (oldest forgotten first)."""


class ReportedIncidents(Protocol):
    """What the intake needs from the orchestrator."""

    async def open_reported(self, report: FailureReport) -> ReportResult: ...

    async def close_reported(self, service: str, incident_id: str, why: str) -> ReportResult: ...

    def open_incident_id(self, service: str) -> str | None: ...


class ReportIntake:
    def __init__(self, incidents: ReportedIncidents) -> None:
        self._incidents = incidents
        self._opened: OrderedDict[str, str | None] = OrderedDict()
        """Report key → the incident it opened or joined (None: it opened none)."""
        self._by_service: dict[str, str] = {}
        """Per service, the incident the latest keyless firing report opened."""

    async def receive(self, report: FailureReport) -> ReportResult:
        if report.firing:
            return await self._firing(report)
        return await self._resolved(report)

    async def _firing(self, report: FailureReport) -> ReportResult:
        if report.key is not None and report.key in self._opened:
            self._opened.move_to_end(report.key)
            return ReportResult(
                ReportAction.DUPLICATE,
                "already received",
                service=report.service,
                incident_id=self._opened[report.key],
            )
        result = await self._incidents.open_reported(report)
        opened = result.incident_id
        if result.action not in (ReportAction.RECOVERING, ReportAction.RECORDED):
            opened = None  # joined Phoenix's own incident: Phoenix closes that one
        if report.key is None and opened is not None:
            self._by_service[report.service] = opened
        if report.key is not None:
            self._opened[report.key] = opened
            while len(self._opened) > REMEMBERED:
                self._opened.popitem(last=False)
        return result

    async def _resolved(self, report: FailureReport) -> ReportResult:
        if report.key is not None:
            incident_id = self._opened.pop(report.key, None)
        else:
            incident_id = self._by_service.pop(report.service, None)
        if incident_id is None:
            return ReportResult(
                ReportAction.IGNORED,
                "no open incident came from this report",
                service=report.service,
            )
        if self._incidents.open_incident_id(report.service) != incident_id:
            return ReportResult(
                ReportAction.IGNORED,
                f"incident {incident_id} is no longer open",
                service=report.service,
                incident_id=incident_id,
            )
        why = f"{report.origin.value} reported it resolved"
        return await self._incidents.close_reported(report.service, incident_id, why)
