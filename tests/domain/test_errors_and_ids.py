"""domain/errors.py, domain/ids.py and the ManualClock of domain/clock.py."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from phoenix_server.domain import ids
from phoenix_server.domain.clock import ManualClock
from phoenix_server.domain.errors import (
    ConfigError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PhoenixError,
    PlatformError,
    Problem,
    ProcessStartError,
    RecoveryInProgressError,
    UnavailableError,
    UnsupportedStrategyError,
)

# --- errors ------------------------------------------------------------------------------------


def test_problem_str_joins_path_and_message() -> None:
    assert str(Problem("steps[1].condition", "unknown condition")) == (
        "steps[1].condition: unknown condition"
    )


def test_problem_str_without_path_is_the_message() -> None:
    assert str(Problem("", "cannot read the file")) == "cannot read the file"


def test_config_error_lines_prefix_each_problem_with_the_source() -> None:
    error = ConfigError(
        "services.yaml",
        [Problem("services[0] (a).port", "too big"), Problem("", "whole file problem")],
    )
    assert error.lines() == [
        "services.yaml: services[0] (a).port: too big",
        "services.yaml: whole file problem",
    ]


def test_config_error_without_problems_is_one_line_of_message() -> None:
    error = ConfigError("no service file given")
    assert error.problems == []
    assert error.lines() == ["no service file given"]
    assert str(error) == "no service file given"


def test_recovery_in_progress_error_names_service_and_recovery() -> None:
    error = RecoveryInProgressError("azora-auth", "rec-0123456789ab")
    assert error.service == "azora-auth"
    assert error.recovery_id == "rec-0123456789ab"
    assert "'azora-auth'" in error.message
    assert "rec-0123456789ab" in error.message
    assert "force=true" in error.message
    assert str(error) == error.message
    assert error.code == "recovery_in_progress"
    assert isinstance(error, ConflictError)


def test_invalid_request_error_carries_problems() -> None:
    problems = [Problem("name", "required")]
    assert InvalidRequestError("invalid playbook", problems).problems == problems
    assert InvalidRequestError("invalid").problems == []


@pytest.mark.parametrize(
    ("error", "code", "parents"),
    [
        (NotFoundError("x"), "not_found", ()),
        (ConflictError("x"), "conflict", ()),
        (InvalidRequestError("x"), "invalid", ()),
        (UnsupportedStrategyError("x"), "unsupported_strategy", (InvalidRequestError,)),
        (UnavailableError("x"), "unavailable", ()),
        (ConfigError("x"), "config_invalid", ()),
        (PlatformError("x"), "platform_error", ()),
        (ProcessStartError("x"), "process_start_failed", (PlatformError,)),
    ],
)
def test_error_tree_codes_and_parents(
    error: PhoenixError, code: str, parents: tuple[type[Exception], ...]
) -> None:
    assert error.code == code
    assert isinstance(error, PhoenixError)
    for parent in parents:
        assert isinstance(error, parent)
    assert error.message == "x"


# --- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [ids.RECOVERY, ids.PLAYBOOK, ids.INCIDENT])
def test_new_id_has_the_kind_prefix_and_hex_suffix(prefix: str) -> None:
    value = ids.new_id(prefix)
    assert re.fullmatch(rf"{prefix}-[0-9a-f]{{12}}", value), value


def test_prefixes_are_the_api_kinds() -> None:
    assert (ids.RECOVERY, ids.PLAYBOOK, ids.INCIDENT) == ("rec", "pb", "inc")


def test_new_ids_are_unique_over_many() -> None:
    made = [ids.new_id(ids.RECOVERY) for _ in range(20_000)]
    assert len(set(made)) == len(made)


# --- ManualClock -------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_manual_clock_starts_at_a_fixed_time() -> None:
    clock = ManualClock()
    assert clock.now() == datetime(2025, 11, 25, 18, 0, tzinfo=UTC)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert ManualClock(start).now() == start


def test_advance_moves_wall_and_monotonic_time_together() -> None:
    clock = ManualClock()
    wall, mono = clock.now(), clock.monotonic()
    clock.advance(2.5)
    assert clock.now() - wall == timedelta(seconds=2.5)
    assert clock.monotonic() - mono == pytest.approx(2.5)


async def test_sleepers_wake_only_when_advanced_enough_and_in_order() -> None:
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(label: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(label)

    tasks = [
        asyncio.create_task(sleeper("five", 5)),
        asyncio.create_task(sleeper("one", 1)),
        asyncio.create_task(sleeper("three", 3)),
    ]
    await _settle()
    assert woke == []

    clock.advance(0.5)
    await _settle()
    assert woke == []

    clock.advance(0.5)
    await _settle()
    assert woke == ["one"]

    clock.advance(1.9)
    await _settle()
    assert woke == ["one"]

    clock.advance(10)
    await _settle()
    assert woke == ["one", "three", "five"]
    await asyncio.gather(*tasks)


async def test_zero_or_negative_sleep_wakes_on_the_next_advance() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    tasks = [asyncio.create_task(sleeper(-1)), asyncio.create_task(sleeper(0))]
    await _settle()
    assert woke == []
    clock.advance(0)
    await _settle()
    assert sorted(woke) == [-1, 0]
    await asyncio.gather(*tasks)


async def test_sleep_deadline_counts_from_when_sleep_was_called() -> None:
    clock = ManualClock()
    clock.advance(100)
    task = asyncio.create_task(clock.sleep(2))
    await _settle()
    clock.advance(1.5)
    await _settle()
    assert not task.done()
    clock.advance(0.5)
    await _settle()
    assert task.done()


async def test_a_cancelled_sleeper_does_not_break_advance() -> None:
    clock = ManualClock()
    cancelled = asyncio.create_task(clock.sleep(1))
    survivor = asyncio.create_task(clock.sleep(1))
    await _settle()
    cancelled.cancel()
    await _settle()
    clock.advance(1)
    await _settle()
    assert cancelled.cancelled()
    assert survivor.done() and not survivor.cancelled()
