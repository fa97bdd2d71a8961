"""The single entry point: a fake API server and the controllers that play the cluster.

async with FakeCluster(time_scale=0.1) as cluster:
    client = cluster.client()                       # lightkube AsyncClient
    await cluster.apply(deployment_manifest)         # or create it with the client
    cluster.behave("shop:v2", Behaviour.CRASH)
    pods = await cluster.wait_for(lambda: len(cluster.pods(labels={"app": "shop"})) == 3)
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient, KubeConfig

from . import resources, selectors
from .addresses import LoopbackNetwork
from .apiserver import FakeApiServer
from .autoscaling import HorizontalPodAutoscalerController
from .behaviour import Behaviour, Behaviours
from .controllers import Context, ControllerSet, GarbageCollector
from .deployments import DeploymentController
from .kubelet import Kubelet, Timings
from .registry import Registry
from .replicasets import ReplicaSetController
from .resources import PODS, ResourceType
from .services import ServiceController
from .statefulsets import StatefulSetController
from .store import Store

Obj = dict[str, Any]
T = TypeVar("T")
Predicate = Callable[[], T | Awaitable[T]]


def resource(kind: str | ResourceType) -> ResourceType:
    """A kind by name: ``"Deployment"``, ``"deployments"`` or ``"deploy"``."""
    if isinstance(kind, ResourceType):
        return kind
    for rt in resources.ALL:
        if kind in (rt.kind, rt.plural, rt.singular, *rt.short_names):
            return rt
    raise KeyError(f"the fake cluster serves no kind {kind!r}")


class FakeCluster:
    def __init__(
        self,
        *,
        time_scale: float = 0.1,
        token: str | None = None,
        serve_pods: bool = True,
        strict_validation: bool = True,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
        timings: Timings | None = None,
    ) -> None:
        self.time_scale = time_scale
        self.network = LoopbackNetwork()
        self.store = Store(history_size)
        self.registry = Registry(
            self.store,
            strict_validation=strict_validation,
            allocate_service_ip=self.network.service_ip,
        )
        self.server = FakeApiServer(
            token=token,
            store=self.store,
            registry=self.registry,
            network=self.network,
            bookmark_interval=bookmark_interval,
        )
        self.behaviours = Behaviours()
        self.ctx = Context(
            self.registry,
            self.network,
            self.behaviours,
            time_scale=time_scale,
            serve_pods=serve_pods,
        )
        self.kubelet = Kubelet(self.ctx, timings)
        self.controllers = ControllerSet(
            self.ctx,
            [
                GarbageCollector(self.ctx),
                DeploymentController(self.ctx),
                ReplicaSetController(self.ctx),
                StatefulSetController(self.ctx),
                self.kubelet,
                ServiceController(self.ctx),
                HorizontalPodAutoscalerController(self.ctx),
            ],
        )
        self._clients: list[AsyncClient] = []
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeCluster:
        await self.server.start()
        self.controllers.start()
        self._started = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.close()
        if exc_type is None and self.failures:
            raise AssertionError(
                "the fake cluster's controllers failed:\n" + "\n".join(self.failures)
            )

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        for client in self._clients:
            await client.close()
        self._clients.clear()
        await self.controllers.stop()
        await self.server.stop()
        self.network.release()

    @property
    def failures(self) -> list[str]:
        """Errors of the harness itself (a controller that raised): a bug here, not in Phoenix."""
        return self.ctx.failures

    # -- reaching the API --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token

    def kubeconfig(self, namespace: str = "default") -> KubeConfig:
        return self.server.kubeconfig(namespace)

    def kubeconfig_path(self, directory: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (file ``kubeconfig`` in ``directory``) and return its path."""
        return self.server.write_kubeconfig(directory, namespace)

    def client(self, namespace: str = "default", **options: Any) -> AsyncClient:
        """A lightkube AsyncClient for this cluster, closed when the cluster stops."""
        client = self.server.client(namespace, **options)
        self._clients.append(client)
        return client

    # -- objects, directly (not through HTTP, so not in server.requests) -----------------------

    async def apply(self, manifest: Obj) -> Obj:
        """Create the object, or replace what it asks for if it exists (status untouched)."""
        rt = resources.by_kind(manifest.get("apiVersion", ""), manifest.get("kind", ""))
        if rt is None:
            raise KeyError(
                f"the fake cluster serves no {manifest.get('apiVersion')}/{manifest.get('kind')}"
            )
        meta = manifest.get("metadata") or {}
        namespace = meta.get("namespace", "default") if rt.namespaced else None
        existing = self.store.get(rt, namespace or "", meta.get("name", ""))
        if existing is None:
            return copy.deepcopy(self.registry.create(rt, namespace, manifest))
        body = copy.deepcopy(manifest)
        body.setdefault("metadata", {}).pop("resourceVersion", None)
        if rt is resources.SERVICES and "clusterIP" not in body.get("spec", {}):
            body.setdefault("spec", {})["clusterIP"] = existing["spec"].get("clusterIP")
        return copy.deepcopy(self.registry.update(rt, namespace, meta["name"], body))

    def get(self, kind: str | ResourceType, name: str, namespace: str = "default") -> Obj | None:
        rt = resource(kind)
        found = self.store.get(rt, namespace if rt.namespaced else "", name)
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        kind: str | ResourceType,
        namespace: str | None = "default",
        labels: dict[str, str] | None = None,
    ) -> builtins.list[Obj]:
        rt = resource(kind)
        wanted = tuple(selectors.Requirement(k, "=", (v,)) for k, v in (labels or {}).items())
        return [
            copy.deepcopy(o)
            for o in self.store.list(rt, namespace if rt.namespaced else None)
            if selectors.matches(wanted, o["metadata"].get("labels"))
        ]

    def pods(
        self, namespace: str = "default", labels: dict[str, str] | None = None
    ) -> builtins.list[Obj]:
        return self.list(PODS, namespace, labels)

    def events(self, involved: str | None = None, namespace: str = "default") -> builtins.list[Obj]:
        """Events (about the object named ``involved``, if given), oldest first."""
        found = [
            e
            for e in self.list("events", namespace)
            if involved in (None, e["involvedObject"]["name"])
        ]
        return sorted(found, key=lambda e: (e.get("firstTimestamp", ""), e["metadata"]["name"]))

    async def delete(self, kind: str | ResourceType, name: str, namespace: str = "default") -> None:
        rt = resource(kind)
        self.registry.delete(rt, namespace if rt.namespaced else None, name)

    def pod_url(self, pod: Obj | str, path: str = "/", namespace: str = "default") -> str:
        """``http://podIP:port/path`` for a pod (its first declared container port)."""
        found = self.get(PODS, pod, namespace) if isinstance(pod, str) else pod
        if found is None or not (found.get("status") or {}).get("podIP"):
            raise LookupError(f"pod {pod!r} has no IP yet")
        ports = [
            p["containerPort"] for c in found["spec"]["containers"] for p in c.get("ports") or []
        ]
        return f"http://{found['status']['podIP']}:{ports[0] if ports else 8080}{path}"

    # -- behaviour -------------------------------------------------------------------------

    def behave(self, image: str, behaviour: Behaviour) -> None:
        """Every container running ``image`` behaves so, from now on (running ones too)."""
        self.behaviours.set_image(image, behaviour)

    def set_pod_behaviour(
        self, pod: str, behaviour: Behaviour | None, namespace: str = "default"
    ) -> None:
        """Override one pod's containers (None: back to their image's behaviour)."""
        self.behaviours.set_pod((namespace, pod), behaviour)

    def crash_pod(self, pod: str, namespace: str = "default") -> None:
        """Make the pod's (first) running container exit once, with code 1."""
        self.behaviours.request_crash((namespace, pod))

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for(self, predicate: Predicate[T], timeout: float = 10.0, what: str = "") -> T:
        """Wait until ``predicate()`` (sync or async) is truthy and return its value.

        It is checked again after every change in the store, and at least every 50 ms for
        conditions the store cannot announce (an HTTP answer, the passing of time).
        """
        changed = asyncio.Event()
        unsubscribe = self.store.subscribe(lambda _: changed.set())
        deadline = time.monotonic() + timeout
        last: Any = None
        try:
            while True:
                changed.clear()
                last = predicate()
                if inspect.isawaitable(last):
                    last = await last
                if last:
                    return last  # type: ignore[no-any-return]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"waited {timeout}s for {what or predicate!r}; last value: {last!r}"
                    )
                try:
                    await asyncio.wait_for(changed.wait(), min(0.05, remaining))
                except TimeoutError:
                    pass
        finally:
            unsubscribe()
