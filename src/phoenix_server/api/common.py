"""What every router shares: the runtime dependency, paging, the camelCase wire model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from phoenix_server.api.engine import Engine
from phoenix_server.support.timefmt import as_utc

MAX_LIMIT = 1000


class WireModel(BaseModel):
    """JSON on the wire is camelCase (``recoveryId``, ``startTime``), Python stays snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class StrictInput(BaseModel):
    """Request bodies: unknown fields are an error, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def _in_utc(moment: datetime) -> datetime:
    try:
        return as_utc(moment)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError("out of range once converted to UTC") from None


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]
"""A time in a request, as UTC (a time without a zone is taken as UTC)."""


def _storable(text: str) -> str:
    if "\x00" in text:
        raise ValueError("contains a NUL character, which no database column can hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can escape half a surrogate pair ("\udc00"): not text UTF-8 can carry.
        raise ValueError("not valid Unicode (an unpaired surrogate)") from None
    return text


StorableText = Annotated[str, AfterValidator(_storable)]
"""Text from a request that ends up in the store: refused up front (naming the field) if
SQLite or PostgreSQL could not hold it, rather than failing a write halfway through."""


async def get_runtime(request: Request) -> Engine:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
    # thread hop on every request that cost a fifth of the API's time under load.
    runtime: Engine = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Engine, Depends(get_runtime)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (default 50, max 1000)")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip")]
