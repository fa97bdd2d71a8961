"""Admission: requests enter the app a few at a time (the rest wait cheaply, in order);
event streams are not counted."""

from __future__ import annotations

import asyncio
from typing import Any

from phoenix_server.api.admission import AdmissionLimit


async def test_no_more_than_the_limit_are_inside_the_app_and_all_are_served() -> None:
    inside = 0
    most = 0
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        await send({"path": scope["path"]})

    limited = AdmissionLimit(app, in_flight=3)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def nothing() -> Any:
        return {}

    calls = [
        asyncio.create_task(limited({"type": "http", "path": f"/r{i}"}, nothing, send))
        for i in range(10)
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == 3, "the rest wait their turn"
    stream = asyncio.create_task(limited({"type": "http", "path": "/api/stream"}, nothing, send))
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == 4, "a stream is not kept waiting behind requests"
    release.set()
    await asyncio.wait_for(asyncio.gather(*calls, stream), timeout=5)
    assert most == 4 and len(sent) == 11
