"""The cluster's control loops, run as asyncio tasks in the test's event loop.

Each controller keeps a work queue of object keys, woken by the store's changes the way an
informer wakes a real controller, and syncs one key at a time. Controllers read the store and
write through the :class:`~.registry.Registry`, so their writes are validated and reach
watches exactly as a client's do (they are not in the server's request log: they are not
clients). A sync may ask to be run again after a delay (a progress deadline, a back-off).

A controller that raises is a bug in the harness: the error is kept in ``Context.failures``
and :class:`~.cluster.FakeCluster` reports it when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import traceback
from collections.abc import Iterable
from typing import Any

from . import errors
from .addresses import LoopbackNetwork
from .behaviour import Behaviours
from .events import EventRecorder
from .registry import Registry
from .resources import ResourceType
from .store import Change, Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
NODE_NAME = "fake-node-1"


class Context:
    """What every controller shares: the API, the clock's scale, the network, the events."""

    def __init__(
        self,
        registry: Registry,
        network: LoopbackNetwork,
        behaviours: Behaviours,
        *,
        time_scale: float,
        serve_pods: bool,
    ) -> None:
        self.registry = registry
        self.store: Store = registry.store
        self.network = network
        self.behaviours = behaviours
        self.events = EventRecorder(registry)
        self.time_scale = time_scale
        self.serve_pods = serve_pods
        self.node = NODE_NAME
        self.failures: list[str] = []
        # When each pod last became Ready, to the monotonic clock: object timestamps only
        # have whole seconds, too coarse for minReadySeconds at a reduced time scale.
        self.ready_since: dict[str, float] = {}

    def real(self, cluster_seconds: float) -> float:
        """Real seconds for a duration the cluster counts in its own seconds."""
        return cluster_seconds * self.time_scale

    def available(self, pod: Obj, min_ready_seconds: int) -> bool:
        """Ready for at least ``min_ready_seconds`` (of cluster time)."""
        wait = self.until_available(pod, min_ready_seconds)
        return wait is not None and wait <= 0

    def until_available(self, pod: Obj, min_ready_seconds: int) -> float | None:
        """Real seconds until a Ready pod counts as available (None: it is not Ready)."""
        if not is_ready(pod):
            return None
        since = self.ready_since.get(pod["metadata"].get("uid", ""))
        if since is None or min_ready_seconds <= 0:
            return 0.0
        return max(0.0, since + self.real(min_ready_seconds) - time.monotonic())


def is_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def is_active(pod: Obj) -> bool:
    """Counted by its controller: not terminating, not finished."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def controller_of(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_reference(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``."""
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


class WorkQueue:
    """Keys to sync, each at most once in the queue; delayed adds for requeues."""

    def __init__(self) -> None:
        self._pending: dict[Key, None] = {}
        self._wakeup = asyncio.Event()
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        self._pending[key] = None
        self._wakeup.set()

    def add_after(self, key: Key, delay: float) -> None:
        existing = self._timers.get(key)
        loop = asyncio.get_running_loop()
        if existing is not None and existing.when() <= loop.time() + delay:
            return  # an earlier wake-up is already due
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = next(iter(self._pending))
        del self._pending[key]
        return key

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class Controller:
    """Base of the control loops: map changes to keys, sync keys."""

    name = "controller"
    kinds: tuple[ResourceType, ...] = ()  # the objects it syncs
    related: tuple[ResourceType, ...] = ()  # other kinds whose changes concern them

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = WorkQueue()

    def wants(self, rt: ResourceType) -> bool:
        return rt in self.kinds or rt in self.related

    def keys_for(self, change: Change) -> Iterable[Key]:
        """The keys a change should wake (by default: the changed object's own)."""
        return [(change.namespace, change.name)]

    def initial_keys(self) -> Iterable[Key]:
        for rt in self.kinds:
            for obj in self.ctx.store.list(rt):
                yield (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    async def sync(self, key: Key) -> float | None:
        """Bring one object towards what it asks for; return seconds to look again, if any."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Release what the controller holds (listeners, tasks)."""

    async def run(self) -> None:
        for key in self.initial_keys():
            self.queue.add(key)
        while True:
            key = await self.queue.get()
            try:
                again = await self.sync(key)
            except errors.ApiStatusError as error:
                # A write lost to a concurrent one, or to an object deleted meanwhile: try
                # again as a real controller's requeue would.
                log.debug("%s: %s/%s: %s", self.name, *key, error.message)
                again = 0.05
            except Exception:
                self.ctx.failures.append(f"{self.name} {key}: {traceback.format_exc()}")
                log.exception("%s failed on %s", self.name, key)
                again = 1.0
            if again is not None:
                self.queue.add_after(key, again)


class GarbageCollector(Controller):
    """Deletes what an object owned once it is gone (background cascading deletion)."""

    name = "garbage-collector"

    def wants(self, rt: ResourceType) -> bool:
        return rt.namespaced

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.type == "DELETED" and change.resource.namespaced:
            return [(change.namespace, change.old["metadata"]["uid"] if change.old else "")]
        return []

    def initial_keys(self) -> Iterable[Key]:
        return []

    async def sync(self, key: Key) -> float | None:
        namespace, owner_uid = key
        for rt, obj in self.ctx.registry.dependents(owner_uid, namespace):
            refs = obj["metadata"].get("ownerReferences") or []
            # An object with another owner still alive is only released, not deleted.
            if all(r.get("uid") == owner_uid for r in refs):
                with contextlib.suppress(errors.ApiStatusError):
                    self.ctx.registry.delete(rt, namespace, obj["metadata"]["name"])
        return None


class ControllerSet:
    """Starts controllers as tasks, feeds them the store's changes, stops them."""

    def __init__(self, ctx: Context, controllers: list[Controller]) -> None:
        self.ctx = ctx
        self.controllers = controllers
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe = ctx.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        for controller in self.controllers:
            if controller.wants(change.resource):
                for key in controller.keys_for(change):
                    controller.queue.add(key)

    def start(self) -> None:
        for controller in self.controllers:
            self._tasks.append(
                asyncio.create_task(controller.run(), name=f"fake-{controller.name}")
            )

    async def stop(self) -> None:
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for controller in self.controllers:
            controller.queue.close()
            await controller.stop()
