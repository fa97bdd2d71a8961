"""Watch streams: which committed changes a watch sees, and the events it is sent.

A watch with a label or field selector sees an object enter or leave its selection as
``ADDED`` or ``DELETED`` (the apiserver's watch cache does this), not as ``MODIFIED``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from . import selectors
from .resources import ResourceType
from .store import Change

Obj = dict[str, Any]
WatchEvent = tuple[str, Obj]


@dataclass(frozen=True)
class WatchFilter:
    resource: ResourceType
    namespace: str | None
    labels: selectors.Selector = ()
    fields: selectors.FieldSelector = ()

    def selects(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        return selectors.matches(self.labels, obj["metadata"].get("labels")) and (
            selectors.fields_match(self.fields, obj)
        )

    def classify(self, change: Change) -> WatchEvent | None:
        if change.resource is not self.resource:
            return None
        if self.namespace is not None and change.namespace != self.namespace:
            return None
        was, now = self.selects(change.old), self.selects(change.new)
        if change.type == "DELETED":
            return ("DELETED", change.new) if was or now else None
        if was and now:
            return ("MODIFIED", change.new)
        if now:
            return ("ADDED", change.new)
        if was:
            return ("DELETED", change.new)
        return None


@dataclass(eq=False)
class WatchSession:
    """One open watch: the events waiting to be written, and the connection to cut."""

    filter: WatchFilter
    transport: asyncio.Transport | None
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    dropped: bool = False

    def on_change(self, change: Change) -> None:
        event = self.filter.classify(change)
        if event is not None:
            self.queue.put_nowait(event)

    def end(self) -> None:
        """Finish the stream cleanly (the server is stopping)."""
        self.queue.put_nowait(None)

    def drop(self) -> None:
        """Cut the connection mid-stream, without the chunked terminator: what a client sees
        when a load balancer or the apiserver itself goes away."""
        self.dropped = True
        if self.transport is not None:
            self.transport.abort()
        self.queue.put_nowait(None)


def encode(event_type: str, obj: Obj) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def bookmark(rt: ResourceType, rv: int, *, initial_events_end: bool = False) -> Obj:
    metadata: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata}
