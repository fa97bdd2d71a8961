"""Phoenix's side of a router's control socket."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from phoenix_server.domain.errors import PlatformError
from phoenix_server.platforms.router.config import RouterConfig, RouterStats

TIMEOUT = aiohttp.ClientTimeout(total=2.0)
REAPPEARS_WITHIN = 1.5
"""Seconds a missing control socket is waited for: a live router listens again within
about half a second of its path being deleted (see the router's keep_control_socket)."""


A = TypeVar("A")
T = TypeVar("T")


def _socket_missing(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno == errno.ENOENT
    return isinstance(exc, FileNotFoundError)


class RouterClient:
    def __init__(self, socket_path: str) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path), timeout=TIMEOUT
        )
        self._path = socket_path

    async def push(self, config: RouterConfig) -> None:
        """Replace the router's configuration (it keeps it across its own restarts)."""
        await self._call(self._put_config, config)

    async def _put_config(self, config: RouterConfig) -> None:
        async with self._session.put("http://router/config", data=config.to_json()) as answer:
            if answer.status != 200:
                raise PlatformError(
                    f"router refused its configuration: {answer.status} {await answer.text()}"
                )

    async def config(self) -> RouterConfig:
        return RouterConfig.from_json(await self._get("/config"))

    async def stats(self) -> RouterStats:
        return RouterStats.from_json(await self._get("/stats"))

    async def _get(self, path: str) -> str:
        return await self._call(self._read, path)

    async def _read(self, path: str) -> str:
        async with self._session.get(f"http://router{path}") as answer:
            answer.raise_for_status()
            return await answer.text()

    async def _call(self, call: Callable[[A], Awaitable[T]], argument: A) -> T:
        """``call(argument)``, waiting a moment for a control socket whose path is gone."""
        deadline = time.monotonic() + REAPPEARS_WITHIN
        while True:
            try:
                return await call(argument)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if _socket_missing(exc) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    continue
                raise PlatformError(f"router control {self._path} unreachable: {exc}") from None

    async def close(self) -> None:
        await self._session.close()
