"""The service registry sync (monitoring/registry.py): reading a registry document, the pure
diff, and the sync applied to a real catalog, tracker and probe schedule, against real HTTP
servers on loopback (the registry and the service it names)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from phoenix_server.config.servicefile import parse_registry_entry
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import (
    HttpCheck,
    PlatformKind,
    ServiceCatalog,
    ServiceOrigin,
    ServiceSpec,
    TcpCheck,
)
from phoenix_server.monitoring.probing import Prober
from phoenix_server.monitoring.registry import (
    EntryValidator,
    RegistryChange,
    RegistryDocument,
    RegistrySync,
    Rejection,
    diff,
    fetch,
    parse_document,
)
from phoenix_server.monitoring.scheduling import ProbeScheduler
from tests.monitoring.helpers import catalog_of
from tests.support import eventually


def validator(dependencies: list[str] | None = None) -> EntryValidator:
    def validate(item: object, index: int) -> ServiceSpec:
        return parse_registry_entry(
            item,
            index=index,
            dependencies=dependencies or [],
            base_dir=Path.cwd(),
            default_interval=7.0,
        )

    return validate


def parse(document: object, dependencies: list[str] | None = None) -> RegistryDocument:
    return parse_document(json.dumps(document).encode(), validator(dependencies))


def gateway(name: str, url: str = "http://10.0.0.7:8080", **extra: object) -> dict[str, object]:
    return {"name": name, "url": url, **extra}


# -- reading a document -----------------------------------------------------------------------


def test_the_gateway_form_is_an_external_service_checked_over_http() -> None:
    document = parse({"services": [gateway("orders"), gateway("cart", health="/ready")]})
    orders, cart = document.services
    assert document.rejected == ()
    assert orders.name == "orders"
    assert orders.platform is PlatformKind.EXTERNAL
    assert orders.origin is ServiceOrigin.REGISTRY
    assert orders.health.check == HttpCheck("http://10.0.0.7:8080/health")
    assert orders.health.interval == 7.0  # HEALTH_CHECK_INTERVAL, as for the file's services
    assert cart.health.check == HttpCheck("http://10.0.0.7:8080/ready")
    assert orders.run is None


def test_a_bare_list_reads_like_the_services_object() -> None:
    entries = [
        gateway("orders"),
        {"name": "db", "platform": "external", "health": {"tcp": "10.0.0.8:5432"}},
    ]
    assert parse(entries) == parse({"services": entries})


def test_a_service_file_entry_is_validated_like_the_file() -> None:
    entry = {
        "name": "db",
        "platform": "external",
        "health": {"tcp": "10.0.0.8:5432", "interval": "2s", "failure_threshold": 5},
        "depends_on": ["auth"],
    }
    (db,) = parse([entry], dependencies=["auth"]).services
    assert db.health.check == TcpCheck("10.0.0.8:5432")
    assert (db.health.interval, db.health.failure_threshold) == (2.0, 5)
    assert db.depends_on == ("auth",)
    assert db.origin is ServiceOrigin.REGISTRY


def test_a_local_entry_is_refused_naming_it_and_the_rest_still_applies() -> None:
    document = parse(
        [
            gateway("orders"),
            {"name": "evil", "platform": "local", "command": ["rm", "-rf", "/"]},
            {"name": "implicit", "command": "sleep 1"},
            gateway("cart"),
        ]
    )
    assert [s.name for s in document.services] == ["orders", "cart"]
    evil, implicit = document.rejected
    assert evil.entry == "services[1] (evil)"
    assert evil.name == "evil"
    assert "platform: external" in evil.reason and "'local'" in evil.reason
    assert implicit.entry == "services[2] (implicit)"
    assert "(the default)" in implicit.reason


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"health": {"command": ["curl", "-f", "http://x/"]}}, "health.command"),
        (
            {"health": {"tcp": "10.0.0.8:1"}, "hooks": {"smoke": ["sh", "-c", "id"]}},
            "hooks",
        ),
        ({"health": {"tcp": "10.0.0.8:1"}, "backup": {"mode": "cold"}}, "backup"),
    ],
)
def test_an_external_entry_that_would_run_a_command_is_refused(
    extra: dict[str, object], field: str
) -> None:
    document = parse([{"name": "sneaky", "platform": "external", **extra}])
    assert document.services == ()
    (rejection,) = document.rejected
    assert field in rejection.reason
    assert "runs no command" in rejection.reason


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (gateway("orders", url="ftp://10.0.0.7/"), "services[0] (orders): url: expected an http"),
        (gateway("orders", url="http://10.0.0.7:99999"), "url: expected an http"),
        (gateway("orders", health="health"), "health: expected a path like /health"),
        (gateway("orders", tags=["a"]), "tags: unknown key in a gateway entry"),
        (gateway("Bad Name"), "services[0] (Bad Name): name: expected lowercase"),
        (
            {"name": "db", "platform": "external", "health": {"tcp": "x:1"}, "colour": "red"},
            "services[0] (db): colour: unknown key",
        ),
        (
            {
                "name": "db",
                "platform": "external",
                "health": {"tcp": "x:1"},
                "depends_on": ["nope"],
            },
            "services[0] (db): depends_on[0]: unknown service 'nope'",
        ),
        ("orders", "services[0]: expected an object, got str"),
    ],
)
def test_a_bad_entry_is_rejected_with_where_and_why(entry: object, expected: str) -> None:
    document = parse([entry, gateway("cart")])
    assert [s.name for s in document.services] == ["cart"]
    (rejection,) = document.rejected
    assert expected in str(rejection)


def test_a_duplicate_name_keeps_the_first_entry() -> None:
    document = parse([gateway("orders"), gateway("orders", url="http://10.0.0.9:1")])
    (orders,) = document.services
    assert isinstance(orders.health.check, HttpCheck)
    assert orders.health.check.url == "http://10.0.0.7:8080/health"
    assert "duplicate service name 'orders'" in document.rejected[0].reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "no valid JSON"),
        (b'{"services": [', "no valid JSON"),
        (b"\xff\xfe", "no valid JSON"),
        (b"42", "got int"),
        (b'{"services": {"orders": {}}}', "got dict"),
        (b'{"items": []}', "unknown key(s): items"),
        (b"{}", '{"services": [...]}'),
    ],
)
def test_a_malformed_document_is_an_error_as_a_whole(body: bytes, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_document(body, validator())
    assert expected in caught.value.message


# -- the diff ---------------------------------------------------------------------------------


def specs(*entries: dict[str, object]) -> tuple[ServiceSpec, ...]:
    return parse(list(entries)).services


def test_diff_adds_updates_removes_and_leaves_unchanged_alone() -> None:
    owned = {s.name: s for s in specs(gateway("kept"), gateway("moved"), gateway("gone"))}
    document = RegistryDocument(
        specs(gateway("kept"), gateway("moved", url="http://10.0.0.9:80"), gateway("new"))
    )
    change = diff(owned, document, file_names=set())
    assert [s.name for s in change.added] == ["new"]
    assert [s.name for s in change.updated] == ["moved"]
    assert change.removed == ("gone",)
    assert change.shadowed == ()


def test_diff_of_the_same_document_is_no_change() -> None:
    document = RegistryDocument(specs(gateway("orders"), gateway("cart")))
    owned = {s.name: s for s in document.services}
    change = diff(owned, document, file_names=set())
    assert change == RegistryChange()
    assert not change


def test_the_file_wins_and_is_never_removed() -> None:
    document = RegistryDocument(specs(gateway("auth"), gateway("orders")))
    change = diff({}, document, file_names={"auth", "billing"})
    assert [s.name for s in change.added] == ["orders"]
    assert change.shadowed == ("auth",)
    assert change.removed == ()  # billing is the file's: the registry never removes it


def test_an_entry_present_but_rejected_keeps_its_previous_declaration() -> None:
    owned = {s.name: s for s in specs(gateway("orders"), gateway("cart"))}
    document = RegistryDocument(
        specs(gateway("cart")), (Rejection("services[0] (orders)", "orders", "refused"),)
    )
    assert diff(owned, document, file_names=set()) == RegistryChange()


def test_an_empty_document_removes_every_registry_service() -> None:
    owned = {s.name: s for s in specs(gateway("orders"), gateway("cart"))}
    change = diff(owned, RegistryDocument(()), file_names={"auth"})
    assert change.removed == ("orders", "cart")


# -- the catalog and the tracker --------------------------------------------------------------


def test_the_catalog_adds_and_removes_services() -> None:
    catalog = catalog_of("""
    - name: auth
      platform: external
      health: {tcp: "127.0.0.1:1"}
    """)
    (orders,) = specs(gateway("orders"))
    catalog.add(orders)
    assert [s.name for s in catalog] == ["auth", "orders"]
    with pytest.raises(ConflictError, match="'orders' already exists"):
        catalog.add(orders)
    assert catalog.remove("orders") is orders
    assert "orders" not in catalog
    with pytest.raises(NotFoundError, match="unknown service 'orders'"):
        catalog.remove("orders")


# -- the sync, against real HTTP ---------------------------------------------------------------


class Registry:
    """A registry endpoint on loopback whose answer the test sets."""

    def __init__(self) -> None:
        self.body: bytes = b"[]"
        self.status = 200
        self.reads = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.reads += 1
        return web.Response(body=self.body, status=self.status, content_type="application/json")

    def serve(self, document: object) -> None:
        self.body = json.dumps(document).encode()


async def serve(routes: list[tuple[str, object]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes:
        app.router.add_get(path, handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def registry() -> AsyncIterator[tuple[Registry, str]]:
    found = Registry()
    runner, url = await serve([("/registry", found.handle)])
    yield found, f"{url}/registry"
    await runner.cleanup()


@pytest.fixture
async def health_endpoint() -> AsyncIterator[str]:
    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runner, url = await serve([("/health", healthy)])
    yield url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


class Watched:
    """A real catalog (with one file service), tracker, prober and probe schedule."""

    def __init__(self) -> None:
        self.catalog: ServiceCatalog = catalog_of("""
        - name: auth
          platform: external
          health: {tcp: "127.0.0.1:1", interval: 10s}
        """)
        clock = SystemClock()
        self.tracker = HealthTracker(self.catalog, clock)
        self.prober = Prober()
        self.scheduler = ProbeScheduler(self.prober, self.tracker, clock)
        self.busy: set[str] = set()

    def sync(self, url: str) -> RegistrySync:
        return RegistrySync(
            url=url,
            interval=0.5,
            catalog=self.catalog,
            tracker=self.tracker,
            scheduler=self.scheduler,
            validate=validator(["auth"]),
            busy=lambda name: name in self.busy,
            clock=SystemClock(),
            python=sys.executable,
        )

    async def close(self) -> None:
        await self.scheduler.close()
        await self.prober.close()


@pytest.fixture
async def watched() -> AsyncIterator[Watched]:
    made = Watched()
    yield made
    await made.close()


def fast(name: str, url: str) -> dict[str, object]:
    return {
        "name": name,
        "platform": "external",
        "health": {"http": f"{url}/health", "interval": "100ms", "timeout": "1s"},
    }


async def test_sync_adds_probes_and_removes_registry_services(
    registry: tuple[Registry, str],
    health_endpoint: str,
    watched: Watched,
    session: aiohttp.ClientSession,
) -> None:
    endpoint, url = registry
    sync = watched.sync(url)
    endpoint.serve({"services": [fast("orders", health_endpoint)]})
    change = await sync.sync_once(session)
    assert change is not None and [s.name for s in change.added] == ["orders"]
    assert watched.catalog.get("orders").origin is ServiceOrigin.REGISTRY
    assert "orders" in watched.scheduler.targets()
    await eventually(
        lambda: watched.tracker.status("orders") is ServiceStatus.HEALTHY,
        timeout=5,
        message="orders probed healthy",
    )
    assert sync.problem is None

    endpoint.serve({"services": []})
    change = await sync.sync_once(session)
    assert change is not None and change.removed == ("orders",)
    assert "orders" not in watched.catalog
    assert "orders" not in watched.scheduler.targets()
    assert [s.name for s in watched.catalog] == ["auth"]  # the file's service stays
    with pytest.raises(KeyError):
        watched.tracker.status("orders")  # forgotten


async def test_a_file_service_wins_and_a_local_entry_is_refused(
    registry: tuple[Registry, str], watched: Watched, session: aiohttp.ClientSession
) -> None:
    endpoint, url = registry
    sync = watched.sync(url)
    endpoint.serve(
        [
            gateway("auth", url="http://10.0.0.7:1"),
            {"name": "evil", "platform": "local", "command": ["touch", "/tmp/pwned"]},
            gateway("orders"),
        ]
    )
    change = await sync.sync_once(session)
    assert change is not None
    assert change.shadowed == ("auth",)
    auth = watched.catalog.get("auth")
    assert auth.origin is ServiceOrigin.FILE
    assert auth.health.check == TcpCheck("127.0.0.1:1")
    assert [s.name for s in watched.catalog] == ["auth", "orders"]
    assert list(sync.rejected) == ["services[1] (evil)"]
    assert "platform: external" in sync.rejected["services[1] (evil)"]


async def test_an_unreachable_or_broken_registry_changes_nothing_and_says_why(
    registry: tuple[Registry, str], watched: Watched, session: aiohttp.ClientSession
) -> None:
    endpoint, url = registry
    sync = watched.sync(url)
    endpoint.serve([gateway("orders")])
    await sync.sync_once(session)
    assert "orders" in watched.catalog

    endpoint.body = b"<html>oops</html>"
    assert await sync.sync_once(session) is None
    assert sync.problem is not None and "no valid JSON" in sync.problem
    assert "orders" in watched.catalog

    endpoint.status = 503
    assert await sync.sync_once(session) is None
    assert sync.problem is not None and "answered HTTP 503" in sync.problem
    assert "orders" in watched.catalog and "orders" in watched.scheduler.targets()

    gone = watched.sync("http://127.0.0.1:1/registry")  # nothing listens there
    assert await gone.sync_once(session) is None
    assert gone.problem is not None and "cannot read the service registry" in gone.problem
    assert "orders" in watched.catalog

    endpoint.status = 200
    endpoint.serve([gateway("orders")])
    change = await sync.sync_once(session)
    assert change == RegistryChange()
    assert sync.problem is None


async def test_a_changed_declaration_is_taken_and_a_busy_service_is_removed_later(
    registry: tuple[Registry, str], watched: Watched, session: aiohttp.ClientSession
) -> None:
    endpoint, url = registry
    sync = watched.sync(url)
    endpoint.serve([gateway("orders")])
    await sync.sync_once(session)
    endpoint.serve([gateway("orders", url="http://10.0.0.9:9090")])
    change = await sync.sync_once(session)
    assert change is not None and [s.name for s in change.updated] == ["orders"]
    check = watched.catalog.get("orders").health.check
    assert check == HttpCheck("http://10.0.0.9:9090/health")

    watched.busy.add("orders")
    endpoint.serve([])
    await sync.sync_once(session)
    assert "orders" in watched.catalog  # a recovery or deploy holds it: not now
    watched.busy.clear()
    await sync.sync_once(session)
    assert "orders" not in watched.catalog


async def test_fetch_refuses_a_document_over_the_size_limit(
    registry: tuple[Registry, str], session: aiohttp.ClientSession
) -> None:
    endpoint, url = registry
    endpoint.serve([gateway(f"s{i}") for i in range(100)])
    assert json.loads(await fetch(session, url, timeout=5))[0]["name"] == "s0"
    with pytest.raises(UnavailableError, match="more than 1000 bytes"):
        await fetch(session, url, timeout=5, max_bytes=1000)


async def test_fetch_gives_up_after_its_timeout(session: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="[]")

    runner, url = await serve([("/registry", stuck)])
    try:
        with pytest.raises(UnavailableError, match=r"did not answer within 0\.2s"):
            await fetch(session, f"{url}/registry", timeout=0.2)
    finally:
        release.set()
        await runner.cleanup()


async def test_fetch_refuses_a_streamed_document_over_the_size_limit(
    session: aiohttp.ClientSession,
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length to go by
        await response.prepare(request)
        for _ in range(64):
            await response.write(b" " * 16 * 1024)
        await response.write_eof()
        return response

    runner, url = await serve([("/registry", endless)])
    try:
        with pytest.raises(UnavailableError, match="more than 100000 bytes"):
            await fetch(session, f"{url}/registry", timeout=5, max_bytes=100_000)
    finally:
        await runner.cleanup()
