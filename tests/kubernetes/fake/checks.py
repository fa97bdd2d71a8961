"""What a real API server validates beyond its OpenAPI schemas: names, labels, selectors that
must match templates, images that must be given, fields that may not change. A subset of
Kubernetes' ``validation`` packages, with their field paths and messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import errors, selectors
from .errors import Cause
from .resources import (
    DEPLOYMENTS,
    HPAS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SERVICES,
    STATEFULSETS,
    ResourceType,
)

Obj = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PERCENT = re.compile(r"^[0-9]+%$")
# Enumerations the OpenAPI schemas do not spell out (the real validation code holds them).
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")

LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',"
    "  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for"
    " validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def _go_map(value: Mapping[str, Any] | None) -> str:
    """How Go's %#v prints a map[string]string in an Invalid value message."""
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted((value or {}).items()))
    return f"map[string]string{{{inner}}}"


class Problems:
    """Field errors found so far; raised together as one 422 Invalid, as the server does."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, field: str, detail: str = "") -> None:
        message = f"Required value: {detail}" if detail else "Required value"
        self.causes.append(Cause(field, "FieldValueRequired", message))

    def invalid(self, field: str, value: Any, detail: str) -> None:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        self.causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {shown}: {detail}"))

    def unsupported(self, field: str, value: Any, allowed: list[str]) -> None:
        listed = ", ".join(f'"{a}"' for a in allowed)
        message = f'Unsupported value: "{value}": supported values: {listed}'
        self.causes.append(Cause(field, "FieldValueNotSupported", message))

    def duplicate(self, field: str, value: Any) -> None:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        self.causes.append(Cause(field, "FieldValueDuplicate", f"Duplicate value: {shown}"))

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append(Cause(field, "FieldValueForbidden", f"Forbidden: {detail}"))

    def raise_if_any(self, rt: ResourceType, name: str) -> None:
        if self.causes:
            raise errors.invalid(rt, name, self.causes)


# -- metadata --------------------------------------------------------------------------------


def _name(rt: ResourceType, name: str, field: str, problems: Problems) -> None:
    if rt in (SERVICES,):
        pattern, message, limit = _DNS1035_LABEL, DNS1035_MESSAGE, 63
    elif rt in (NAMESPACES,):
        pattern, message, limit = _DNS1123_LABEL, LABEL_MESSAGE, 63
    else:
        pattern, message, limit = _DNS1123_SUBDOMAIN, SUBDOMAIN_MESSAGE, 253
    if len(name) > limit:
        problems.invalid(field, name, f"must be no more than {limit} characters")
    elif not pattern.match(name):
        problems.invalid(field, name, message)


def _qualified_name(key: str, field: str, problems: Problems) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        problems.invalid(field, key, "prefix part " + SUBDOMAIN_MESSAGE)
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        detail = "name part must be no more than 63 characters" if len(name) > 63 else ""
        problems.invalid(field, key, detail or QUALIFIED_NAME_MESSAGE)


def labels(values: Mapping[str, Any] | None, field: str, problems: Problems) -> None:
    for key, value in (values or {}).items():
        _qualified_name(key, field, problems)
        text = str(value)
        if len(text) > 63:
            problems.invalid(field, text, "must be no more than 63 characters")
        elif not _LABEL_VALUE.match(text):
            problems.invalid(field, text, LABEL_VALUE_MESSAGE)


def metadata(rt: ResourceType, obj: Obj, problems: Problems) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        problems.required("metadata.name", "name or generateName is required")
    else:
        _name(rt, name, "metadata.name", problems)
    labels(meta.get("labels"), "metadata.labels", problems)
    for key in meta.get("annotations") or {}:
        _qualified_name(key, "metadata.annotations", problems)


# -- pod specs -------------------------------------------------------------------------------


def pod_spec(spec: Obj, field: str, problems: Problems, *, template: bool) -> None:
    containers = spec.get("containers") or []
    if not containers:
        problems.required(f"{field}.containers")
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"{field}.containers[{i}]"
        name = container.get("name") or ""
        if not name:
            problems.required(f"{where}.name")
        elif not _DNS1123_LABEL.match(name) or len(name) > 63:
            problems.invalid(f"{where}.name", name, LABEL_MESSAGE)
        elif name in seen:
            problems.duplicate(f"{where}.name", name)
        seen.add(name)
        image = container.get("image")
        if not image:
            problems.required(f"{where}.image")
        elif image != image.strip():
            problems.invalid(
                f"{where}.image", image, "must not have leading or trailing whitespace"
            )
        policy = container.get("imagePullPolicy")
        if policy is not None and policy not in _PULL_POLICIES:
            problems.unsupported(f"{where}.imagePullPolicy", policy, list(_PULL_POLICIES))
        port_names: set[str] = set()
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                detail = "must be between 1 and 65535, inclusive"
                problems.invalid(f"{where}.ports[{j}].containerPort", number, detail)
            protocol = port.get("protocol", "TCP")
            if protocol not in _PROTOCOLS:
                problems.unsupported(f"{where}.ports[{j}].protocol", protocol, list(_PROTOCOLS))
            port_name = port.get("name")
            if port_name:
                if port_name in port_names:
                    problems.duplicate(f"{where}.ports[{j}].name", port_name)
                port_names.add(port_name)
    policy = spec.get("restartPolicy", "Always")
    allowed = ["Always"] if template else ["Always", "OnFailure", "Never"]
    if policy not in allowed:
        problems.unsupported(f"{field}.restartPolicy", policy, allowed)


def _workload_selector(rt: ResourceType, obj: Obj, problems: Problems) -> None:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.invalid(
            "spec.selector", selector or {}, f"empty selector is invalid for {rt.singular}"
        )
        return
    labels((selector.get("matchLabels") or {}), "spec.selector.matchLabels", problems)
    if not selectors.label_selector_matches(selector, template_labels):
        problems.invalid(
            "spec.template.metadata.labels",
            _go_map(template_labels),
            "`selector` does not match template `labels`",
        )


def _replicas(spec: Obj, field: str, problems: Problems) -> None:
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        problems.invalid(field, replicas, "must be greater than or equal to 0")


def _int_or_percent(value: Any, replicas: int) -> int:
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    return int(value) if isinstance(value, int) else 0


def _deployment(obj: Obj, problems: Problems) -> None:
    spec = obj.get("spec") or {}
    _replicas(spec, "spec.replicas", problems)
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") not in ("Recreate", "RollingUpdate"):
        problems.unsupported(
            "spec.strategy.type", strategy.get("type"), ["Recreate", "RollingUpdate"]
        )
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and rolling is not None:
        problems.forbidden(
            "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
        )
    if rolling is not None:
        for key in ("maxSurge", "maxUnavailable"):
            value = rolling.get(key)
            if isinstance(value, str) and not _PERCENT.match(value):
                problems.invalid(
                    f"spec.strategy.rollingUpdate.{key}",
                    value,
                    "a valid percent string must be"
                    " a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex "
                    "used for validation is '[0-9]+%')",
                )
        surge = _int_or_percent(rolling.get("maxSurge"), 0)
        unavailable = _int_or_percent(rolling.get("maxUnavailable"), 0)
        if surge == 0 and unavailable == 0:
            problems.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                rolling.get("maxUnavailable"),
                "may not be 0 when `maxSurge` is 0",
            )
        value = rolling.get("maxUnavailable")
        if isinstance(value, str) and _PERCENT.match(value) and int(value[:-1]) > 100:
            problems.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable", value, "must not be greater than 100%"
            )
    deadline, min_ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds", 0)
    if isinstance(deadline, int) and isinstance(min_ready, int) and deadline <= min_ready:
        problems.invalid(
            "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
        )


def _service(obj: Obj, problems: Problems) -> None:
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    if kind not in _SERVICE_TYPES:
        problems.unsupported("spec.type", kind, list(_SERVICE_TYPES))
    ports = spec.get("ports") or []
    if kind != "ExternalName" and not ports and spec.get("clusterIP") != "None":
        problems.required("spec.ports")
    names: set[str] = set()
    for i, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            problems.invalid(
                f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"
            )
        if len(ports) > 1 and not port.get("name"):
            problems.required(f"spec.ports[{i}].name")
        if port.get("name") in names:
            problems.duplicate(f"spec.ports[{i}].name", port.get("name"))
        names.add(port.get("name") or "")
    labels(spec.get("selector"), "spec.selector", problems)


def _hpa(obj: Obj, problems: Problems) -> None:
    spec = obj.get("spec") or {}
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if isinstance(low, int) and low < 1:
        problems.invalid("spec.minReplicas", low, "must be greater than or equal to 1")
    if isinstance(high, int) and isinstance(low, int) and high < low:
        problems.invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")
    target = spec.get("scaleTargetRef") or {}
    for key in ("kind", "name"):
        if not target.get(key):
            problems.required(f"spec.scaleTargetRef.{key}")


def on_write(rt: ResourceType, obj: Obj) -> Problems:
    """Every check that applies to an object about to be stored, create or update alike."""
    problems = Problems()
    metadata(rt, obj, problems)
    spec = obj.get("spec") or {}
    if rt is PODS:
        pod_spec(spec, "spec", problems, template=False)
    elif rt in (DEPLOYMENTS, REPLICASETS, STATEFULSETS):
        _workload_selector(rt, obj, problems)
        template = spec.get("template") or {}
        labels(
            (template.get("metadata") or {}).get("labels"),
            "spec.template.metadata.labels",
            problems,
        )
        pod_spec(template.get("spec") or {}, "spec.template.spec", problems, template=True)
        if rt is DEPLOYMENTS:
            _deployment(obj, problems)
        else:
            _replicas(spec, "spec.replicas", problems)
    elif rt is SERVICES:
        _service(obj, problems)
    elif rt is HPAS:
        _hpa(obj, problems)
    return problems


def _without_images(spec: Obj) -> Obj:
    copy = dict(spec)
    for key in ("containers", "initContainers"):
        if key in copy:
            copy[key] = [{k: v for k, v in c.items() if k != "image"} for c in copy[key]]
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        copy.pop(key, None)
    return copy


_STATEFULSET_MUTABLE = (
    "replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy", "minReadySeconds",
)  # fmt: skip


def _fixed(spec: Obj) -> Obj:
    return {k: v for k, v in spec.items() if k not in _STATEFULSET_MUTABLE}


def on_update(rt: ResourceType, old: Obj, new: Obj, problems: Problems) -> None:
    """The fields that may not change once set."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if rt in (DEPLOYMENTS, REPLICASETS, STATEFULSETS):
        if old_spec.get("selector") != new_spec.get("selector"):
            problems.invalid("spec.selector", new_spec.get("selector"), "field is immutable")
    if rt is STATEFULSETS:
        if _fixed(old_spec) != _fixed(new_spec):
            problems.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'revisionHistoryLimit', "
                "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )
    if rt is PODS and _without_images(old_spec) != _without_images(new_spec):
        problems.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,"
            "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
            "`spec.tolerations` (only additions to existing tolerations),"
            "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
            "previously negative)",
        )
    if rt is SERVICES:
        old_ip, new_ip = old_spec.get("clusterIP"), new_spec.get("clusterIP")
        if old_ip and new_ip != old_ip:
            problems.invalid("spec.clusterIPs[0]", new_ip or "", "may not change once set")
    old_uid = (old.get("metadata") or {}).get("uid")
    new_uid = (new.get("metadata") or {}).get("uid")
    if new_uid and new_uid != old_uid:
        problems.invalid("metadata.uid", new_uid, "field is immutable")
