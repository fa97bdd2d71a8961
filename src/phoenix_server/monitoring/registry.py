"""Service registry sync: services to monitor read from an HTTP JSON endpoint (an API
gateway's registry), added and removed as the registry changes.

The one thing to know: the registry only ever *adds monitoring*. Its services are
``platform: external`` (a remote document must never make Phoenix run a command), a name
the operator's file declares is the file's, and a registry that cannot be read or makes no
sense changes nothing. Only a readable document that no longer names a service it added
removes that service.

The path: :func:`fetch` (bounded in time and size) → :func:`parse_document` (shape, the
gateway form, the security rules; each entry validated like the service file by an injected
validator, since the service file's code lives in ``config/``) → :func:`diff` (pure) →
:meth:`RegistrySync.apply` (catalog, tracker, probes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import (
    ConfigError,
    InvalidRequestError,
    PhoenixError,
    Problem,
    UnavailableError,
)
from phoenix_server.domain.services import (
    CommandCheck,
    PlatformKind,
    ServiceCatalog,
    ServiceOrigin,
    ServiceSpec,
)
from phoenix_server.monitoring.probing import target_for
from phoenix_server.monitoring.scheduling import ProbeScheduler

log = logging.getLogger("phoenix.registry")

TIMEOUT = 10.0
"""Longest one read of the registry may take (capped by the interval)."""
MAX_BYTES = 4 * 1024 * 1024
"""A registry document larger than this is refused (thousands of services fit)."""
GATEWAY_KEYS = frozenset({"name", "url", "health"})
DEFAULT_HEALTH_PATH = "/health"

EntryValidator = Callable[[object, int], ServiceSpec]
"""Checks one service-file entry (at its index in the document) like the service file does,
returning its spec; raises ConfigError listing its problems."""


@dataclass(frozen=True)
class Rejection:
    """A registry entry not taken, and why (the rest of the document still applies)."""

    entry: str
    """``services[3] (billing)``: where it is in the document, and its name if it has one."""
    name: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.reason}"


@dataclass(frozen=True)
class RegistryDocument:
    services: tuple[ServiceSpec, ...]
    """The valid entries, in document order."""
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True)
class RegistryChange:
    added: tuple[ServiceSpec, ...] = ()
    updated: tuple[ServiceSpec, ...] = ()
    """Services the registry added before whose declaration changed."""
    removed: tuple[str, ...] = ()
    shadowed: tuple[str, ...] = ()
    """Registry services the file declares too: the file's declaration stays."""

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


# -- reading ----------------------------------------------------------------------------------


async def fetch(
    session: aiohttp.ClientSession, url: str, *, timeout: float, max_bytes: int = MAX_BYTES
) -> bytes:
    """The registry's document; UnavailableError saying why it could not be read."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"Accept": "application/json"},
        ) as response:
            if response.status != 200:
                raise UnavailableError(
                    f"the service registry {url} answered HTTP {response.status}"
                )
            if (response.content_length or 0) > max_bytes:
                raise UnavailableError(_too_large(url, max_bytes))
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise UnavailableError(_too_large(url, max_bytes))
            return bytes(body)
    except TimeoutError:
        raise UnavailableError(
            f"the service registry {url} did not answer within {timeout:g}s"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UnavailableError(
            f"cannot read the service registry {url}: {exc.__class__.__name__}: {exc}"
        ) from None


def _too_large(url: str, max_bytes: int) -> str:
    return f"the service registry {url} sent more than {max_bytes} bytes; not read"


def parse_document(body: bytes, validate: EntryValidator) -> RegistryDocument:
    """The services of a registry document: ``{"services": [...]}`` or a bare list, each entry
    a service-file entry or the gateway form ``{"name", "url", "health"}``. A document of the
    wrong shape raises InvalidRequestError; a bad entry is rejected alone."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"the service registry sent no valid JSON: {exc}") from None
    if isinstance(document, dict):
        unknown = sorted(str(key) for key in document if key != "services")
        if unknown or "services" not in document:
            raise InvalidRequestError(
                "the service registry sent no registry document: expected "
                '{"services": [...]} or a list of services'
                + (f"; unknown key(s): {', '.join(unknown)}" if unknown else "")
            )
        document = document["services"]
    if not isinstance(document, list):
        raise InvalidRequestError(
            "the service registry sent no registry document: expected a list of services, "
            f"got {type(document).__name__}"
        )
    services: list[ServiceSpec] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, item in enumerate(document):
        name = item.get("name") if isinstance(item, dict) else None
        name = name if isinstance(name, str) and name else None
        entry = f"services[{index}]" + (f" ({name})" if name else "")
        try:
            spec = _entry_spec(item, index, validate)
        except ConfigError as exc:
            # Paths relative to the entry, which the rejection names already.
            located = [
                Problem(p.path.removeprefix(entry).lstrip("."), p.message) for p in exc.problems
            ]
            reason = "; ".join(str(p) for p in located) or exc.message
            rejected.append(Rejection(entry, name, reason))
            continue
        if spec.name in seen:
            reason = f"duplicate service name '{spec.name}' (the first entry is used)"
            rejected.append(Rejection(entry, None, reason))
            continue
        seen.add(spec.name)
        services.append(spec)
    return RegistryDocument(tuple(services), tuple(rejected))


def _entry_spec(item: object, index: int, validate: EntryValidator) -> ServiceSpec:
    where = f"services[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(where, [Problem("", f"expected an object, got {type(item).__name__}")])
    if "url" in item:
        item = gateway_entry(item, where)
    elif item.get("platform", "local") != PlatformKind.EXTERNAL.value:
        platform = item.get("platform", "local")
        raise ConfigError(
            where,
            [
                Problem(
                    "platform",
                    f"refused '{platform}'"
                    + (" (the default)" if "platform" not in item else "")
                    + ": services from the registry may only be platform: external; "
                    "Phoenix runs nothing a remote document declares",
                )
            ],
        )
    spec = validate(item, index)
    refusal = _runs_commands(spec)
    if refusal is not None:
        raise ConfigError(where, [Problem(refusal, _NO_COMMANDS)])
    return spec


_NO_COMMANDS = "refused: Phoenix runs no command a remote document declares"


def _runs_commands(spec: ServiceSpec) -> str | None:
    """The field of ``spec`` that would make Phoenix run a command, if any."""
    if spec.platform is not PlatformKind.EXTERNAL:
        return "platform"
    if spec.run is not None:
        return "command"
    if isinstance(spec.health.check, CommandCheck):
        return "health.command"
    if spec.hooks:
        return "hooks"
    if spec.backup is not None:
        return "backup"
    return None


def gateway_entry(item: Mapping[str, object], where: str = "entry") -> dict[str, object]:
    """``{"name", "url", "health": "/health"}`` as the service-file entry it stands for: an
    external service checked over HTTP at ``url`` + ``health``."""
    unknown = sorted(str(key) for key in item if key not in GATEWAY_KEYS)
    if unknown:
        raise ConfigError(
            where,
            [
                Problem(
                    key,
                    "unknown key in a gateway entry (name, url, health); "
                    "write a service-file entry for more",
                )
                for key in unknown
            ],
        )
    url, health = item.get("url"), item.get("health", DEFAULT_HEALTH_PATH)
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        if parts is not None:
            parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            where, [Problem("url", f"expected an http:// or https:// URL with a host, got {url!r}")]
        )
    if not isinstance(health, str) or not health.startswith("/"):
        raise ConfigError(
            where, [Problem("health", f"expected a path like /health, got {health!r}")]
        )
    assert isinstance(url, str)
    return {
        "name": item.get("name"),
        "platform": PlatformKind.EXTERNAL.value,
        "health": {"http": url.rstrip("/") + health},
    }


# -- deciding ---------------------------------------------------------------------------------


def diff(
    owned: Mapping[str, ServiceSpec],
    document: RegistryDocument,
    file_names: Collection[str],
) -> RegistryChange:
    """What to change so the registry's services are those of ``document``. ``owned``: the
    services the registry added before; ``file_names``: the file's, which always win. An
    entry present but rejected keeps its previous declaration (like a playbook file)."""
    added, updated, shadowed = [], [], []
    named = set()
    for spec in document.services:
        named.add(spec.name)
        if spec.name in file_names:
            shadowed.append(spec.name)
        elif spec.name not in owned:
            added.append(spec)
        elif owned[spec.name] != spec:
            updated.append(spec)
    named |= {r.name for r in document.rejected if r.name is not None}
    removed = [name for name in owned if name not in named]
    return RegistryChange(tuple(added), tuple(updated), tuple(removed), tuple(shadowed))


# -- applying ---------------------------------------------------------------------------------


class RegistrySync:
    """Reads the registry every ``interval`` and applies what changed; keeps what /health
    shows (:attr:`problem`, :attr:`rejected`)."""

    def __init__(
        self,
        *,
        url: str,
        interval: float,
        catalog: ServiceCatalog,
        tracker: HealthTracker,
        scheduler: ProbeScheduler,
        validate: EntryValidator,
        busy: Callable[[str], bool],
        clock: Clock,
        python: str,
    ) -> None:
        self.url = url
        self.interval = interval
        self._catalog = catalog
        self._tracker = tracker
        self._scheduler = scheduler
        self._validate = validate
        self._busy = busy
        self._clock = clock
        self._python = python
        self.problem: str | None = None
        """Why the last read changed nothing (unreachable, not a registry document)."""
        self.rejected: dict[str, str] = {}
        """Entries of the last document not taken, and why."""
        self._shadowed: set[str] = set()

    def owned(self) -> dict[str, ServiceSpec]:
        return {s.name: s for s in self._catalog if s.origin is ServiceOrigin.REGISTRY}

    def file_names(self) -> set[str]:
        return {s.name for s in self._catalog if s.origin is ServiceOrigin.FILE}

    async def run(self) -> None:
        headers = {"User-Agent": "phoenix-registry"}
        async with aiohttp.ClientSession(headers=headers) as session:
            while True:
                await self.sync_once(session)
                await self._clock.sleep(self.interval)

    async def sync_once(self, session: aiohttp.ClientSession) -> RegistryChange | None:
        """One read and its changes; None if the registry could not be used (nothing changes)."""
        try:
            body = await fetch(session, self.url, timeout=min(TIMEOUT, self.interval))
            document = parse_document(body, self._validate)
        except PhoenixError as exc:
            if exc.message != self.problem:
                log.error("%s; the services it added stay as they are", exc.message)
            self.problem = exc.message
            return None
        if self.problem is not None:
            log.info("service registry %s read again", self.url)
        self.problem = None
        self._note_rejections(document.rejected)
        change = diff(self.owned(), document, self.file_names())
        self.apply(change)
        return change

    def _note_rejections(self, rejected: tuple[Rejection, ...]) -> None:
        now = {r.entry: r.reason for r in rejected}
        for entry, reason in now.items():
            if self.rejected.get(entry) != reason:
                log.error("service registry entry %s refused: %s", entry, reason)
        self.rejected = now

    def apply(self, change: RegistryChange) -> None:
        """Make the change: the tracker first and the catalog second when adding (whatever
        reads the catalog finds the service tracked), the reverse when removing."""
        for name in change.shadowed:
            if name not in self._shadowed:
                log.warning(
                    "service registry: '%s' is declared in the service file too; "
                    "the file's declaration is used",
                    name,
                )
        self._shadowed = set(change.shadowed)
        for spec in change.added:
            self._tracker.track(spec)
            self._catalog.add(spec)
            self._scheduler.add(target_for(spec, None, python=self._python))
            log.info("service registry: watching %s (%s)", spec.name, _check_of(spec))
        for spec in change.updated:
            self._tracker.track(spec)
            self._catalog.replace(spec)
            self._scheduler.add(target_for(spec, None, python=self._python))
            log.info("service registry: %s changed (%s)", spec.name, _check_of(spec))
        for name in change.removed:
            if self._busy(name):
                log.info("service registry: %s is being acted on; removed once it ends", name)
                continue
            self._scheduler.remove(name)
            self._catalog.remove(name)
            self._tracker.forget(name)
            log.info("service registry: %s is gone from the registry; no longer watched", name)


def _check_of(spec: ServiceSpec) -> str:
    check = spec.health.check
    url = getattr(check, "url", None) or getattr(check, "address", None)
    return f"checked at {url}" if url else "checked"
