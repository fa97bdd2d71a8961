"""Timestamps as the API contract writes them: ISO 8601 UTC with milliseconds and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (Phoenix never handles naive datetimes)."""
    return datetime.now(UTC)


def iso_ms(moment: datetime | None) -> str | None:
    """``2025-11-25T18:00:00.000Z`` for ``moment`` (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime (listing 100 services formats 200).
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def as_utc(moment: datetime) -> datetime:
    """Attach UTC to a naive datetime read back from a database that drops the zone."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
