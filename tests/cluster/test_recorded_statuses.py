"""Following the statuses other replicas record, on the real PostgreSQL server: read whole
once, then only what is new, including a row whose id was handed out before a newer one but
committed after it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.runtime import elsewhere
from phoenix_server.runtime.elsewhere import RecordedStatuses
from phoenix_server.store import health_events
from phoenix_server.store.database import Store

pytestmark = pytest.mark.postgres

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(store: Store, service: str, status: ServiceStatus, reason: str = "") -> None:
    store.run_sync(health_events.record_statuses, [(service, AT, status, reason)])


async def test_the_latest_of_each_then_only_what_is_new(
    postgres_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(postgres_store, "billing", ServiceStatus.HEALTHY)
    record(postgres_store, "billing", ServiceStatus.UNHEALTHY, "probe failed")
    record(postgres_store, "azora-auth", ServiceStatus.HEALTHY)
    statuses = RecordedStatuses(postgres_store, monotonic=Clock())
    await statuses.refresh()
    assert statuses.get("billing") == (AT, ServiceStatus.UNHEALTHY, "probe failed")
    assert statuses.get("azora-auth") == (AT, ServiceStatus.HEALTHY, "")
    assert statuses.get("nobody") is None

    asked: list[dict[str, object]] = []
    real = health_events.status_changes

    def spy(session: object, **kwargs: object) -> object:
        asked.append(kwargs)
        return real(session, **kwargs)  # type: ignore[arg-type]

    record(postgres_store, "azora-auth", ServiceStatus.DEGRADED, "slow")
    monkeypatch.setattr(health_events, "status_changes", spy)
    await statuses.refresh()
    assert statuses.get("azora-auth") == (AT, ServiceStatus.DEGRADED, "slow")
    assert asked == [{"after": 3, "missing": []}], "only rows after the newest read"


async def test_a_row_committed_after_a_newer_one_is_still_seen(postgres_store: Store) -> None:
    clock = Clock()
    statuses = RecordedStatuses(postgres_store, monotonic=clock)
    record(postgres_store, "billing", ServiceStatus.HEALTHY)
    await statuses.refresh()

    slow = postgres_store.engine.connect()
    writing = slow.begin()
    slow.execute(
        text(
            "INSERT INTO health_events (service, at, status, reason) "
            "VALUES ('billing', :at, 'unhealthy', 'late')"
        ),
        {"at": AT},
    )  # id 2, not committed yet
    record(postgres_store, "azora-auth", ServiceStatus.HEALTHY)  # id 3, committed
    await statuses.refresh()
    assert statuses.get("azora-auth") is not None
    assert statuses.get("billing") == (AT, ServiceStatus.HEALTHY, "")
    writing.commit()
    slow.close()
    await statuses.refresh()
    assert statuses.get("billing") == (AT, ServiceStatus.UNHEALTHY, "late")

    # An id never committed (rolled back) is given up after a while.
    gone = postgres_store.engine.connect()
    rolled = gone.begin()
    gone.execute(
        text(
            "INSERT INTO health_events (service, at, status, reason) "
            "VALUES ('billing', :at, 'healthy', 'never')"
        ),
        {"at": AT},
    )
    rolled.rollback()
    gone.close()
    record(postgres_store, "azora-auth", ServiceStatus.UNHEALTHY)
    await statuses.refresh()
    assert statuses._skipped, "the rolled-back id is asked for"
    clock.now += elsewhere.SKIPPED_IDS_ASKED_FOR + 1
    await statuses.refresh()
    assert not statuses._skipped
    assert statuses.get("billing") == (AT, ServiceStatus.UNHEALTHY, "late")
