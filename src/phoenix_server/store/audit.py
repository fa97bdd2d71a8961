"""The audit log: every mutating API call, newest first for admins.

Entries are written after the call answers (an audit write never delays or fails the call
it records). While the database is away they wait in memory — up to :data:`PENDING_MAX`,
the oldest dropped first with a logged count — and go in with the next entry that can be
written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from phoenix_server.domain.auth import AuditEntry, Role
from phoenix_server.domain.errors import UnavailableError
from phoenix_server.store.database import Store
from phoenix_server.store.tables import AuditRow

log = logging.getLogger("phoenix.store")

PENDING_MAX = 10_000


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

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def record(self, entry: AuditEntry) -> None:
        if len(self._pending) == PENDING_MAX:
            log.error("audit log: the database has been away too long; dropping the oldest")
        self._pending.append(entry)
        async with self._writing:
            batch = list(self._pending)
            if not batch:
                return  # an earlier write took it
            try:
                await self._store.write(append, batch)
            except UnavailableError as exc:
                log.warning("audit log: %d entr(ies) wait for the database (%s)", len(batch), exc)
                return
            written = {e.id for e in batch}
            self._pending = deque(
                (e for e in self._pending if e.id not in written), maxlen=PENDING_MAX
            )
