"""The audit log against hostile input, on SQLite and PostgreSQL: what a caller sends is
cleaned and clipped to fit, and an entry the database refuses never blocks the others
(one ``UNSUBSCRIBE`` or ``/x%00`` used to switch auditing off for good on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phoenix_server.domain import ids
from phoenix_server.domain.auth import AuditEntry, Role
from phoenix_server.store import audit
from phoenix_server.store.audit import AuditTrail
from phoenix_server.store.database import Store

AT = datetime(2026, 1, 1, tzinfo=UTC)


def entry(
    method: str = "POST", path: str = "/api/recovery/trigger", **changes: object
) -> AuditEntry:
    fields: dict[str, object] = {
        "id": ids.new_id(ids.AUDIT),
        "at": AT,
        "actor": "anonymous",
        "role": Role.ADMIN,
        "method": method,
        "path": path,
        "remote": "127.0.0.1",
        "status": 202,
    }
    fields.update(changes)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def stored(store: Store) -> list[AuditEntry]:
    entries, _total = store.run_sync(audit.list_entries, actor=None, limit=100, offset=0)
    return entries


HOSTILE = {
    "method-longer-than-the-column": entry(method="UNSUBSCRIBE"),
    "nul-in-the-path": entry(path="/x\x00"),
    "newline-and-escape-in-the-path": entry(path="/x\r\nX-Forged: 1\x1b[31m"),
    "half-a-surrogate-pair": entry(path="/x\udc00", actor="\ud800name"),
    "path-of-a-megabyte": entry(path="/" + "a" * 1_000_000),
    "remote-and-actor-too-long": entry(remote="r" * 500, actor="n" * 500),
}


@pytest.mark.parametrize("hostile", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_a_hostile_entry_is_stored_cleaned_and_the_next_one_too(
    store: Store, hostile: AuditEntry
) -> None:
    trail = AuditTrail(store)
    await trail.record(hostile)
    after = entry(path="/api/playbooks")
    await trail.record(after)
    assert trail.pending == 0 and trail.dropped == 0
    by_id = {e.id: e for e in stored(store)}
    assert set(by_id) == {hostile.id, after.id}
    kept = by_id[hostile.id]
    for text in (kept.method, kept.path, kept.actor, kept.remote or ""):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)
        text.encode("utf-8")  # no half surrogate pair left
    assert len(kept.method) <= 8 and len(kept.path) <= 2048 and len(kept.actor) <= 64
    assert kept.method.startswith(hostile.method[:7])


def test_clean_text_shows_what_it_removed() -> None:
    assert audit.clean_text("/x\x00\n", 100) == "/x\\x00\\x0a"
    assert audit.clean_text("/x\udc00", 100) == "/x\\udc00"
    assert audit.clean_text("UNSUBSCRIBE", 8) == "UNSUBSC…"


async def test_an_entry_the_database_refuses_is_dropped_and_counted_not_retried(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Cleaning cannot foresee every refusal (here a duplicate id): the refused entry is
    dropped, counted and logged once, and the entries beside it are written."""
    trail = AuditTrail(store)
    first = entry()
    await trail.record(first)
    for _ in range(3):
        await trail.record(entry(id=first.id))  # the same id: refused by the primary key
    good = entry(path="/api/events")
    await trail.record(good)
    assert trail.dropped == 3 and trail.pending == 0
    assert {e.id for e in stored(store)} == {first.id, good.id}
    drops = [r for r in caplog.records if "dropped an entry" in r.getMessage()]
    assert len(drops) == 1, "a flood of refused entries is logged once"


async def test_a_refused_entry_waiting_with_good_ones_does_not_hold_them_back(
    store: Store,
) -> None:
    """The batch case: entries that waited together go in one by one once the batch is
    refused, and only the refused one is lost."""
    trail = AuditTrail(store)
    first = entry()
    await trail.record(first)
    waiting = [entry(path="/a"), entry(id=first.id), entry(path="/b")]
    for item in waiting:
        trail._pending.append(audit.storable(item))  # as if the database had been away
    last = entry(path="/c")
    await trail.record(last)
    assert trail.dropped == 1 and trail.pending == 0
    paths = {e.path for e in stored(store)}
    assert paths == {"/api/recovery/trigger", "/a", "/b", "/c"}
