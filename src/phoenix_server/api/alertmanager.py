"""``POST /api/alerts/alertmanager``: Prometheus Alertmanager's webhook (payload version 4).

Point an Alertmanager receiver at it (``webhook_configs: [{url: http://phoenix:3051/api/
alerts/alertmanager}]``). Each alert names its service by a label (``service`` unless
``PHOENIX_ALERTMANAGER_LABEL`` says otherwise). A firing alert opens an incident — typed by
a ``failure_type`` label when it has one, else ``unknown`` — and Phoenix acts on it: a
playbook with an ``alert`` trigger naming the ``alertname`` runs first, else the learned or
default policy (a ``phoenix_recover: "false"`` label records it without acting). The same
alert sent again (same fingerprint and start) changes nothing; its resolution closes the
incident it opened. Alerts Phoenix cannot map are reported back in the answer, never a
reason to refuse the batch (Alertmanager would retry it forever).

Alertmanager adds fields over time: unknown ones are ignored here, unlike Phoenix's own
request bodies.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from phoenix_server.api.common import RuntimeDep, StorableText, UtcTime, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.api.forwarding import pass_part, split_by_owner
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin, ReportResult
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

MAX_ALERTS = 1000
"""Alerts read from one payload; the rest are answered as ``skipped`` (never a 4xx, which
Alertmanager would retry forever): set ``max_alerts`` in the receiver to at most this."""
MAX_LABELS = 64
"""Labels shown in an incident's evidence (all of them count for the fingerprint)."""
MAX_TEXT = 512
"""Longest text taken from an alert into a record (longer is shortened, not refused)."""

log = logging.getLogger("phoenix.api")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


Text = StorableText
"""A string of an alert: the alerts arrive as raw JSON objects, checked one by one here."""


class AlertIn(_Lenient):
    """One alert, checked on its own: a bad one is answered ``ignored``, never a reason to
    refuse the rest (Alertmanager does not retry a 4xx)."""

    status: Literal["firing", "resolved"]
    labels: dict[Text, Text]
    annotations: dict[Text, Text] = Field(default_factory=dict)
    starts_at: UtcTime | None = Field(None, alias="startsAt")
    ends_at: UtcTime | None = Field(None, alias="endsAt")
    generator_url: Text | None = Field(None, alias="generatorURL")
    fingerprint: Text | None = None


class AlertmanagerPayload(_Lenient):
    version: Literal["4"]
    """Alertmanager's webhook payload version; Phoenix understands version 4."""
    status: Literal["firing", "resolved"] | None = None
    receiver: str | None = None
    group_key: str | None = Field(None, alias="groupKey")
    external_url: str | None = Field(None, alias="externalURL")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    alerts: list[dict[str, Any]]


class AlertResultOut(WireModel):
    index: int
    alertname: str | None
    fingerprint: str | None
    action: ReportAction
    reason: str
    service: str | None
    incident_id: str | None
    recovery_id: str | None


class AlertsReceived(WireModel):
    success: bool = True
    received: int
    truncated: int
    """Alerts Alertmanager left out of this payload (``truncatedAlerts``): their groups'
    other alerts were received; raise ``max_alerts`` in the receiver to get them all."""
    skipped: int = 0
    """Alerts of this payload beyond the first 1,000, not read: set ``max_alerts`` to at
    most 1,000 in the receiver."""
    results: list[AlertResultOut]


def _fingerprint(alert: AlertIn) -> str:
    """Alertmanager's own fingerprint; for senders that omit it, a digest of the labels."""
    if alert.fingerprint:
        return alert.fingerprint[:MAX_TEXT]
    labels = "\n".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return "labels-" + hashlib.sha256(labels.encode()).hexdigest()[:32]


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


async def _pass_on(
    request: Request, runtime: Engine, alerts: list[dict[str, Any]], label: str
) -> dict[int, AlertResultOut]:
    """The owners' results for the alerts other replicas own, by position in ``alerts``."""
    parts = split_by_owner(request, runtime, [_label_of(raw, label) for raw in alerts])
    if not parts:
        return {}
    envelope = await request.json()
    passed: dict[int, AlertResultOut] = {}
    for owner, positions in parts.values():
        part = {**envelope, "alerts": [alerts[i] for i in positions], "truncatedAlerts": 0}
        answer = await pass_part(request, runtime, owner, part)
        for result in answer.get("results", []):
            position = positions[result["index"]]
            passed[position] = AlertResultOut.model_validate({**result, "index": position})
    return passed


def _label_of(raw: dict[str, Any], label: str) -> str | None:
    labels = raw.get("labels")
    value = labels.get(label) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else None


def report_of(alert: AlertIn, service: str) -> FailureReport:
    name = alert.labels.get("alertname")
    wanted = alert.labels.get("failure_type", "")
    known = {t.value for t in FailureType}
    failure_type = FailureType(wanted) if wanted in known else FailureType.UNKNOWN
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    summary = _short(f"Alertmanager alert {name or '(unnamed)'}" + (f": {text}" if text else ""))
    labels = sorted(alert.labels.items())[:MAX_LABELS]
    evidence = [_short("labels: " + ", ".join(f"{k}={v}" for k, v in labels))]
    if alert.starts_at is not None:
        evidence.append(f"firing since {iso_ms(alert.starts_at)}")
    if alert.generator_url:
        evidence.append(_short(f"source: {alert.generator_url}"))
    started = iso_ms(alert.starts_at) if alert.starts_at else ""
    return FailureReport(
        service=service,
        firing=alert.status == "firing",
        origin=ReportOrigin.ALERTMANAGER,
        key=f"am:{_fingerprint(alert)}@{started}",
        failure_type=failure_type,
        summary=summary,
        evidence=tuple(evidence),
        alert_name=name[:MAX_TEXT] if name else None,
        recover=alert.labels.get("phoenix_recover", "true").lower() != "false",
        started_at=alert.starts_at,
    )


@router.post("/alertmanager", response_model=AlertsReceived, response_model_by_alias=True)
async def receive_alertmanager(
    payload: AlertmanagerPayload, runtime: RuntimeDep, request: Request
) -> AlertsReceived:
    """Each alert's effect, in order: an incident opened (and a recovery started), joined,
    resolved, a duplicate, stale, or ignored with the reason. Alerts beyond the first 1,000
    are not read (``skipped``), and the payload is still accepted. With several replicas,
    the alerts about services another replica owns are passed on to it (503 for the whole
    payload if one cannot be: Alertmanager sends it again, what was done is a duplicate)."""
    label = runtime.settings.alertmanager_label
    read, skipped = payload.alerts[:MAX_ALERTS], payload.alerts[MAX_ALERTS:]
    passed = await _pass_on(request, runtime, read, label)
    if payload.truncated_alerts or skipped:
        log.warning(
            "alerts left out of an Alertmanager payload: %d by Alertmanager (truncatedAlerts: "
            "raise max_alerts), %d by Phoenix (over %d)",
            payload.truncated_alerts,
            len(skipped),
            MAX_ALERTS,
        )
        runtime.reports.note_truncated(
            by_sender=payload.truncated_alerts, by_phoenix=len(skipped), limit=MAX_ALERTS
        )
    results = []
    for index, raw in enumerate(read):
        if index in passed:
            results.append(passed[index])
            continue
        try:
            alert = AlertIn.model_validate(raw)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "alert"
            message = str(problem["msg"]).removeprefix("Value error, ")
            runtime.reports.note_unmapped(ReportOrigin.ALERTMANAGER)
            results.append(
                AlertResultOut(
                    index=index,
                    alertname=None,
                    fingerprint=None,
                    action=ReportAction.IGNORED,
                    reason=f"not a valid alert: {where}: {message}",
                    service=None,
                    incident_id=None,
                    recovery_id=None,
                )
            )
            continue
        name = alert.labels.get("alertname")
        service = alert.labels.get(label)
        known = service is not None and service in runtime.catalog
        result: ReportResult
        if service is not None and known:
            result = await runtime.reports.receive(report_of(alert, service))
        else:
            runtime.reports.note_unmapped(ReportOrigin.ALERTMANAGER)
            result = ReportResult(
                ReportAction.IGNORED,
                f"the alert has no '{label}' label"
                if service is None
                else f"unknown service '{_short(service)}' (label '{label}')",
            )
        results.append(
            AlertResultOut(
                index=index,
                alertname=_short(name) if name else None,
                fingerprint=_fingerprint(alert),
                action=result.action,
                reason=result.reason,
                service=service if known else None,
                incident_id=result.incident_id,
                recovery_id=result.recovery_id,
            )
        )
    return AlertsReceived(
        received=len(payload.alerts),
        truncated=payload.truncated_alerts,
        skipped=len(skipped),
        results=results,
    )
