"""Alembic environment: Phoenix passes its own connection in ``config.attributes``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection

from phoenix_server.store.tables import Base, UTCDateTime


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write UTCDateTime as its storage type, so migrations never import the live models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - Phoenix always supplies one
    raise RuntimeError("run migrations through phoenix_server.store.database.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
