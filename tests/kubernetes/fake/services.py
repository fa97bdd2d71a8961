"""Services: the endpoints controller and kube-proxy.

The apiserver gave each Service a loopback ``clusterIP``; here each service port gets a real
TCP proxy on clusterIP:port that forwards every new connection, round-robin, to a Ready pod
matching the selector (at podIP:targetPort, a named targetPort resolved through the pod's
container ports), chosen when the connection arrives: a selector switch or a pod going unready
shows in the very next connection. With no Ready pod the proxy stops listening, so a client
is refused as kube-proxy's REJECT rule refuses it. ``v1/Endpoints`` lists the Ready pods
(``addresses``) and the others with an IP (``notReadyAddresses``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import selectors
from .controllers import Context, Controller, Key, is_ready
from .resources import ENDPOINTS, PODS, SERVICES
from .store import Change

Obj = dict[str, Any]
ListenerKey = tuple[str, str, int]  # (namespace, service, port)


@dataclass(eq=False)
class _Listener:
    server: asyncio.Server
    turn: itertools.count[int] = field(default_factory=itertools.count)


class ServiceController(Controller):
    name = "service-controller"
    kinds = (SERVICES,)
    related = (PODS,)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._listeners: dict[ListenerKey, _Listener] = {}
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.resource is SERVICES:
            return [(change.namespace, change.name)]
        keys = []
        for service in self.ctx.store.list(SERVICES, change.namespace):
            selector = service["spec"].get("selector")
            if not selector:
                continue
            for pod in (change.old, change.new):
                if pod is not None and selectors.matches(
                    _selector(selector), pod["metadata"].get("labels")
                ):
                    keys.append((change.namespace, service["metadata"]["name"]))
                    break
        return keys

    def backends(self, service: Obj) -> tuple[list[Obj], list[Obj]]:
        """(Ready pods, other pods with an IP) selected by the service, in name order."""
        selector = service["spec"].get("selector")
        if not selector:
            return [], []
        ready, unready = [], []
        for pod in self.ctx.store.list(PODS, service["metadata"]["namespace"]):
            if not selectors.matches(_selector(selector), pod["metadata"].get("labels")):
                continue
            if not (pod.get("status") or {}).get("podIP"):
                continue
            if is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                ready.append(pod)
            else:
                unready.append(pod)
        return ready, unready

    async def sync(self, key: Key) -> float | None:
        namespace, name = key
        service = self.ctx.store.get(SERVICES, namespace, name)
        if service is None:
            await self._close_listeners(namespace, name)
            return None
        if not service["spec"].get("selector"):
            return None  # endpoints of a selector-less service are the user's to manage
        # The proxy first: once Endpoints list a pod, connections to the service reach it.
        await self._proxy(service, bool(self.backends(service)[0]))
        service = self.ctx.store.get(SERVICES, namespace, name)
        if service is not None:
            self._write_endpoints(service, *self.backends(service))
        return None

    # -- endpoints -----------------------------------------------------------------------

    def _write_endpoints(self, service: Obj, ready: list[Obj], unready: list[Obj]) -> None:
        meta = service["metadata"]
        subset: Obj = {}
        if ready:
            subset["addresses"] = [_address(p, self.ctx.node) for p in ready]
        if unready:
            subset["notReadyAddresses"] = [_address(p, self.ctx.node) for p in unready]
        endpoints: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "labels": dict(meta.get("labels") or {}),
            },
        }
        if subset:
            pod = (ready or unready)[0]
            ports = []
            for port in service["spec"].get("ports") or []:
                entry: Obj = {
                    "port": _target_port(port, pod),
                    "protocol": port.get("protocol", "TCP"),
                }
                if port.get("name"):
                    entry["name"] = port["name"]
                ports.append(entry)
            subset["ports"] = ports
            endpoints["subsets"] = [subset]
        current = self.ctx.store.get(ENDPOINTS, meta["namespace"], meta["name"])
        if current is None:
            self.ctx.registry.create(ENDPOINTS, meta["namespace"], endpoints)
            return
        wanted = copy.deepcopy(current)
        wanted["metadata"]["labels"] = endpoints["metadata"]["labels"]
        wanted.pop("subsets", None)
        if "subsets" in endpoints:
            wanted["subsets"] = endpoints["subsets"]
        if wanted != current:
            self.ctx.registry.update(ENDPOINTS, meta["namespace"], meta["name"], wanted)

    # -- kube-proxy ----------------------------------------------------------------------

    async def _proxy(self, service: Obj, serving: bool) -> None:
        meta, spec = service["metadata"], service["spec"]
        ip = spec.get("clusterIP")
        wanted: set[ListenerKey] = set()
        if serving and ip and ip != "None":
            wanted = {(meta["namespace"], meta["name"], p["port"]) for p in spec.get("ports") or []}
        for key in [k for k in self._listeners if k[:2] == (meta["namespace"], meta["name"])]:
            if key not in wanted:
                self._listeners.pop(key).server.close()
        for key in wanted - set(self._listeners):
            port = key[2]
            handler = self._handler(meta["namespace"], meta["name"], port)
            try:
                server = await asyncio.start_server(handler, ip, port, reuse_address=True)
            except OSError as exc:
                self.ctx.failures.append(
                    f"service proxy {key}: cannot listen on {ip}:{port}: {exc}"
                )
                continue
            self._listeners[key] = _Listener(server)

    def _handler(self, namespace: str, name: str, port: int) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._pipes.add(task)
            self._writers.add(writer)
            try:
                await self._forward(namespace, name, port, reader, writer)
            finally:
                self._writers.discard(writer)
                if task is not None:
                    self._pipes.discard(task)

        return handle

    async def _forward(
        self,
        namespace: str,
        name: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        service = self.ctx.store.get(SERVICES, namespace, name)
        listener = self._listeners.get((namespace, name, port))
        ready = self.backends(service)[0] if service is not None else []
        if service is None or listener is None or not ready:
            writer.transport.abort()
            return
        pod = ready[next(listener.turn) % len(ready)]
        spec_port = next(p for p in service["spec"]["ports"] if p["port"] == port)
        target = (pod["status"]["podIP"], _target_port(spec_port, pod))
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self._writers.discard(upstream_writer)
            for end in (writer, upstream_writer):
                end.close()

    async def _close_listeners(self, namespace: str, name: str) -> None:
        for key in [k for k in self._listeners if k[:2] == (namespace, name)]:
            self._listeners.pop(key).server.close()

    async def stop(self) -> None:
        for listener in self._listeners.values():
            listener.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        for listener in self._listeners.values():
            with contextlib.suppress(Exception):
                await listener.server.wait_closed()
        self._listeners.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


def _selector(labels: dict[str, str]) -> selectors.Selector:
    return tuple(selectors.Requirement(k, "=", (v,)) for k, v in labels.items())


def _target_port(port: Obj, pod: Obj) -> int:
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for container in pod["spec"].get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == target:
                return int(declared["containerPort"])
    return int(port["port"])


def _address(pod: Obj, node: str) -> Obj:
    meta = pod["metadata"]
    return {
        "ip": pod["status"]["podIP"],
        "nodeName": pod["spec"].get("nodeName", node),
        "targetRef": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
