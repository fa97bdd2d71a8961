"""Insert-or-update in one statement, on both SQLite and PostgreSQL.

The recovery path writes before and after every step; the ORM's unit of work (load, diff,
flush) costs milliseconds per write there, and each millisecond is downtime. ``INSERT …
ON CONFLICT DO UPDATE`` does the same in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from phoenix_server.store.tables import Base


def upsert(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Write ``rows`` (all with the same columns), replacing any with the same ``keys``."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model)
    changes = {column: statement.excluded[column] for column in rows[0] if column not in keys}
    session.execute(
        statement.on_conflict_do_update(index_elements=list(keys), set_=changes), list(rows)
    )
