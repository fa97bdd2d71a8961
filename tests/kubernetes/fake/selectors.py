"""Label and field selectors: the query-string forms a client sends, and the LabelSelector
objects workloads carry (``spec.selector``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import errors
from .resources import EVENTS, NAMESPACES, PODS, REPLICASETS, ResourceType

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[^,]*?))?\s*$"
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects that lack the key altogether, as Kubernetes does.
        return not present or value not in self.values


Selector = tuple[Requirement, ...]


def _split(text: str) -> list[str]:
    """Split on the commas that separate requirements, not those inside ``in (a,b)``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str) -> Selector:
    requirements = []
    for part in _split(text):
        match = _REQUIREMENT.match(part)
        if match is None:
            raise errors.bad_request(f"unable to parse requirement: {part!r}")
        key, op, value = match["key"], (match["op"] or "").strip(), match["value"]
        if match["neg"]:
            if op:
                raise errors.bad_request(f"unable to parse requirement: {part!r}")
            requirements.append(Requirement(key, "!exists"))
        elif not op:
            requirements.append(Requirement(key, "exists"))
        elif op in ("in", "notin"):
            if not value or not value.startswith("("):
                raise errors.bad_request(
                    f"unable to parse requirement: found '{value}', expected: '('"
                )
            values = tuple(v.strip() for v in value[1:-1].split(",") if v.strip())
            requirements.append(Requirement(key, op, values))
        else:
            requirements.append(
                Requirement(key, "!=" if op == "!=" else "=", ((value or "").strip(),))
            )
    return tuple(requirements)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    return all(r.matches(labels or {}) for r in selector)


def label_selector_matches(
    selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None
) -> bool:
    """A LabelSelector object (``matchLabels``/``matchExpressions``). An empty one selects
    everything; workloads are validated never to carry one."""
    return matches(from_label_selector(selector), labels)


def from_label_selector(selector: Mapping[str, Any] | None) -> Selector:
    selector = selector or {}
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    found = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        values = tuple(expression.get("values") or ())
        found.append(Requirement(expression["key"], ops[expression["operator"]], values))
    return tuple(found)


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """The selector as ``Scale.status.selector`` spells it: requirements sorted by key."""
    parts = []
    for r in sorted(from_label_selector(selector), key=lambda r: (r.key, r.op)):
        if r.op == "=":
            parts.append(f"{r.key}={r.values[0]}")
        elif r.op in ("in", "notin"):
            parts.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        else:
            parts.append(r.key if r.op == "exists" else f"!{r.key}")
    return ",".join(parts)


# -- field selectors -------------------------------------------------------------------------

FieldGetter = Callable[[Mapping[str, Any]], str | None]


def _path(*keys: str) -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str | None:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_COMMON: dict[str, FieldGetter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
_BY_RESOURCE: dict[ResourceType, dict[str, FieldGetter]] = {
    PODS: {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": _path("spec", "hostNetwork"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    EVENTS: {
        **{f"involvedObject.{f}": _path("involvedObject", f) for f in _INVOLVED},
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    REPLICASETS: {"status.replicas": _path("status", "replicas")},
    NAMESPACES: {"status.phase": _path("status", "phase")},
}


@dataclass(frozen=True)
class FieldRequirement:
    getter: FieldGetter
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = self.getter(obj)
        # A missing field compares as the empty string, as the apiserver's field sets do.
        equal = (actual if actual is not None else "") == self.value
        return equal != self.negate


FieldSelector = tuple[FieldRequirement, ...]


def parse_field_selector(rt: ResourceType, text: str) -> FieldSelector:
    fields = {**_COMMON, **_BY_RESOURCE.get(rt, {})}
    found = []
    for part in (p for p in text.split(",") if p.strip()):
        for op in ("!=", "==", "="):
            if op in part:
                key, value = (s.strip() for s in part.split(op, 1))
                break
        else:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if key not in fields:
            raise errors.bad_request(f"field label not supported: {key}")
        found.append(FieldRequirement(fields[key], op == "!=", value))
    return tuple(found)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in selector)
