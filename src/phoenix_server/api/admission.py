"""Admission: at most a few requests inside the app at once; the rest wait their turn.

Under a flood (2,000 clients at once), every accepted request is a task whose first steps
run middleware, validation and the handler. Let them all in and each turn of the event
loop runs thousands of steps: every answer, ``/health``'s included, waits behind all of
them, and work continues for callers long gone. Admitted in turn, a waiting request costs
one cheap await, a turn of the loop stays short, and the requests in flight finish fast.

Streams (server-sent events) live as long as their client and do not take a turn.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

IN_FLIGHT = 32
"""Requests inside the app at once. Enough to overlap database waits, few enough that a
turn of the loop stays in the low milliseconds on a 2-core machine."""
STREAMS = ("/api/stream",)
"""Paths that stay open for their client's lifetime."""


class AdmissionLimit:
    def __init__(self, app: ASGIApp, in_flight: int = IN_FLIGHT) -> None:
        self.app = app
        self._turns = asyncio.Semaphore(in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in STREAMS:
            await self.app(scope, receive, send)
            return
        async with self._turns:
            await self.app(scope, receive, send)
