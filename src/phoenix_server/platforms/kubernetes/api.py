"""The way to the cluster's API: a lightkube client from a kubeconfig (or the pod's
ServiceAccount), the API's refusals as PlatformErrors that say what was refused and why,
and a watch that survives what watches go through (dropped connections, ``410 Gone``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG
from lightkube.core.exceptions import ApiError, ConfigError

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import KubernetesCluster

log = logging.getLogger("phoenix.kubernetes")

REQUEST_TIMEOUT = 10.0
"""Seconds for one API call (a watch is kept open longer: see WATCH_SECONDS)."""
WATCH_SECONDS = 290
"""How long the server keeps one watch request open before Phoenix opens the next (from
the last resourceVersion seen: nothing is missed in between)."""
SILENCE_MARGIN = 30
"""Seconds beyond WATCH_SECONDS a watch may stay silent before it is reopened: the server
ends every stream by then, so silence past it means a connection that died half-open."""
RETRY_MIN = 0.2
RETRY_MAX = 10.0
RELIST_AFTER = 3
"""Consecutive failures (other than the connection's) after which a watch lists afresh."""


def connect(cluster: KubernetesCluster) -> AsyncClient:
    """A client for the cluster: the named kubeconfig (and context), else in-cluster
    credentials when Phoenix runs in a pod, else ``KUBECONFIG`` / ``~/.kube/config``."""
    try:
        if cluster.kubeconfig is not None:
            config = KubeConfig.from_file(cluster.kubeconfig)
        else:
            config = KubeConfig.from_env(default_config=DEFAULT_KUBECONFIG)
        return AsyncClient(
            config=config.get(context_name=cluster.context),
            timeout=httpx2.Timeout(REQUEST_TIMEOUT),
            field_manager="phoenix",
        )
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        where = cluster.kubeconfig or "in-cluster credentials or KUBECONFIG"
        raise PlatformError(f"cannot configure the Kubernetes client from {where}: {exc}") from exc


def describe(exc: BaseException) -> str:
    """An API error in the cluster's own words (``Forbidden: deployments.apps "shop" is
    forbidden: …``), a transport error as what failed."""
    if isinstance(exc, ApiError):
        status = exc.status
        return f"{status.reason or 'error'} ({status.code}): {status.message or exc}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from the API server"
    if isinstance(exc, httpx2.HTTPError):
        return f"cannot reach the API server: {exc.__class__.__name__}: {exc}"
    return f"{exc.__class__.__name__}: {exc}"


T = TypeVar("T")


async def call(what: str, request: Awaitable[T]) -> T:
    """Await one API request; its failure becomes a PlatformError naming ``what`` was asked."""
    try:
        return await request
    except (ApiError, httpx2.HTTPError, OSError) as exc:
        raise PlatformError(f"Kubernetes API: {what}: {describe(exc)}") from exc


def gone(exc: BaseException) -> bool:
    """The watch's resourceVersion is too old (410 Gone, as an error event or a status)."""
    if isinstance(exc, ApiError):
        return exc.status.code == 410
    return isinstance(exc, httpx2.HTTPStatusError) and exc.response.status_code == 410


R = TypeVar("R")


class ObjectWatch(Generic[R]):
    """Every object of one kind in one namespace, kept current by list-then-watch.

    A watch resumes from the last resourceVersion it saw after a dropped connection; when the
    server says that version is gone (410), it lists again and reports the differences as
    events, so a listener sees every object that came, changed or went meanwhile."""

    def __init__(
        self,
        client: AsyncClient,
        resource: type[R],
        namespace: str,
        on_event: Callable[[str, R], None],
    ) -> None:
        self._client = client
        self._resource: Any = resource  # (lightkube's overloads want a concrete kind)
        self._namespace = namespace
        self._on_event = on_event
        self.objects: dict[str, R] = {}
        self.synced = asyncio.Event()
        """Set once the first list has arrived."""
        self.problem: str | None = None
        """Why the watch is not current now (None: it is)."""
        self.requests = 0
        """API requests made (lists and watches): what the cluster pays for this watch."""
        self._failures = 0
        self._version: str | None = None
        """The last resourceVersion seen: where a watch resumes (None: list first)."""
        self.relists = 0

    @property
    def what(self) -> str:
        return f"{self._resource.__name__.lower()}s in namespace {self._namespace}"

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                if self._version is None:
                    self._version = await self._relist()
                    delay = RETRY_MIN
                await self._watch()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                continue  # silent past the server's own limit: reopen from the last version
            except Exception as exc:
                if gone(exc):
                    log.info("watch of %s expired (410 Gone): listing again", self.what)
                    self._version = None
                    continue
                if self._failures == 0:
                    delay = RETRY_MIN  # the first failure since events flowed again
                self._failures += 1
                if self._failures >= RELIST_AFTER and not isinstance(exc, httpx2.TransportError):
                    # The same error again and again (an event that cannot be decoded,
                    # say): resuming would meet it again; a fresh listing does not.
                    self._version = None
                    self._failures = 0
                self.problem = f"watch of {self.what} interrupted: {describe(exc)}"
                log.warning("%s; retrying in %.1fs", self.problem, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _relist(self) -> str:
        self.requests += 1
        listing: Any = self._client.list(self._resource, namespace=self._namespace)
        seen: dict[str, R] = {}
        async for obj in listing:
            name = _name(obj)
            if name is not None:
                seen[name] = obj
        version: str = listing.resourceVersion
        gone_names = [name for name in self.objects if name not in seen]
        previous, self.objects = self.objects, dict(seen)
        for name in gone_names:
            self._emit("DELETED", previous[name])
        for name, obj in seen.items():
            old = previous.get(name)
            if old is None:
                self._emit("ADDED", obj)
            elif _version(old) != _version(obj):
                self._emit("MODIFIED", obj)
        self.relists += 1
        self.problem = None
        self.synced.set()
        return version

    async def _watch(self) -> None:
        """Follow changes from the last version seen (lightkube reopens a stream the server
        closed on its own, from the last version it saw). A stream silent for longer than
        the server keeps one open is taken as a half-open connection and reopened."""
        assert self._version is not None
        self.requests += 1
        stream = self._client.watch(
            self._resource,
            namespace=self._namespace,
            resource_version=self._version,
            server_timeout=WATCH_SECONDS,
        ).__aiter__()
        self.problem = None  # reconnecting: said again at once if this attempt fails
        while True:
            async with asyncio.timeout(WATCH_SECONDS + SILENCE_MARGIN):
                kind, obj = await stream.__anext__()
            self.problem = None
            self._failures = 0
            meta: Any = getattr(obj, "metadata", None)
            if meta is not None and meta.resourceVersion:
                self._version = meta.resourceVersion
            if kind == "BOOKMARK":
                continue
            name = meta.name if meta is not None else None
            if name is None:
                continue
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
            self._emit(kind, obj)

    def _emit(self, kind: str, obj: R) -> None:
        try:
            self._on_event(kind, obj)
        except Exception:
            log.exception("handling a %s event of %s failed", kind, self.what)


def _version(obj: Any) -> str | None:
    meta = getattr(obj, "metadata", None)
    return meta.resourceVersion if meta is not None else None


def _name(obj: Any) -> str | None:
    meta = getattr(obj, "metadata", None)
    return meta.name if meta is not None else None
