"""A service's port held by another process: reported once, naming the holder; the service
unhealthy for that reason; retried with a growing backoff, one log line per try; served
again by itself once the holder lets go. Real sockets, real router and instance processes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.platforms import ports
from phoenix_server.platforms.base import InstanceEventKind
from phoenix_server.platforms.local.supervisor import LocalPlatform
from phoenix_server.platforms.routing import ListenBackoff, RouterKeeper
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreJournal
from tests.platforms.local import OWNER, Recorder, spec_of
from tests.support import REPO, eventually, free_port

pytestmark = pytest.mark.e2e  # starts real processes

ROUTING_LOG = "phoenix.platforms.routing"
FAST = ListenBackoff(first=0.1, most=0.4)
"""Small steps so a test sees several tries in about a second."""


def web_service(port: int, name: str = "web") -> str:
    return f"""
    - name: {name}
      command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}", "--name", "{{name}}"]
      cwd: {REPO}
      port: {port}
      health: {{http: "http://127.0.0.1:{{port}}/health"}}
      stop: {{grace: 2s}}
    """


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'phoenix.db'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def held_port() -> Iterator[tuple[int, socket.socket]]:
    """A port another process (this test process) listens on, as `python -m http.server`."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1], holder
    finally:
        holder.close()


def make_platform(
    tmp_path: Path, store: Store, *, owner: str = OWNER, backoff: ListenBackoff = FAST
) -> LocalPlatform:
    return LocalPlatform(
        log_dir=tmp_path / "logs",
        run_dir=tmp_path / "run",
        journal=StoreJournal(store),
        clock=SystemClock(),
        owner=owner,
        router_backoff=backoff,
    )


@pytest.fixture
async def local(tmp_path: Path, store: Store) -> AsyncIterator[LocalPlatform]:
    platform = make_platform(tmp_path, store)
    yield platform
    await platform.shutdown(keep_running=False)


def problem_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == ROUTING_LOG and r.levelno == logging.ERROR and "cannot serve" in r.message
    ]


def test_the_holder_of_a_port_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        problem = ports.listen_problem("127.0.0.1", port)
    assert problem is not None
    assert f"port {port} on 127.0.0.1 is held by pid {os.getpid()} (" in problem
    assert "\n" not in problem
    assert ports.listen_problem("127.0.0.1", port) is None, "free once the holder closed"


def test_a_bad_backoff_is_refused_naming_its_fields() -> None:
    with pytest.raises(ValueError, match="first=0s, most=1s"):
        ListenBackoff(first=0, most=1)
    assert [FAST.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.4, 0.4]


async def test_a_held_port_is_reported_once_marks_the_service_unhealthy_and_heals_itself(
    tmp_path: Path,
    local: LocalPlatform,
    held_port: tuple[int, socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ROUTING_LOG)
    port, holder = held_port
    spec = spec_of(tmp_path, web_service(port))
    tracker = HealthTracker(ServiceCatalog([spec]), SystemClock())
    told: list[tuple[str, str | None]] = []
    local.watch_ports(lambda service, problem: told.append((service, problem)))
    local.watch_ports(tracker.set_port_problem)  # as the runtime wires it

    failed = await local.reconcile([spec])

    assert failed == {}, "one service's port must not stop Phoenix or its instances"
    [instance] = local.instances("web")
    [line] = problem_lines(caplog)
    assert "\n" not in line.message
    for named in ("service web", f"127.0.0.1:{port}", f"held by pid {os.getpid()}"):
        assert named in line.message, line.message
    [(service, reason)] = told
    assert service == "web" and reason is not None and f"pid {os.getpid()}" in reason
    assert local.port_problems() == {"web": reason}

    # Its instance answers its checks (reached directly), yet clients reach the holder.
    view = tracker.view("web")
    assert view.status is ServiceStatus.UNHEALTHY and view.reason == reason
    assert tracker.port_problem("web") == reason

    # Verified meanwhile: kept for the router, not an error although no router runs.
    await eventually(lambda: _answers(instance.port), timeout=15, message="the instance")
    await local.mark_serving(spec, [instance.id])

    # Tries back off (0.1, 0.2, 0.4, 0.4 s): one line each, never a growing burst.
    first = line.created
    fourth = await eventually(
        lambda: len(problem_lines(caplog)) >= 4, timeout=10, message="a fourth try"
    )
    assert fourth
    lines = problem_lines(caplog)
    assert [f"(try {n};" in r.message for n, r in enumerate(lines, 1)] == [True] * len(lines)
    assert lines[3].created - first >= 0.1 + 0.2 + 0.4 - 0.05, "waits must grow"
    assert len(told) == 1, "the same reason is told once, not at each try"

    holder.close()
    await eventually(lambda: not local.port_problems(), timeout=5, message="the port served")
    assert told[-1] == ("web", None)
    assert tracker.port_problem("web") is None
    assert tracker.view("web").status is not ServiceStatus.UNHEALTHY
    # The backend admitted while the router could not run was pushed when it came up.
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/health")
    assert answer.status_code == 200
    lines_at_recovery = len(problem_lines(caplog))
    await asyncio.sleep(FAST.most * 2)  # a quiet period: no try may follow recovery
    assert len(problem_lines(caplog)) == lines_at_recovery


async def _answers(port: int | None) -> bool:
    assert port is not None
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    except httpx.TransportError:
        return False


async def test_a_second_phoenix_on_the_same_port_names_the_first_ones_router(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ROUTING_LOG)
    port = free_port()
    spec = spec_of(tmp_path, web_service(port))
    first = make_platform(tmp_path / "one", store, owner=OWNER + "-one")
    second_store = Store(f"sqlite:///{tmp_path / 'two.db'}")
    second_store.migrate()
    second = make_platform(tmp_path / "two", second_store, owner=OWNER + "-two")
    try:
        assert await first.reconcile([spec]) == {}
        router = first.routers.instance("web")
        assert router is not None and router.pid is not None
        assert await second.reconcile([spec]) == {}
        reason = second.port_problems()["web"]
        assert f"held by pid {router.pid} (" in reason
        assert "phoenix_server.platforms.router --service web" in reason
        assert first.port_problems() == {}, "the first keeps serving"
    finally:
        await second.shutdown(keep_running=False)
        await first.shutdown(keep_running=False)
        second_store.close()


async def test_a_router_that_exits_at_start_is_retried_one_line_per_try(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The router process itself failing (not the pre-check): the bug was a restart task
    spawned at each exit on top of the retrying loop, so try N logged N lines."""
    caplog.set_level(logging.INFO, logger=ROUTING_LOG)
    spec = spec_of(tmp_path, web_service(free_port()))
    failing = tmp_path / "python-that-fails"
    failing.write_text("#!/bin/sh\necho broken interpreter >&2\nexit 3\n")
    failing.chmod(0o755)
    keeper = RouterKeeper(
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "logs",
        journal=StoreJournal(store),
        clock=SystemClock(),
        env=dict(os.environ),
        python=str(failing),
        backoff=FAST,
    )
    try:
        await keeper.ensure(spec, None)
        await eventually(lambda: len(problem_lines(caplog)) >= 5, timeout=10, message="5 tries")
        started = time.monotonic()
        await eventually(lambda: len(problem_lines(caplog)) >= 6, timeout=10, message="6 tries")
        assert time.monotonic() - started >= FAST.most - 0.1, "at most one try per step"
        lines = problem_lines(caplog)
        assert [f"(try {n};" in r.message for n, r in enumerate(lines, 1)] == [True] * len(lines)
        assert "exited at start" in keeper.problems()["web"]
    finally:
        await keeper.shutdown(keep_running=False)
    assert await StoreJournal(store).load_instances(spec.platform) == []


async def test_an_unrouted_service_on_a_held_port_names_the_holder_and_starts_nothing(
    tmp_path: Path, local: LocalPlatform, held_port: tuple[int, socket.socket]
) -> None:
    port, _ = held_port
    spec = spec_of(tmp_path, web_service(port).replace("stop:", "router: false\n      stop:"))
    assert not spec.routed
    with pytest.raises(PlatformError, match=f"held by pid {os.getpid()}"):
        await local.start(spec)
    failed = await local.reconcile([spec])
    assert f"port {port} on 127.0.0.1 is held by pid {os.getpid()}" in failed["web"]
    assert local.instances("web") == []


async def test_an_instance_whose_own_port_is_taken_exits_and_is_seen_to(
    tmp_path: Path, local: LocalPlatform, held_port: tuple[int, socket.socket]
) -> None:
    """Behind a router an instance gets a port the kernel just gave out; should another
    process take it first, the instance cannot bind and exits: a crash like any other,
    which recovery replaces (with a new port)."""
    port, _ = held_port
    recorder = Recorder()
    local.subscribe(recorder)
    spec = spec_of(
        tmp_path,
        f"""
        - name: web
          command: ["{{python}}", "-m", "examples.services.web", "--port", "{port}", "--name", "web"]
          cwd: {REPO}
          port: {free_port()}
          health: {{http: "http://127.0.0.1:{{port}}/health"}}
        """,
    )
    [instance] = await local.start(spec)
    assert instance.port != port
    seen = await eventually(
        lambda: recorder.first(InstanceEventKind.EXITED), timeout=15, message="the exit"
    )
    assert seen[1].instance.exit_code not in (0, None)
