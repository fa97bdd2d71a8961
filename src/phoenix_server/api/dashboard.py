"""The dashboard at ``/`` (static files under ``/static``) and its live feed.

``GET /api/stream`` is a server-sent-event stream (``text/event-stream``): a ``snapshot``
event at once and whenever something changed (at once on a status change, otherwise looked
at every :data:`STREAM_EVERY` seconds), with Phoenix's health, every service's status and
metrics, and the recoveries running now with their steps; a comment line every
:data:`KEEPALIVE` seconds keeps proxies from closing a quiet stream. It needs the ``viewer``
role (a browser signs in once and carries the session cookie).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse

from phoenix_server.api.common import RuntimeDep
from phoenix_server.api.engine import Engine
from phoenix_server.api.health import health_json, services_listing
from phoenix_server.api.recoveries import recovery_out
from phoenix_server.domain.errors import NotFoundError, PhoenixError
from phoenix_server.domain.health import HealthTransition
from phoenix_server.store import recoveries
from phoenix_server.web import STATIC

router = APIRouter(tags=["dashboard"])

STREAM_EVERY = 0.5
KEEPALIVE = 15.0


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    known = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in known:
        raise NotFoundError(f"no dashboard file '{name}'")
    return FileResponse(known[name], headers={"Cache-Control": "no-cache"})


async def snapshot(runtime: Engine) -> dict[str, Any]:
    """What the dashboard shows live."""
    active = []
    for spec in runtime.catalog:
        running = runtime.active_recovery(spec.name)
        if running is None:
            continue
        try:
            stored = await runtime.store.read(recoveries.get_recovery, running.id)
        except PhoenixError:
            stored = running  # not written yet, or the database is away: what is known
        active.append(recovery_out(stored).model_dump(by_alias=True, mode="json"))
    return {
        "phoenix": json.loads(health_json(runtime)),
        "services": services_listing(runtime),
        "active": active,
    }


def _without_clock(data: dict[str, Any]) -> str:
    """The snapshot minus what changes every instant (timestamps), to see real changes."""
    stable = {**data, "phoenix": {**data["phoenix"], "timestamp": None}}
    stable["services"] = [{**s, "lastCheck": None} for s in data["services"]]
    return json.dumps(stable, sort_keys=True)


@router.get("/api/stream", response_class=StreamingResponse)
async def stream(request: Request, runtime: RuntimeDep) -> StreamingResponse:
    """Server-sent events: ``snapshot`` (JSON) at once and on every change."""

    changed = asyncio.Event()

    def wake(_: HealthTransition) -> None:
        changed.set()  # a status changed: send it now, not at the next look

    async def events() -> AsyncIterator[str]:
        runtime.watch_health(wake)
        try:
            last, quiet = "", 0.0
            while not await request.is_disconnected():
                changed.clear()
                data = await snapshot(runtime)
                seen = _without_clock(data)
                if seen != last:
                    last, quiet = seen, 0.0
                    yield f"event: snapshot\ndata: {json.dumps(data)}\n\n"
                elif quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STREAM_EVERY):
                        await changed.wait()
                quiet += STREAM_EVERY
        finally:
            runtime.unwatch_health(wake)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
