"""The router's control socket: Phoenix reads and replaces the configuration, reads counters.

A Unix socket in Phoenix's data directory (only the owner can reach it), speaking small JSON
over HTTP. Every accepted configuration is also written to the router's state file, so a
router that is itself restarted comes back with what it was last told.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from phoenix_server.platforms.router.config import RouterConfig
from phoenix_server.platforms.router.proxy import Router


def save_state(path: Path, config: RouterConfig) -> None:
    """Write atomically: a router killed mid-write keeps the previous state."""
    temporary = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)  # the run directory may have been deleted
    temporary.write_text(config.to_json(), encoding="utf-8")
    os.replace(temporary, path)


def load_state(path: Path, service: str) -> RouterConfig:
    try:
        config = RouterConfig.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RouterConfig(service=service)
    return config if config.service == service else RouterConfig(service=service)


def control_app(router: Router, state_path: Path) -> web.Application:
    async def get_config(request: web.Request) -> web.Response:
        return web.Response(text=router.config.to_json(), content_type="application/json")

    async def put_config(request: web.Request) -> web.Response:
        try:
            config = RouterConfig.from_json(await request.text())
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"invalid router configuration: {exc}") from None
        if config.service != router.config.service:
            raise web.HTTPBadRequest(text=f"this router serves {router.config.service!r}")
        if config.version < router.config.version:
            raise web.HTTPConflict(
                text=f"stale configuration {config.version} < {router.config.version}"
            )
        router.apply(config)
        save_state(state_path, config)
        return web.json_response({"version": config.version})

    async def get_stats(request: web.Request) -> web.Response:
        return web.Response(text=router.snapshot().to_json(), content_type="application/json")

    app = web.Application()
    app.add_routes(
        [
            web.get("/config", get_config),
            web.put("/config", put_config),
            web.get("/stats", get_stats),
        ]
    )
    return app
