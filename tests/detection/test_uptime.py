"""detection/uptime.py: the share of observed time a service was serving, over a horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from phoenix_server.detection.uptime import DAY, UptimeTimeline

T0 = datetime(2025, 11, 25, 0, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def timeline(*events: tuple[float, bool | None], horizon: timedelta = DAY) -> UptimeTimeline:
    line = UptimeTimeline(horizon)
    for hours, serving in events:
        line.record(at(hours), serving)
    return line


def test_none_when_nothing_was_recorded() -> None:
    assert UptimeTimeline().percent(T0) is None


def test_none_when_only_unobserved_time_was_recorded() -> None:
    assert timeline((0, None)).percent(at(5)) is None


def test_always_serving_is_one_hundred() -> None:
    assert timeline((0, True)).percent(at(3)) == 100.0


def test_never_serving_is_zero() -> None:
    assert timeline((0, False)).percent(at(3)) == 0.0


def test_percent_over_the_window() -> None:
    line = timeline((0, True), (1, False), (2, True))
    assert line.percent(at(4)) == 75.0


def test_percent_is_rounded_to_three_decimals() -> None:
    assert timeline((0, True), (2, False)).percent(at(3)) == 66.667


def test_a_state_observed_for_no_time_yet_counts_as_itself() -> None:
    assert timeline((0, True)).percent(T0) == 100.0
    assert timeline((0, False)).percent(T0) == 0.0


def test_unknown_intervals_are_excluded() -> None:
    # up 1h, unobserved 10h, down 1h: half of the observed time was serving.
    line = timeline((0, True), (1, None), (11, False))
    assert line.percent(at(12)) == 50.0


def test_an_unobserved_tail_neither_helps_nor_hurts() -> None:
    line = timeline((0, True), (3, False), (4, None))
    assert line.percent(at(20)) == 75.0


def test_only_the_horizon_counts() -> None:
    # down for the first 20 hours, then up: the last 24h of 30 hold 14h down, 10h up.
    line = timeline((0, False), (20, True))
    assert line.percent(at(30)) == pytest.approx(41.667)


def test_pruning_keeps_the_state_the_window_opens_in() -> None:
    # The False at 1h lies outside the horizon by the time of the 30h record, but it is
    # still the state at the window's start (6h) and must count until 25h.
    line = timeline((0, True), (1, False), (25, True), (30, True))
    assert line.percent(at(30)) == pytest.approx(100.0 * 5 / 24, abs=0.001)


def test_pruning_drops_states_that_ended_before_the_window() -> None:
    line = timeline((0, False), (1, True), (30, False))
    # window [8h, 32h]: up from 8h to 30h, down from 30h to 32h.
    assert line.percent(at(32)) == pytest.approx(91.667)


def test_nothing_observed_inside_the_window_is_none() -> None:
    line = timeline((0, True), (1, None))
    assert line.percent(at(48)) is None


def test_a_short_horizon() -> None:
    line = timeline((0, False), (1, True), horizon=timedelta(hours=2))
    assert line.percent(at(2)) == 50.0
    assert line.percent(at(3)) == 100.0


def test_repeated_states_are_ignored() -> None:
    line = UptimeTimeline()
    for minute in range(10_000):
        line.record(T0 + timedelta(minutes=minute), True)
    assert len(line._events) == 1  # memory stays bounded while nothing changes
    assert line.percent(T0 + timedelta(minutes=10_000)) == 100.0


def test_a_repeated_state_does_not_restart_the_interval() -> None:
    line = timeline((0, False), (1, True), (2, True), (3, False))
    assert line.percent(at(4)) == 50.0


def test_an_out_of_order_record_takes_effect_at_the_latest_known_time() -> None:
    # The late True (stamped 1h) is moved to 3h: it must not overwrite the down time 3h..
    # nor reach back to 1h.
    line = timeline((0, True), (3, False))
    line.record(at(1), True)
    line.record(at(5), False)
    # up 0-3h, down 3-3h, up 3-5h, down 5-6h
    assert line.percent(at(6)) == pytest.approx(83.333)
