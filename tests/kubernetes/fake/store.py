"""The fake's etcd: objects by kind, namespace and name, one global resourceVersion, and a
bounded history of changes that watches replay from.

Stored objects are never mutated once committed (every write stores a new dict), so readers
inside the process may hold them without copying, and the history keeps each version intact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed write, as a watch reports it (before selectors are applied)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    namespace: str
    name: str
    old: Obj | None
    new: Obj  # for DELETED, the object as it was deleted, carrying the deletion's rv


Listener = Callable[[Change], None]


class Store:
    def __init__(self, history_size: int = 10_000) -> None:
        self.rv = 1
        self._objects: dict[ResourceType, dict[tuple[str, str], Obj]] = {}
        self._history: deque[Change] = deque(maxlen=history_size)
        self._compacted = 1  # changes at or below this rv can no longer be replayed
        self._listeners: list[Listener] = []

    # -- reading ---------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """The stored object itself: callers must not mutate it."""
        return self._objects.get(rt, {}).get((namespace, name))

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind (in one namespace or all), in key order as etcd lists them."""
        found = self._objects.get(rt, {})
        keys = sorted(k for k in found if namespace is None or k[0] == namespace)
        return [found[k] for k in keys]

    def count(self, rt: ResourceType) -> int:
        return len(self._objects.get(rt, {}))

    # -- writing ---------------------------------------------------------------------------

    def put(self, rt: ResourceType, obj: Obj) -> Obj:
        """Commit a new version (the caller passes a fresh dict it will not touch again)."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(rt, {})
        old = bucket.get(key)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        bucket[key] = obj
        self._record(Change(self.rv, "MODIFIED" if old else "ADDED", rt, key[0], key[1], old, obj))
        return obj

    def remove(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        bucket = self._objects.get(rt, {})
        old = bucket.pop((namespace, name), None)
        if old is None:
            return None
        self.rv += 1
        gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
        self._record(Change(self.rv, "DELETED", rt, namespace, name, old, gone))
        return gone

    def _record(self, change: Change) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(change)
        for listener in list(self._listeners):
            listener(change)

    # -- history and listeners -------------------------------------------------------------

    @property
    def oldest_replayable(self) -> int:
        """A watch may resume from this resourceVersion or any later one."""
        return self._compacted

    def since(self, rv: int) -> Iterable[Change]:
        """Changes after ``rv``; the caller checked ``rv >= oldest_replayable``."""
        return [c for c in self._history if c.rv > rv]

    def compact(self) -> None:
        """Forget the history, as etcd compaction does: a watch resuming from any version
        handed out so far gets 410 Gone. The revision moves on by one (etcd revisions have
        gaps), so a list made after this returns a version a watch can start from."""
        self._history.clear()
        self.rv += 1
        self._compacted = self.rv

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
