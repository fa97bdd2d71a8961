"""Probes against real endpoints on loopback: HTTP, TCP, process and command checks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from phoenix_server.domain.services import (
    CommandCheck,
    HttpCheck,
    Instance,
    InstanceState,
    PlatformKind,
    ProcessCheck,
    TcpCheck,
)
from phoenix_server.monitoring.probing import Prober, ProbeTarget, target_for
from phoenix_server.support import procinfo
from phoenix_server.support.timefmt import utcnow
from tests.monitoring.helpers import catalog_of, free_port


def target(check: object, timeout: float = 1.0, **extra: object) -> ProbeTarget:
    return ProbeTarget(
        service="svc",
        target="svc",
        check=check,
        timeout=timeout,
        interval=1.0,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    prober = Prober()
    yield prober
    await prober.close()


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """A real aiohttp server with endpoints that answer, fail, or hang."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def created(request: web.Request) -> web.Response:
        return web.Response(status=201, text="made")

    app = web.Application()
    app.add_routes(
        [
            web.get("/ok", ok),
            web.get("/fail", failing),
            web.get("/slow", slow),
            web.get("/created", created),
        ]
    )
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
    )
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_http_ok(prober: Prober, http_server: str) -> None:
    result = await prober.probe(target(HttpCheck(f"{http_server}/ok")))
    assert result.ok and result.status_code == 200 and result.detail == "HTTP 200"
    assert 0 < result.latency < 1


async def test_http_error_status_fails_with_the_status(prober: Prober, http_server: str) -> None:
    result = await prober.probe(target(HttpCheck(f"{http_server}/fail")))
    assert not result.ok and result.status_code == 503
    assert result.detail == "HTTP 503 (expected 200-399)"


async def test_http_expected_status_range_is_honoured(prober: Prober, http_server: str) -> None:
    strict = HttpCheck(f"{http_server}/created", expect_status=(200, 200))
    assert not (await prober.probe(target(strict))).ok
    loose = HttpCheck(f"{http_server}/created", expect_status=(200, 201))
    assert (await prober.probe(target(loose))).ok


async def test_http_timeout_is_a_failure_named_as_such(prober: Prober, http_server: str) -> None:
    started = time.monotonic()
    result = await prober.probe(target(HttpCheck(f"{http_server}/slow"), timeout=0.2))
    assert time.monotonic() - started < 1.0
    assert not result.ok and result.detail == "no answer within 0.2s"


async def test_http_refused_connection(prober: Prober) -> None:
    result = await prober.probe(target(HttpCheck(f"http://127.0.0.1:{free_port()}/health")))
    assert not result.ok and result.detail.startswith("cannot connect")


async def test_http_survives_a_server_restart_on_a_pooled_connection(prober: Prober) -> None:
    """A keep-alive connection to a server that has since restarted is no failure of it."""
    port = free_port()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.add_routes([web.get("/h", _ok)])
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        return runner

    check = target(HttpCheck(f"http://127.0.0.1:{port}/h"))
    runner = await serve()
    assert (await prober.probe(check)).ok
    await runner.cleanup()
    runner = await serve()
    try:
        assert (await prober.probe(check)).ok
    finally:
        await runner.cleanup()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_tcp_open_and_closed(prober: Prober) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await prober.probe(target(TcpCheck(f"127.0.0.1:{port}")))
        assert result.ok and result.detail == f"connected to 127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
    closed = await prober.probe(target(TcpCheck(f"127.0.0.1:{port}")))
    assert not closed.ok and "connection refused" in closed.detail


async def test_process_check_follows_the_pid(prober: Prober) -> None:
    process = subprocess.Popen(["sleep", "60"])
    start = procinfo.start_time(process.pid)
    check = target(ProcessCheck(), pid=process.pid, process_start=start)
    try:
        assert (await prober.probe(check)).ok
    finally:
        process.kill()
        process.wait()
    dead = await prober.probe(check)
    assert not dead.ok and dead.detail == f"pid {process.pid} is not running"
    assert not (await prober.probe(target(ProcessCheck()))).ok


async def test_command_check_exit_status_and_stderr(prober: Prober) -> None:
    passing = CommandCheck((sys.executable, "-c", "pass"))
    assert (await prober.probe(target(passing))).ok
    failing = CommandCheck(
        (sys.executable, "-c", "import sys; print('db unreachable', file=sys.stderr); sys.exit(3)")
    )
    result = await prober.probe(target(failing))
    assert not result.ok and result.detail == "command exited 3: db unreachable"


async def test_command_check_is_killed_at_its_timeout(prober: Prober) -> None:
    started = time.monotonic()
    result = await prober.probe(target(CommandCheck(("sleep", "30")), timeout=0.3))
    assert time.monotonic() - started < 2
    assert not result.ok and result.detail == "command did not finish within 0.3s"


async def test_command_that_does_not_exist(prober: Prober) -> None:
    result = await prober.probe(target(CommandCheck(("no-such-check-binary",))))
    assert not result.ok and result.detail.startswith("cannot run 'no-such-check-binary'")


def test_target_for_fills_placeholders_per_instance() -> None:
    catalog = catalog_of(
        """
        - name: api
          command: ["x"]
          port: 8081
          health: {http: "http://127.0.0.1:{port}/health?who={name}&i={instance}"}
        - name: ext
          platform: external
          health: {tcp: "db.internal:5432"}
        """
    )
    instance = Instance(
        id="api-1",
        service="api",
        platform=PlatformKind.LOCAL,
        state=InstanceState.RUNNING,
        started_at=utcnow(),
        pid=42,
        port=9000,
    )
    api = target_for(catalog.get("api"), instance, python=sys.executable)
    assert api.check == HttpCheck("http://127.0.0.1:9000/health?who=api&i=api-1")
    assert (api.target, api.pid) == ("api-1", 42)
    ext = target_for(catalog.get("ext"), None, python=sys.executable)
    assert ext.check == TcpCheck("db.internal:5432") and ext.target == "ext"
