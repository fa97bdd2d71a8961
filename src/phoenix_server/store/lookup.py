"""Looking records up by an id a client sent, whatever its form.

API.md: any id that does not exist is a 404, whatever its form. Some forms cannot even be
asked of the database (PostgreSQL refuses a NUL character; no id is that long), so they are
answered here as what they are: ids of nothing.
"""

from __future__ import annotations

from phoenix_server.domain.errors import NotFoundError

LONGEST_ID = 160


def check_lookup_id(kind: str, record_id: str) -> None:
    if "\x00" in record_id or len(record_id) > LONGEST_ID:
        shown = record_id[:40].replace("\x00", "\\0")
        raise NotFoundError(f"no {kind} with id '{shown}'")
