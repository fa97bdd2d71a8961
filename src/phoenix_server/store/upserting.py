"""Insert-or-update in one statement, on both SQLite and PostgreSQL.

The recovery path writes before and after every step; the ORM's unit of work (load, diff,
flush) costs milliseconds per write there, and each millisecond is downtime. ``INSERT …
ON CONFLICT DO UPDATE`` does the same in one round trip. The statement is built once per
table and column set (building ``excluded`` proxies costs more than executing it) and runs
on the session's connection, past the ORM's bulk machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from phoenix_server.store.tables import Base


@lru_cache(maxsize=64)
def _statement(
    dialect: str, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]
) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    changes = {column: statement.excluded[column] for column in columns if column not in keys}
    return statement.on_conflict_do_update(index_elements=list(keys), set_=changes)


def upsert(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Write ``rows`` (all with the same columns), replacing any with the same ``keys``."""
    if not rows:
        return
    table = model.__table__
    assert isinstance(table, Table)
    connection = session.connection()
    statement = _statement(connection.dialect.name, table, tuple(keys), tuple(rows[0]))
    connection.execute(statement, list(rows))
