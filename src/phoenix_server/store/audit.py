"""The audit log: every mutating API call, newest first for admins.

Entries are written after the call answers (an audit write never delays or fails the call
it records). While the database is away they wait in memory — up to :data:`PENDING_MAX`,
the oldest dropped first with a logged count — and go in with the next entry that can be
written.

What a caller sent (method, path, remote address) is hostile input: every string is
cleaned and clipped to its column (:func:`storable`) before it is written, and an entry
the database still refuses for a reason of its own (not an outage) is dropped and counted
(:attr:`AuditTrail.dropped`), so no single request can stop the entries behind it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections import deque

from sqlalchemy import String, func, insert, select
from sqlalchemy.orm import Session

from phoenix_server.domain.auth import AuditEntry, Role
from phoenix_server.domain.errors import UnavailableError
from phoenix_server.store.database import Store
from phoenix_server.store.tables import AuditRow

log = logging.getLogger("phoenix.store")

PENDING_MAX = 10_000
CLIPPED = "…"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _column_length(name: str) -> int:
    column_type = AuditRow.__table__.c[name].type
    assert isinstance(column_type, String) and column_type.length is not None
    return column_type.length


_LENGTHS = {name: _column_length(name) for name in ("actor", "method", "path", "remote")}
"""Each text column's width, read from the table so the two cannot drift apart."""


def clean_text(text: str, limit: int) -> str:
    """``text`` as any database can store and a person can read: control characters
    (NUL among them, which PostgreSQL refuses) and half surrogate pairs (which UTF-8
    cannot carry) shown escaped, then clipped to ``limit`` characters."""
    text = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        return text[: limit - len(CLIPPED)] + CLIPPED
    return text


def storable(entry: AuditEntry) -> AuditEntry:
    """``entry`` with every string the caller could choose cleaned and fitted to its column."""
    return dataclasses.replace(
        entry,
        actor=clean_text(entry.actor, _LENGTHS["actor"]),
        method=clean_text(entry.method, _LENGTHS["method"]),
        path=clean_text(entry.path, _LENGTHS["path"]),
        remote=clean_text(entry.remote, _LENGTHS["remote"]) if entry.remote else entry.remote,
    )


def append(session: Session, entries: list[AuditEntry]) -> None:
    session.execute(
        insert(AuditRow),
        [
            {
                "id": e.id,
                "at": e.at,
                "actor": e.actor,
                "role": e.role.value if e.role else None,
                "method": e.method,
                "path": e.path,
                "remote": e.remote,
                "status": e.status,
            }
            for e in entries
        ],
    )


def list_entries(
    session: Session, *, actor: str | None, limit: int, offset: int
) -> tuple[list[AuditEntry], int]:
    query = select(AuditRow)
    counted = select(func.count()).select_from(AuditRow)
    if actor is not None:
        query = query.where(AuditRow.actor == actor)
        counted = counted.where(AuditRow.actor == actor)
    rows = session.scalars(
        query.order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit).offset(offset)
    ).all()
    entries = [
        AuditEntry(
            id=row.id,
            at=row.at,
            actor=row.actor,
            role=Role(row.role) if row.role else None,
            method=row.method,
            path=row.path,
            remote=row.remote,
            status=row.status,
        )
        for row in rows
    ]
    return entries, session.scalar(counted) or 0


class AuditTrail:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: deque[AuditEntry] = deque(maxlen=PENDING_MAX)
        self._writing = asyncio.Lock()
        """One write at a time: each takes what waits, so nothing is written twice."""
        self.dropped = 0
        """Entries the database refused for a reason other than an outage, since start."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def record(self, entry: AuditEntry) -> None:
        if len(self._pending) == PENDING_MAX:
            log.error("audit log: the database has been away too long; dropping the oldest")
        self._pending.append(storable(entry))
        async with self._writing:
            batch = list(self._pending)
            if not batch:
                return  # an earlier write took it
            try:
                await self._store.write(append, batch)
            except UnavailableError as exc:
                log.warning("audit log: %d entr(ies) wait for the database (%s)", len(batch), exc)
                return
            except Exception as exc:  # any refusal but an outage
                # One entry the database will never take must not hold back the others:
                # write them one by one and drop only what is refused.
                log.debug(
                    "audit log: batch of %d refused (%s); writing one by one", len(batch), exc
                )
                batch = await self._write_each(batch)
            self._forget({e.id for e in batch})

    async def _write_each(self, batch: list[AuditEntry]) -> list[AuditEntry]:
        """Write ``batch`` entry by entry; the entries done with (written or dropped)."""
        done: list[AuditEntry] = []
        for entry in batch:
            try:
                await self._store.write(append, [entry])
            except UnavailableError as exc:
                log.warning("audit log: %d entr(ies) wait for the database (%s)", len(batch), exc)
                break
            except Exception as exc:  # the database will never take it
                self._drop(entry, exc)
            done.append(entry)
        return done

    def _drop(self, entry: AuditEntry, exc: Exception) -> None:
        self.dropped += 1
        if self.dropped == 1:  # once: a flood of bad requests must not flood the log
            log.error(
                "audit log: dropped an entry the database refused (%s %s: %s); later drops "
                "are only counted",
                entry.method,
                entry.path[:200],
                exc,
            )

    def _forget(self, done: set[str]) -> None:
        self._pending = deque((e for e in self._pending if e.id not in done), maxlen=PENDING_MAX)
