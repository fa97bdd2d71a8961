"""Uptime baselines: when Phoenix began managing each service and its first day's uptime,
kept across restarts — on SQLite and PostgreSQL; and how a baseline advances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from phoenix_server.domain.health import UptimeBaseline
from phoenix_server.store import baselines
from phoenix_server.store.database import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_baselines_round_trip_and_update(store: Store) -> None:
    first = UptimeBaseline("web", managed_since=T0, first_day_uptime=None)
    other = UptimeBaseline("db", managed_since=T0, first_day_uptime=99.5)
    store.run_sync(baselines.save_baselines, [first, other])
    assert store.run_sync(baselines.load_baselines) == {"web": first, "db": other}
    later = first.advanced(T0 + timedelta(hours=3), 97.25)
    store.run_sync(baselines.save_baselines, [later])
    assert store.run_sync(baselines.load_baselines)["web"] == later
    assert later.first_day_uptime == 97.25 and not later.complete


def test_a_baseline_follows_the_first_day_then_freezes() -> None:
    baseline = UptimeBaseline("web", managed_since=T0, first_day_uptime=None)
    baseline = baseline.advanced(T0 + timedelta(hours=1), 100.0)
    baseline = baseline.advanced(T0 + timedelta(hours=23), 90.0)
    assert baseline.first_day_uptime == 90.0 and baseline.change(99.0) is None, "day not over"
    baseline = baseline.advanced(T0 + timedelta(hours=24, minutes=1), 50.0)
    assert baseline.complete and baseline.first_day_uptime == 90.0, "the first day's last look"
    assert baseline.advanced(T0 + timedelta(days=9), 10.0) == baseline
    assert baseline.change(99.5) == 9.5 and baseline.change(None) is None
    # A look with nothing observed keeps what the first day showed so far.
    fresh = UptimeBaseline("x", managed_since=T0, first_day_uptime=80.0)
    assert fresh.advanced(T0 + timedelta(hours=2), None) == fresh
