"""The processes inside fake containers: a real HTTP server on podIP:containerPort.

One low-level aiohttp server handles every pod's connections (it tells pods apart by the
address the connection came in on), so a pod costs one listening socket, not one
application: a fleet of hundreds stays cheap. A container's server answers according to its
behaviour at the moment of the request: 200 with the pod and image named, 503 when unready,
nothing at all when hung. When the container stops, its listener closes and its open
connections are cut, as when a process dies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .behaviour import Behaviour

Address = tuple[str, int]


@dataclass(eq=False)
class Endpoint:
    """What listens on one podIP:port."""

    namespace: str
    pod: str
    container: str
    image: str
    behaviour: Callable[[], Behaviour]
    listener: asyncio.Server | None = None
    transports: set[asyncio.Transport] = field(default_factory=set)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class PodServers:
    def __init__(self) -> None:
        self._server = web.Server(self._handle, access_log=None)
        self._endpoints: dict[Address, Endpoint] = {}

    async def open(self, address: Address, endpoint: Endpoint) -> None:
        await self.close(address)
        loop = asyncio.get_running_loop()
        endpoint.listener = await loop.create_server(self._server, *address, reuse_address=True)
        self._endpoints[address] = endpoint

    async def close(self, address: Address) -> None:
        endpoint = self._endpoints.pop(address, None)
        if endpoint is None:
            return
        endpoint.closed.set()
        if endpoint.listener is not None:
            endpoint.listener.close()
        for transport in list(endpoint.transports):
            transport.abort()  # the process is gone: its connections are reset
        if endpoint.listener is not None:
            await endpoint.listener.wait_closed()

    async def close_all(self) -> None:
        for address in list(self._endpoints):
            await self.close(address)
        await self._server.shutdown(timeout=1.0)

    def __len__(self) -> int:
        return len(self._endpoints)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport else None
        endpoint = self._endpoints.get((sockname[0], sockname[1])) if sockname else None
        if endpoint is None or transport is None:
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError  # nothing listens here any more
        endpoint.transports.add(transport)
        try:
            behaviour = endpoint.behaviour()
            if behaviour is Behaviour.HANG:
                # A hung process: the kernel accepted the connection, nobody answers.
                await endpoint.closed.wait()
                transport.abort()
                raise asyncio.CancelledError
            body = {
                "pod": endpoint.pod,
                "namespace": endpoint.namespace,
                "container": endpoint.container,
                "image": endpoint.image,
                "path": request.path,
            }
            status = 503 if behaviour is Behaviour.UNREADY else 200
            return web.Response(
                text=json.dumps(body), status=status, content_type="application/json"
            )
        finally:
            endpoint.transports.discard(transport)
