"""The alert outbox in the store: one per event, due when due, each try recorded —
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from phoenix_server.domain.alerts import Alert, AlertKind
from phoenix_server.store import alerts
from phoenix_server.store.database import Store

NOW = datetime(2025, 11, 25, 18, 0, tzinfo=UTC)


def alert(alert_id: str, event: str) -> Alert:
    return Alert(
        id=alert_id,
        dedup_key=f"recovery_failed:{event}",
        kind=AlertKind.RECOVERY_FAILED,
        service="billing",
        created_at=NOW,
        text="[phoenix] billing: attempt 1 failed",
        recovery_id=event,
        tried=("restart",),
    )


def test_one_alert_per_event_and_its_exact_body(store: Store) -> None:
    assert store.run_sync(alerts.enqueue, alert("alt-1", "rec-1")) is True
    assert store.run_sync(alerts.enqueue, alert("alt-2", "rec-1")) is False, "same event"
    [queued] = store.run_sync(alerts.due, now=NOW)
    assert (queued.id, queued.attempts) == ("alt-1", 0)
    body = json.loads(queued.body)
    assert body["kind"] == "recovery_failed" and body["statusPath"] == "/api/recovery/status/rec-1"
    assert body["tried"] == ["restart"] and body["timestamp"] == "2025-11-25T18:00:00.000Z"


def test_a_failed_try_waits_for_its_retry_and_a_delivered_one_is_done(store: Store) -> None:
    store.run_sync(alerts.enqueue, alert("alt-1", "rec-1"))
    store.run_sync(alerts.enqueue, alert("alt-2", "rec-2"))
    later = NOW + timedelta(seconds=4)
    store.run_sync(alerts.failed, "alt-1", retry_at=later, error="the webhook answered 500")
    store.run_sync(alerts.delivered, "alt-2", at=NOW)
    assert store.run_sync(alerts.due, now=NOW + timedelta(seconds=1)) == []
    [again] = store.run_sync(alerts.due, now=later)
    assert (again.id, again.attempts) == ("alt-1", 1)
    assert store.run_sync(alerts.undelivered) == 1


def test_the_backlog_counts_undelivered_alerts_and_dates_the_oldest(store: Store) -> None:
    assert store.run_sync(alerts.backlog) == (0, None)
    store.run_sync(alerts.enqueue, alert("alt-1", "rec-1"))
    later = replace(alert("alt-2", "rec-2"), created_at=NOW + timedelta(hours=1))
    store.run_sync(alerts.enqueue, later)
    store.run_sync(alerts.delivered, "alt-1", at=NOW)
    assert store.run_sync(alerts.backlog) == (1, NOW + timedelta(hours=1))
