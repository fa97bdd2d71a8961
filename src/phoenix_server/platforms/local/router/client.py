"""Phoenix's side of a router's control socket."""

from __future__ import annotations

import aiohttp

from phoenix_server.domain.errors import PlatformError
from phoenix_server.platforms.local.router.config import RouterConfig, RouterStats

TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class RouterClient:
    def __init__(self, socket_path: str) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path), timeout=TIMEOUT
        )
        self._path = socket_path

    async def push(self, config: RouterConfig) -> None:
        """Replace the router's configuration (it keeps it across its own restarts)."""
        try:
            async with self._session.put("http://router/config", data=config.to_json()) as answer:
                if answer.status != 200:
                    raise PlatformError(
                        f"router refused its configuration: {answer.status} {await answer.text()}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PlatformError(f"router control {self._path} unreachable: {exc}") from None

    async def config(self) -> RouterConfig:
        return RouterConfig.from_json(await self._get("/config"))

    async def stats(self) -> RouterStats:
        return RouterStats.from_json(await self._get("/stats"))

    async def _get(self, path: str) -> str:
        try:
            async with self._session.get(f"http://router{path}") as answer:
                answer.raise_for_status()
                return await answer.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PlatformError(f"router control {self._path} unreachable: {exc}") from None

    async def close(self) -> None:
        await self._session.close()
