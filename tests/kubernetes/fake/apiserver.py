"""A protocol-level fake kube-apiserver: real HTTP on loopback, spoken the way the real one
speaks it (paths, verbs, query parameters, ``Status`` errors, chunked watch streams), over
the in-memory :class:`~.store.Store`.

Usage::

    server = FakeApiServer(token="secret")
    await server.start()
    client = server.client()          # a lightkube AsyncClient pointed at it
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from lightkube import AsyncClient, KubeConfig

from . import errors, kubeconfig, patching, resources, selectors
from .addresses import LoopbackNetwork
from .registry import Registry
from .resources import ResourceType
from .store import Store
from .watching import WatchFilter, WatchSession, bookmark, encode

Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RbacTriple = tuple[str, str, str]

_PUBLIC_PATHS = ("/healthz", "/readyz", "/livez", "/version")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # what Go's strconv.ParseBool accepts
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


@dataclass
class RequestRecord:
    """One request as the server saw it (``status`` is filled in once it is answered)."""

    method: str
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str | None  # "" for the core group; None for a non-resource path
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    params: dict[str, str]
    path: str
    status: int | None = None

    @property
    def rbac(self) -> RbacTriple | None:
        """The (group, resource[/subresource], verb) an RBAC rule must grant for this."""
        if self.resource is None or self.group is None:
            return None
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.group, resource, self.verb)


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


@dataclass
class _Failure:
    remaining: int
    code: int
    resource: str | None
    verb: str | None


@dataclass
class _Paused:
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Parsed:
    record: RequestRecord
    target: Target | None


_PARSED = web.RequestKey("parsed", _Parsed)


def _json(body: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": lightkube only turns an error into ApiError for that value.
    text = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(body=text, status=status, content_type="application/json")


def _parse_target(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        # /namespaces/{ns}/{plural}/... unless it is a namespace's own subresource.
        if not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    rt = resources.find(group, version, rest[0])
    if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if subresource is not None and subresource not in rt.subresources:
        return None
    return Target(rt, namespace, name, subresource, legacy_watch)


def _verb(method: str, target: Target, params: dict[str, str]) -> str:
    if method == "GET":
        if target.name is not None:
            return "get"
        return "watch" if target.legacy_watch or params.get("watch") in _TRUE else "list"
    collection = {"POST": "create", "DELETE": "deletecollection"}
    item = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return (item if target.name is not None else collection).get(method, method.lower())


class FakeApiServer:
    def __init__(
        self,
        *,
        token: str | None = None,
        store: Store | None = None,
        registry: Registry | None = None,
        network: LoopbackNetwork | None = None,
        strict_validation: bool = True,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.user = "system:serviceaccount:default:phoenix"
        self.store = store or Store(history_size)
        self._own_network = network is None and registry is None
        self.network = network or (LoopbackNetwork() if registry is None else None)
        allocate = self.network.service_ip if self.network else None
        self.registry = registry or Registry(
            self.store, strict_validation=strict_validation, allocate_service_ip=allocate
        )
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.requests: list[RequestRecord] = []
        # Fault injection and policy switches: tests flip them while the server runs.
        self.watch_expiry_as_http = False
        self.denied: set[RbacTriple] = set()
        self.allowed: set[RbacTriple] | None = None
        self._failures: list[_Failure] = []
        self._paused: dict[str, _Paused] = {}
        self._watches: set[WatchSession] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for session in list(self._watches):
            session.end()
        for paused in self._paused.values():
            paused.released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_network and self.network is not None:
            self.network.release()

    async def __aenter__(self) -> FakeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # -- clients ---------------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default") -> KubeConfig:
        return kubeconfig.build(self.url, self.token, namespace)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        return kubeconfig.write(path, self.url, self.token, namespace)

    def client(self, namespace: str = "default", **options: Any) -> AsyncClient:
        """A lightkube AsyncClient for this server (the caller closes it)."""
        return AsyncClient(self.kubeconfig(namespace), **options)

    # -- what clients did ------------------------------------------------------------------

    def rbac_used(self) -> set[RbacTriple]:
        """Every (group, resource[/subresource], verb) requested, to compare with a Role."""
        return {r.rbac for r in self.requests if r.rbac is not None}

    def clear_requests(self) -> None:
        self.requests.clear()

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    # -- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        code: int = 503,
        *,
        resource: str | None = None,
        verb: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``code`` and its Status."""
        self._failures.append(_Failure(count, code, resource, verb))

    def drop_watches(self, resource: str | None = None) -> int:
        """Cut every open watch (of ``resource``, a plural, if given) mid-stream."""
        dropped = 0
        for session in list(self._watches):
            if resource is None or session.filter.resource.plural == resource:
                session.drop()
                dropped += 1
        return dropped

    def compact(self) -> None:
        """Forget the change history: a watch resuming from an older resourceVersion is told
        410 Gone (Expired), as after etcd compaction."""
        self.store.compact()

    def expire_watches(self) -> int:
        """Compact, then drop every watch: each client's reconnect meets a 410."""
        self.compact()
        return self.drop_watches()

    def pause(self, resource: str) -> None:
        """Hold every request for ``resource`` (a plural) unanswered until :meth:`resume`."""
        self._paused.setdefault(resource, _Paused())

    def resume(self, resource: str) -> None:
        paused = self._paused.pop(resource, None)
        if paused is not None:
            paused.released.set()

    @contextlib.contextmanager
    def paused(self, resource: str) -> Iterator[None]:
        self.pause(resource)
        try:
            yield
        finally:
            self.resume(resource)

    # -- request pipeline ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        params = dict(request.query)
        target = _parse_target(request.path)
        record = RequestRecord(
            method=request.method,
            verb=_verb(request.method, target, params) if target else request.method.lower(),
            group=target.rt.group if target else None,
            version=target.rt.version if target else None,
            resource=target.rt.plural if target else None,
            subresource=target.subresource if target else None,
            namespace=target.namespace if target else None,
            name=target.name if target else None,
            params=params,
            path=request.path,
        )
        self.requests.append(record)
        request[_PARSED] = _Parsed(record, target)
        try:
            self._authorize(request, record)
            await self._inject(record)
            response = await handler(request)
        except errors.ApiStatusError as error:
            response = _json(error.status(), error.code)
        if record.status is None:
            record.status = response.status
        return response

    def _authorize(self, request: web.Request, record: RequestRecord) -> None:
        if request.path in _PUBLIC_PATHS:
            return
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise errors.unauthorized()
        triple = record.rbac
        if triple is None:
            return
        if triple in self.denied or (self.allowed is not None and triple not in self.allowed):
            group, resource, verb = triple
            raise errors.forbidden(self.user, verb, resource, group, record.namespace, record.name)

    async def _inject(self, record: RequestRecord) -> None:
        if record.resource is not None and record.resource in self._paused:
            await self._paused[record.resource].released.wait()
        for failure in self._failures:
            if failure.resource not in (None, record.resource) or failure.verb not in (
                None,
                record.verb,
            ):
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            raise errors.by_code(failure.code, "injected failure")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        target = request[_PARSED].target
        if target is None:
            return self._non_resource(request)
        record = request[_PARSED].record
        verb = record.verb
        if verb == "watch":
            return await self._watch(request, target)
        if target.subresource == "scale":
            return await self._scale(request, target, verb)
        if verb == "get":
            return _json(self.registry.get(target.rt, target.namespace, target.name or ""))
        if verb == "list":
            return self._list(request, target)
        if verb == "create" and target.subresource is None:
            body = await self._body(request)
            obj = self.registry.create(target.rt, target.namespace, body, dry_run=_dry(request))
            return _json(obj, 201)
        if verb == "update":
            body = await self._body(request)
            obj = self.registry.update(
                target.rt, target.namespace, target.name or "", body,
                subresource=target.subresource, dry_run=_dry(request),
            )  # fmt: skip
            return _json(obj)
        if verb == "patch":
            return await self._patch(request, target)
        if verb == "delete" and target.subresource is None:
            return await self._delete(request, target)
        if verb == "deletecollection" and target.subresource is None:
            return self._delete_collection(request, target)
        raise errors.method_not_allowed()

    # -- verbs -----------------------------------------------------------------------------

    def _selectors(self, request: web.Request, rt: ResourceType) -> tuple[Any, Any]:
        labels = selectors.parse_label_selector(request.query.get("labelSelector", ""))
        fields = selectors.parse_field_selector(rt, request.query.get("fieldSelector", ""))
        return labels, fields

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rt = target.rt
        labels, fields = self._selectors(request, rt)
        items = self.registry.select(rt, target.namespace, labels, fields)
        list_rv = self.store.rv
        metadata: Obj = {}
        token = request.query.get("continue")
        if token:
            list_rv, start = _decode_continue(token)
            if list_rv < self.store.oldest_replayable:
                raise errors.expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
            items = [o for o in items if _key(o) > start]
        limit = _int_param(request, "limit")
        if limit and len(items) > limit:
            metadata["continue"] = _encode_continue(list_rv, _key(items[limit - 1]))
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        metadata["resourceVersion"] = str(list_rv)
        # A real server's list items carry no kind/apiVersion of their own.
        stripped = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        body = {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": metadata}
        return _json({**body, "items": stripped})

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        content_type = request.content_type
        if content_type not in (
            patching.MERGE,
            patching.STRATEGIC,
            patching.JSON_PATCH,
            patching.APPLY,
        ):
            raise errors.unsupported_media_type(content_type)
        raw = await request.read()
        try:
            patch = yaml.safe_load(raw) if content_type == patching.APPLY else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from exc
        obj = self.registry.patch(
            target.rt, target.namespace, target.name or "", content_type, patch,
            subresource=target.subresource, field_manager=request.query.get("fieldManager"),
            dry_run=_dry(request),
        )  # fmt: skip
        return _json(obj)

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options = await self._body(request, optional=True) or {}
        grace = _int_param(request, "gracePeriodSeconds")
        if grace is None and isinstance(options.get("gracePeriodSeconds"), int):
            grace = options["gracePeriodSeconds"]
        propagation = request.query.get("propagationPolicy") or options.get("propagationPolicy")
        obj, gone = self.registry.delete(
            target.rt, target.namespace, target.name or "",
            grace_seconds=grace, propagation=propagation,
            preconditions=options.get("preconditions"), dry_run=_dry(request),
        )  # fmt: skip
        return _json(self.registry.deleted_answer(target.rt, obj), 200 if gone else 202)

    def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        labels, fields = self._selectors(request, target.rt)
        deleted = []
        for obj in self.registry.select(target.rt, target.namespace, labels, fields):
            meta = obj["metadata"]
            done, _ = self.registry.delete(
                target.rt, meta.get("namespace"), meta["name"],
                grace_seconds=_int_param(request, "gracePeriodSeconds"),
                propagation=request.query.get("propagationPolicy"),
            )  # fmt: skip
            deleted.append(done)
        rt = target.rt
        body = {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {}}
        return _json({**body, "items": deleted})

    async def _scale(self, request: web.Request, target: Target, verb: str) -> web.Response:
        name, rt, ns = target.name or "", target.rt, target.namespace
        if verb == "get":
            return _json(self.registry.get_scale(rt, ns, name))
        if verb == "update":
            return _json(self.registry.update_scale(rt, ns, name, await self._body(request)))
        if verb == "patch":
            content_type = request.content_type
            patch = await self._body(request)
            return _json(self.registry.patch_scale(rt, ns, name, content_type, patch))
        raise errors.method_not_allowed()

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        labels, fields = self._selectors(request, rt)
        watch_filter = WatchFilter(rt, target.namespace, labels, fields)
        since = request.query.get("resourceVersion", "")
        initial_events = request.query.get("sendInitialEvents") in _TRUE
        bookmarks = request.query.get("allowWatchBookmarks") in _TRUE
        timeout = _int_param(request, "timeoutSeconds")
        expiry: errors.ApiStatusError | None = None
        if since not in ("", "0"):
            if not since.isdigit():
                raise errors.bad_request(f'invalid resource version: "{since}"')
            if int(since) < self.store.oldest_replayable:
                expiry = errors.expired(
                    f"too old resource version: {since} ({self.store.oldest_replayable})"
                )
                if self.watch_expiry_as_http:
                    raise expiry
        session = WatchSession(watch_filter, request.transport)
        unsubscribe: Callable[[], None] = lambda: None  # noqa: E731
        if expiry is None:
            # Subscribe and take the starting events in one step: nothing slips between.
            unsubscribe = self.store.subscribe(session.on_change)
            if since in ("", "0") or initial_events:
                for obj in self.registry.select(rt, target.namespace, labels, fields):
                    session.queue.put_nowait(("ADDED", obj))
            else:
                for change in self.store.since(int(since)):
                    event = watch_filter.classify(change)
                    if event is not None:
                        session.queue.put_nowait(event)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expiry is not None:
            # What a real server does with an expired resourceVersion on a watch: a 200 whose
            # one event is an ERROR carrying the 410 Status.
            await response.write(encode("ERROR", expiry.status()))
            await response.write_eof()
            return response
        self._watches.add(session)
        try:
            await self._stream(response, session, rt, timeout, bookmarks, initial_events)
        except (ConnectionError, RuntimeError):
            pass  # the client went away or the connection was cut on purpose
        finally:
            unsubscribe()
            self._watches.discard(session)
        if not session.dropped:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        session: WatchSession,
        rt: ResourceType,
        timeout: int | None,
        bookmarks: bool,
        initial_events: bool,
    ) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        if initial_events and bookmarks:
            while not session.queue.empty():
                event = session.queue.get_nowait()
                if event is None:
                    return
                await response.write(encode(*event))
            initial_end = bookmark(rt, self.store.rv, initial_events_end=True)
            await response.write(encode("BOOKMARK", initial_end))
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            now = time.monotonic()
            waits = [next_bookmark - now] if bookmarks else []
            if deadline is not None:
                waits.append(deadline - now)
            try:
                if waits:
                    event = await asyncio.wait_for(session.queue.get(), max(0.0, min(waits)))
                else:
                    event = await session.queue.get()
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return  # timeoutSeconds: end the stream cleanly, the client reconnects
                # Every change up to store.rv has been queued (commits notify synchronously)
                # and the queue is empty, so the bookmark's resourceVersion is safe to resume from.
                await response.write(encode("BOOKMARK", bookmark(rt, self.store.rv)))
                next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            if event is None:
                return
            await response.write(encode(*event))

    # -- non-resource paths ----------------------------------------------------------------

    def _non_resource(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        if request.method != "GET":
            raise errors.method_not_allowed()
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return _json(resources.version_info())
        if path == "/api":
            return _json(resources.api_versions(f"{self.host}:{self._port}"))
        if path == "/apis":
            return _json(resources.api_group_list())
        parts = [p for p in path.split("/") if p]
        document: Obj | None = None
        if len(parts) == 2 and parts[0] == "api":
            document = resources.resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            document = resources.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            document = resources.resource_list(parts[1], parts[2])
        if document is None:
            raise errors.no_such_path()
        return _json(document)

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw:
            if optional:
                return None
            raise errors.bad_request("the body of the request is empty")
        try:
            if request.content_type in ("application/yaml", "application/x-yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


def _dry(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise errors.bad_request(f'invalid value for {name}: "{text}"') from exc


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise errors.bad_request(f"invalid continue token: {exc}") from exc
