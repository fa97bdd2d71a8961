"""The kinds the fake API server serves, and the discovery documents that describe them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KUBERNETES_VERSION = "1.37.0"

ITEM_VERBS = ("get", "patch", "update")
COLLECTION_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Kinds whose registry strategy bumps metadata.generation on spec changes.
    tracks_generation: bool = False
    # A Deployment's strategy also bumps it on annotation changes: they are copied to its
    # ReplicaSets, so a change to them is a change to what is rolled out.
    annotations_bump_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How error messages name the resource: ``deployments.apps``, ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """How Invalid messages name the kind: ``Deployment.apps``, ``Pod``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


PODS = ResourceType(
    "", "v1", "pods", "Pod", short_names=("po",), subresources=("status",), tracks_generation=True
)
SERVICES = ResourceType(
    "", "v1", "services", "Service", short_names=("svc",), subresources=("status",)
)
EVENTS = ResourceType("", "v1", "events", "Event", short_names=("ev",))
ENDPOINTS = ResourceType("", "v1", "endpoints", "Endpoints", short_names=("ep",))
NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    namespaced=False,
    short_names=("ns",),
    subresources=("status",),
)
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "Deployment",
    short_names=("deploy",),
    subresources=("status", "scale"),
    tracks_generation=True,
    annotations_bump_generation=True,
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "replicasets",
    "ReplicaSet",
    short_names=("rs",),
    subresources=("status", "scale"),
    tracks_generation=True,
)
STATEFULSETS = ResourceType(
    "apps",
    "v1",
    "statefulsets",
    "StatefulSet",
    short_names=("sts",),
    subresources=("status", "scale"),
    tracks_generation=True,
)
HPAS = ResourceType(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "HorizontalPodAutoscaler",
    short_names=("hpa",),
    subresources=("status",),
    tracks_generation=True,
)

ALL: tuple[ResourceType, ...] = (
    PODS,
    SERVICES,
    EVENTS,
    ENDPOINTS,
    NAMESPACES,
    DEPLOYMENTS,
    REPLICASETS,
    STATEFULSETS,
    HPAS,
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in ALL}
_BY_KIND = {(r.api_version, r.kind): r for r in ALL}


def find(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def group_versions() -> dict[str, list[str]]:
    """API group → its versions, in the order the server prefers them."""
    found: dict[str, list[str]] = {}
    for r in ALL:
        versions = found.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return found


def _api_resource(r: ResourceType) -> dict[str, Any]:
    return {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(COLLECTION_VERBS),
        **({"shortNames": list(r.short_names)} if r.short_names else {}),
    }


def _api_subresource(r: ResourceType, sub: str) -> dict[str, Any]:
    kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"} if sub == "scale" else {}
    return {
        "name": f"{r.plural}/{sub}",
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": "Scale" if sub == "scale" else r.kind,
        **kind,
        "verbs": list(ITEM_VERBS),
    }


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/<group>/<version>``: an APIResourceList."""
    members = [r for r in ALL if r.group == group and r.version == version]
    if not members:
        return None
    resources: list[dict[str, Any]] = []
    for r in members:
        resources.append(_api_resource(r))
        resources.extend(_api_subresource(r, sub) for sub in r.subresources)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _api_group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group(name: str) -> dict[str, Any] | None:
    versions = group_versions().get(name)
    if not name or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(name, versions)}


def api_group_list() -> dict[str, Any]:
    groups = [_api_group(n, v) for n, v in group_versions().items() if n]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": group_versions()[""],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def version_info() -> dict[str, str]:
    major, minor, _ = KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{KUBERNETES_VERSION}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
