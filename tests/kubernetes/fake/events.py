"""core/v1 Events as kubelets and controllers record them, including the aggregation that
turns a repeated event into one whose ``count`` grows (BackOff, Unhealthy, ...)."""

from __future__ import annotations

import itertools
import time
from typing import Any

from . import errors, naming
from .registry import Registry
from .resources import EVENTS

Obj = dict[str, Any]
NORMAL, WARNING = "Normal", "Warning"
_EventKey = tuple[str, str, str, str, str, str]


class EventRecorder:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._seen: dict[_EventKey, tuple[str, str]] = {}  # key → (namespace, event name)
        self._sequence = itertools.count()

    def record(
        self,
        obj: Obj,
        event_type: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str | None = None,
        field_path: str | None = None,
    ) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), field_path or "", event_type, reason, message, component)
        now = naming.timestamp()
        known = self._seen.get(key)
        if known is not None:
            updated = self._registry.mutate(EVENTS, *known, lambda e: _repeat(e, now))
            if updated is not None:
                return
        involved: Obj = {
            "kind": obj.get("kind"),
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta.get("uid"),
            "apiVersion": obj.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        # Kubernetes names an event <object>.<unix nanoseconds in hex>.
        name = f"{meta['name']}.{time.time_ns() + next(self._sequence):x}"
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        try:
            self._registry.create(EVENTS, namespace, event)
        except errors.ApiStatusError:
            return  # the namespace is being deleted: a real recorder drops the event too
        self._seen[key] = (namespace, name)


def _repeat(event: Obj, now: str) -> None:
    event["count"] = event.get("count", 1) + 1
    event["lastTimestamp"] = now
