"""Uptime baselines among replicas: only a service's owner knows its uptime, so only it
advances and saves the baseline; a replica taking a service over starts from what the
previous owner saved, not afresh (on the real PostgreSQL server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.health import UptimeBaseline
from phoenix_server.runtime.uptime_baselines import UptimeBaselines
from phoenix_server.store import baselines
from phoenix_server.store.database import Store

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CATALOG = parse_service_file(
    "services:\n"
    + "".join(
        f"  - name: {name}\n    platform: external\n    health: {{http: 'http://127.0.0.1:9/'}}\n"
        for name in ("mine", "theirs")
    ),
    source="s.yaml",
    base_dir=Path("/srv"),
    default_interval=1.0,
)


class Tracker:
    """What this replica's tracker says of each service's uptime (it watches only its own)."""

    def __init__(self, uptime: dict[str, float | None]) -> None:
        self.uptime = uptime

    def view(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(uptime=self.uptime.get(name))


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


async def test_only_the_owner_advances_a_baseline_and_a_new_owner_carries_it_on(
    postgres_store: Store,
) -> None:
    clock = Clock()
    owned = {"mine"}
    here = UptimeBaselines(
        CATALOG,
        Tracker({"mine": 99.0}),  # type: ignore[arg-type]
        postgres_store,
        clock,  # type: ignore[arg-type]
        watches=lambda name: name in owned,
    )
    elsewhere = UptimeBaseline(
        "theirs", managed_since=T0 - timedelta(hours=5), first_day_uptime=90.0
    )
    await here.load()
    # The owner of "theirs" saves its baseline after this replica loaded them all.
    postgres_store.run_sync(baselines.save_baselines, [elsewhere])
    clock.at = T0 + timedelta(minutes=1)
    assert await here.look(save_all=True) is False
    saved = postgres_store.run_sync(baselines.load_baselines)
    assert saved["mine"].first_day_uptime == 99.0
    assert saved["theirs"] == elsewhere, "another replica's baseline not begun again here"
    assert here.get("theirs") is None

    # The other replica moves it on, then this one takes the service over.
    moved = elsewhere.advanced(T0 + timedelta(hours=1), 80.0)
    postgres_store.run_sync(baselines.save_baselines, [moved])
    owned.add("theirs")
    await here.taken_over(["theirs"])
    assert here.get("theirs") == moved, "carried on, not begun again at the takeover"
