"""Suite-wide guards: no test may leave a child process or an asyncio task behind.

The test process makes itself a *child subreaper*, so a process orphaned by something a
test started (a service whose Phoenix was SIGKILLed, say) is re-parented to pytest and
counted here instead of escaping to init unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
LEAK_GRACE = 5.0


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def _descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def _new_trees(before: set[int]) -> dict[int, psutil.Process]:
    """Live descendants that do not hang below a process that was already there: what a
    module-scoped server starts while a test runs belongs to that server, not to the test."""
    me = os.getpid()
    found = {}
    for pid, process in _descendants().items():
        try:
            if pid in before or process.status() == psutil.STATUS_ZOMBIE:
                continue
            ancestors = {p.pid for p in process.parents()}
        except psutil.Error:
            continue
        if not (ancestors - {me}) & before:
            found[pid] = process
    return found


def _fail_leaks(leaked: dict[int, psutil.Process], what: str) -> None:
    described = []
    for pid, process in leaked.items():
        with contextlib.suppress(psutil.Error):
            described.append(f"{pid} {' '.join(process.cmdline())[:120]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap_zombies()
    pytest.fail(f"{what} left {len(leaked)} process(es) running: " + "; ".join(described))


def _wait_for_leaks(before: set[int]) -> dict[int, psutil.Process]:
    deadline = time.monotonic() + LEAK_GRACE
    leaked: dict[int, psutil.Process] = {}
    while time.monotonic() < deadline:
        _reap_zombies()
        leaked = _new_trees(before)
        if not leaked:
            return {}
        time.sleep(0.05)
    return leaked


def _reap_zombies() -> None:
    """Collect orphans re-parented to us that have exited (we are their subreaper)."""
    for process in psutil.Process().children():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(process.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


@pytest.fixture(autouse=True, scope="session")
def no_processes_left_by_the_session() -> Iterator[None]:
    before = set(_descendants())
    yield
    leaked = _wait_for_leaks(before)
    if leaked:
        _fail_leaks(leaked, "the test session")


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = set(_descendants())
    yield
    leaked = _wait_for_leaks(before)
    if leaked:
        _fail_leaks(leaked, "test")


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Added (first) to every async test: fails it if tasks it started are still pending."""
    yield
    current = asyncio.current_task()
    for _ in range(10):
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(sorted(t.get_name() for t in pending))
    for task in pending:
        task.cancel()
    pytest.fail(f"test left {len(pending)} asyncio task(s) running: {names}")


E2E_DIRECTORY = "e2e"
"""Every test under ``tests/e2e`` is an end-to-end test, marked or not."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test is checked for leaked tasks; everything under ``tests/e2e`` is
    ``e2e`` (so ``pytest -m "not e2e"`` stays the fast tier); the long runs (``soak``)
    belong to ``make soak`` (PHOENIX_SOAK=1), not ``make test``."""
    soak = os.environ.get("PHOENIX_SOAK") == "1"
    skip = pytest.mark.skip(reason="a soak: run it with `make soak`")
    for item in items:
        if E2E_DIRECTORY in item.path.parts and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("asyncio") is not None and isinstance(item, pytest.Function):
            if "no_leaked_tasks" not in item.fixturenames:
                item.fixturenames.insert(0, "no_leaked_tasks")
        if item.get_closest_marker("soak") is not None and not soak:
            item.add_marker(skip)
