"""Report keys in the store, on SQLite and PostgreSQL: kept for a day after a copy last
arrived (longer while one holds its incident open), bounded in number."""

from __future__ import annotations

from datetime import timedelta

from phoenix_server.domain.reports import SeenReport
from phoenix_server.store import report_keys
from phoenix_server.store.database import Store
from phoenix_server.support.timefmt import utcnow


def seen(
    key: str, age: timedelta, *, holds_open: bool = False, resolved: bool = True
) -> SeenReport:
    return SeenReport(
        key=key,
        service="web",
        incident_id="inc-000000000001" if holds_open else None,
        holds_open=holds_open,
        resolved=resolved,
        seen_at=utcnow() - age,
    )


async def test_a_key_is_saved_renewed_and_read_back(store: Store) -> None:
    key = "am:" + "f" * 600 + "@2026-12-04T03:00:00.000Z"  # the longest a key can be
    await store.write(report_keys.save_seen, seen(key, timedelta(hours=3), holds_open=True))
    renewed = seen(key, timedelta(0), holds_open=True, resolved=False)
    await store.write(report_keys.save_seen, renewed)
    back = await store.read(report_keys.recent_seen, since=utcnow() - timedelta(days=1), limit=10)
    assert back == [renewed]


async def test_old_keys_are_pruned_unless_one_holds_its_incident_open(store: Store) -> None:
    await store.write(report_keys.save_seen, seen("old", timedelta(days=2)))
    await store.write(
        report_keys.save_seen,
        seen("old-but-firing", timedelta(days=2), holds_open=True, resolved=False),
    )
    await store.write(report_keys.save_seen, seen("new", timedelta(hours=1)))
    day_ago = utcnow() - timedelta(days=1)
    await store.write(report_keys.prune_seen, before=day_ago, keep=100)
    back = await store.read(report_keys.recent_seen, since=day_ago, limit=100)
    assert [s.key for s in back] == ["old-but-firing", "new"], "oldest first"


async def test_only_the_newest_keys_are_kept_past_the_bound(store: Store) -> None:
    for n in range(10):
        await store.write(report_keys.save_seen, seen(f"k{n}", timedelta(minutes=10 - n)))
    day_ago = utcnow() - timedelta(days=1)
    await store.write(report_keys.prune_seen, before=day_ago, keep=4)
    back = await store.read(report_keys.recent_seen, since=day_ago, limit=100)
    assert [s.key for s in back] == ["k6", "k7", "k8", "k9"]
    limited = await store.read(report_keys.recent_seen, since=day_ago, limit=2)
    assert [s.key for s in limited] == ["k8", "k9"]
