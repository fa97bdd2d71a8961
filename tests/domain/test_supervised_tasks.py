"""Background loops that die are started again (with backoff) and reported; a loop that
returns is done; cancellation stops them all."""

from __future__ import annotations

import asyncio

import pytest

from phoenix_server.support import tasks
from phoenix_server.support.tasks import SupervisedTasks
from tests.support import eventually


async def test_a_loop_that_dies_is_restarted_and_its_death_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "RESTART_FIRST", 0.01)
    group = SupervisedTasks("test")
    runs = 0

    async def sampler() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError(24, "Too many open files")
        await asyncio.sleep(3600)

    group.keep_running(sampler, name="sampler")
    await eventually(lambda: runs == 3, timeout=5, message="two restarts")
    death = group.deaths["test:sampler"]
    assert death.restarts == 2 and "Too many open files" in death.error
    assert "restarted (2 time(s) so far)" in death.describe()
    assert len(group) == 1, "still running"
    await group.close()
    assert len(group) == 0


async def test_a_loop_that_returns_is_done_not_dead() -> None:
    group = SupervisedTasks("test")

    async def nothing_to_do() -> None:
        return

    task = group.keep_running(nothing_to_do, name="idle")
    await asyncio.wait_for(task, timeout=5)
    assert group.deaths == {}


async def test_a_one_off_task_that_dies_stays_dead_and_says_so() -> None:
    group = SupervisedTasks("test")

    async def broken() -> None:
        raise RuntimeError("bug")

    task = group.spawn(broken(), name="once")
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    [death] = group.deaths.values()
    assert death.restarts is None and "restart Phoenix" in death.describe()
