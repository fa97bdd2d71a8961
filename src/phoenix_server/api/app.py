"""The FastAPI application: routers, error envelope, and the runtime's lifespan."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from phoenix_server import __version__
from phoenix_server.api import (
    alertmanager,
    audit,
    cluster,
    dashboard,
    deployments,
    docs_ui,
    errors,
    events,
    health,
    incidents,
    learning,
    metrics,
    playbooks,
    prometheus,
    recoveries,
    services,
    sessions,
)
from phoenix_server.api.admission import AdmissionLimit
from phoenix_server.api.auth import Authorization
from phoenix_server.api.engine import Engine

DESCRIPTION = """Phoenix watches services, recovers them when they fail, and records
everything. Errors use one envelope: `{"success": false, "error": {"code", "message",
"details": [{"path", "message"}]}}`. Times are ISO 8601 UTC with milliseconds; durations are
seconds."""


def create_api(runtime: Engine) -> FastAPI:
    """The API over ``runtime``; starting the app starts the engine, stopping stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Phoenix",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their assets from a CDN: docs_ui serves them.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    docs_ui.install(app)
    # Outermost: a refused caller gets no further, and every mutating call is audited.
    app.state.sessions = sessions.Sessions()
    app.add_middleware(
        Authorization,
        tokens=runtime.tokens,
        audit=audit.audit_writer(runtime),
        sessions=app.state.sessions.holder,
    )
    # Outermost of all: requests enter the app a few at a time (see api.admission).
    app.add_middleware(AdmissionLimit)
    for module in (
        health,
        cluster,
        recoveries,
        services,
        deployments,
        playbooks,
        incidents,
        learning,
        metrics,
        alertmanager,
        events,
        audit,
        sessions,
        prometheus,
        dashboard,
    ):
        app.include_router(module.router)
    if os.environ.get("PHOENIX_BENCH_TRIVIAL") == "1":
        app.add_api_route(
            "/api/_bench/trivial", _bench_trivial, methods=["GET"], include_in_schema=False
        )
    return app


async def _bench_trivial() -> dict[str, bool]:
    """The cheapest route behind the same middleware, protocol and loop as the real ones:
    ``bench/api`` measures the framework's ceiling with it (``PHOENIX_BENCH_TRIVIAL=1``)."""
    return {"success": True}
