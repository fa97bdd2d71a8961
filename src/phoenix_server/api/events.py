"""``POST /api/events``: failure notifications from chaos tooling or a health-monitor feed.

The body is ``{"events": [...]}`` (1 to 1,000), each event::

    {"service": "azora-auth", "kind": "failure", "failureType": "service_down",
     "source": "chaos-monkey", "message": "killed pod azora-auth-7f9", "id": "chaos-4711",
     "recover": true}

``kind`` is ``failure`` (the service is failing: an incident opens, and Phoenix recovers
it unless ``recover`` is false) or ``recovered`` (closes the incident an earlier event
opened). ``failureType`` defaults to ``unknown``; ``source`` names the sender (default
``event``); ``id`` makes resending safe — an event with an id seen before changes nothing,
and a ``recovered`` event with the same id as its ``failure`` closes exactly that incident.
Every event is checked before any acts: an unknown service is a 422 naming the event.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field

from phoenix_server.api.common import RuntimeDep, StorableText, StrictInput, WireModel
from phoenix_server.api.forwarding import pass_part, split_by_owner
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.reports import FailureReport, ReportAction, ReportOrigin

router = APIRouter(prefix="/api/events", tags=["events"])

MAX_EVENTS = 1000


class EventIn(StrictInput):
    service: StorableText = Field(min_length=1, max_length=128)
    kind: Literal["failure", "recovered"]
    failure_type: FailureType = FailureType.UNKNOWN
    source: StorableText = Field("event", min_length=1, max_length=64)
    message: StorableText = Field("", max_length=2000)
    id: StorableText | None = Field(None, min_length=1, max_length=128)
    recover: bool = True


class EventsIn(StrictInput):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventResultOut(WireModel):
    index: int
    service: str
    action: ReportAction
    reason: str
    incident_id: str | None
    recovery_id: str | None


class EventsReceived(WireModel):
    success: bool = True
    received: int
    results: list[EventResultOut]


def report_of(event: EventIn) -> FailureReport:
    summary = f"{event.source} reported {event.service} failing" + (
        f": {event.message}" if event.message else ""
    )
    return FailureReport(
        service=event.service,
        firing=event.kind == "failure",
        origin=ReportOrigin.EVENT,
        # The same id for a failure and its recovery: the recovery finds what it opened.
        key=f"event:{event.source}:{event.id}" if event.id else None,
        failure_type=event.failure_type,
        summary=summary,
        evidence=(f"event from {event.source}" + (f" (id {event.id})" if event.id else ""),),
        recover=event.recover,
    )


@router.post("", response_model=EventsReceived, response_model_by_alias=True)
async def receive_events(body: EventsIn, runtime: RuntimeDep, request: Request) -> EventsReceived:
    """Each event's effect, in order (see the module description for the shape). With
    several replicas, events about services another replica owns are passed on to it."""
    problems = [
        Problem(f"events[{index}].service", f"unknown service '{event.service}'")
        for index, event in enumerate(body.events)
        if event.service not in runtime.catalog
    ]
    if problems:
        raise InvalidRequestError(
            f"{len(problems)} event(s) name an unknown service; none was processed", problems
        )
    parts = split_by_owner(request, runtime, [event.service for event in body.events])
    passed: dict[int, EventResultOut] = {}
    for owner, positions in parts.values():
        part = {"events": [body.events[i].model_dump(by_alias=True) for i in positions]}
        answer = await pass_part(request, runtime, owner, part)
        for result in answer.get("results", []):
            position = positions[result["index"]]
            passed[position] = EventResultOut.model_validate({**result, "index": position})
    results = []
    for index, event in enumerate(body.events):
        if index in passed:
            results.append(passed[index])
            continue
        result = await runtime.reports.receive(report_of(event))
        results.append(
            EventResultOut(
                index=index,
                service=event.service,
                action=result.action,
                reason=result.reason,
                incident_id=result.incident_id,
                recovery_id=result.recovery_id,
            )
        )
    return EventsReceived(received=len(body.events), results=results)
