"""The Kubernetes parts of the service file: a ``platform: kubernetes`` service's
``kubernetes:`` section (the workload and the objects around it) and the top-level
``kubernetes_cluster:`` (which kubeconfig and context; default: in-cluster, else
``KUBECONFIG``).

A kubernetes service is run by the cluster, not by Phoenix: what the rest of the file says
about starting processes (command, image, router, backup command, hooks) has no meaning for
it and is refused with what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import Problem

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def _label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes name: at most 63 lowercase letters, digits and "
            "'-', starting and ending with a letter or digit"
        )
    return value


def _subdomain(value: str) -> str:
    if not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes object name: lowercase letters, digits, '-' and "
            "'.', starting and ending with a letter or digit, at most 253"
        )
    return value


Label = Annotated[str, AfterValidator(_label)]
"""A namespace, Service or container name (RFC 1123 label, as Kubernetes requires)."""
ObjectName = Annotated[str, AfterValidator(_subdomain)]
"""A Deployment, StatefulSet or HPA name (RFC 1123 subdomain)."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesDoc(_Doc):
    namespace: Label = "default"
    deployment: ObjectName | None = None
    statefulset: ObjectName | None = None
    container: Label | None = None
    port: int | None = Field(None, ge=1, le=65535)
    service: Label | None = None
    hpa: ObjectName | None = None
    backup: ObjectName | None = None
    fallback: ObjectName | None = None

    @model_validator(mode="after")
    def _one_workload(self) -> KubernetesDoc:
        if (self.deployment is None) == (self.statefulset is None):
            raise ValueError(
                "name the workload: deployment: <name> or statefulset: <name> (one of them)"
            )
        if self.statefulset is not None and (self.backup or self.fallback):
            raise ValueError("backup and fallback workloads are for a deployment")
        if (self.backup or self.fallback) and self.service is None:
            raise ValueError(
                "backup and fallback take the traffic through the Service's selector: "
                "name the Service (service: <name>)"
            )
        name = self.deployment or self.statefulset
        if name in (self.backup, self.fallback):
            raise ValueError("the backup or fallback must be another Deployment")
        return self


class ClusterDoc(_Doc):
    kubeconfig: str | None = Field(None, min_length=1)
    """A kubeconfig file (relative to the service file); default: in-cluster, else
    ``KUBECONFIG`` or ``~/.kube/config``."""
    context: str | None = Field(None, min_length=1)


def parse_cluster(value: object, base_dir: Path) -> tuple[svc.KubernetesCluster, list[Problem]]:
    """The top-level ``kubernetes_cluster`` section (absent: the usual places)."""
    if value is None:
        return svc.KubernetesCluster(), []
    try:
        doc = ClusterDoc.model_validate(value)
    except ValidationError as exc:
        return svc.KubernetesCluster(), [
            Problem(
                ".".join(["kubernetes_cluster", *(str(p) for p in error["loc"])]),
                error["msg"],
            )
            for error in exc.errors()
        ]
    path = str((base_dir / doc.kubeconfig).resolve()) if doc.kubeconfig else None
    return svc.KubernetesCluster(kubeconfig=path, context=doc.context), []


def workload(doc: KubernetesDoc, cluster: svc.KubernetesCluster) -> svc.KubernetesWorkload:
    kind = svc.WorkloadKind.DEPLOYMENT if doc.deployment else svc.WorkloadKind.STATEFUL_SET
    name = doc.deployment or doc.statefulset
    assert name is not None
    return svc.KubernetesWorkload(
        namespace=doc.namespace,
        name=name,
        kind=kind,
        container=doc.container,
        port=doc.port,
        service=doc.service,
        hpa=doc.hpa,
        backup=doc.backup,
        fallback=doc.fallback,
        cluster=cluster,
    )


_RUN_BY_THE_CLUSTER = "a kubernetes service runs as its workload's pods"
_REFUSED: Mapping[str, str] = {
    "command": f"{_RUN_BY_THE_CLUSTER}: their command is in the workload's pod template",
    "cwd": f"{_RUN_BY_THE_CLUSTER}: their working directory is in the pod template",
    "env": f"{_RUN_BY_THE_CLUSTER}: their environment is in the pod template",
    "image": (
        f"{_RUN_BY_THE_CLUSTER}: the image is the pod template's; declare versions with an "
        "image each to let Phoenix deploy and roll back"
    ),
    "adopt": "only a docker service adopts containers",
    "init": "only a docker service's container has Docker's init",
    "container": "only a docker service has a container section (kubernetes.container names one)",
    "engine": "only a docker service runs on a Docker engine",
    "port": (
        "clients reach a kubernetes service through its Service, not a port of Phoenix's; "
        "kubernetes.port is the pod port Phoenix probes"
    ),
    "router": "a kubernetes service has no Phoenix router: its Service routes to the pods",
    "zero_downtime": (
        "the workload's rollout strategy (maxSurge, maxUnavailable) decides how pods are replaced"
    ),
    "fallback": (
        "Phoenix's router serves a fallback for local and docker services; for a kubernetes "
        "service, name a fallback Deployment (kubernetes.fallback)"
    ),
    "backup": (
        "a kubernetes service's backup is another Deployment the Service can switch to "
        "(kubernetes.backup)"
    ),
    "hooks": (
        "hook commands run where a local or docker service runs; for a kubernetes service "
        "they are not available yet"
    ),
}


def kubernetes_problems(service: Any) -> list[tuple[str, str]]:
    """What a ``platform: kubernetes`` service declares that has no meaning for it (or lacks),
    as ``(path, message)``; and, for any other platform, a ``kubernetes`` section."""
    found: list[tuple[str, str]] = []
    if service.platform != "kubernetes":
        if service.kubernetes is not None:
            found.append(("kubernetes", "only a kubernetes service names a workload"))
        return found
    if service.kubernetes is None:
        found.append(
            (
                "kubernetes",
                "required for a kubernetes service: the workload that runs it "
                "(kubernetes: {namespace: shop, deployment: shop})",
            )
        )
    set_fields = service.model_fields_set
    for key, message in _REFUSED.items():
        if key in set_fields and _declared(getattr(service, key)):
            found.append((key, message))
    health = service.health
    if health is None or not (health.http or health.tcp or health.command):
        found.append(
            (
                "health",
                "required for a kubernetes service: an http or tcp check of each pod, such as "
                "http: http://{address}:{port}/health ({address} is the pod's IP)",
            )
        )
    elif health.process:
        found.append(("health.process", "a pod's processes are not on Phoenix's machine"))
    elif health.command:
        found.append(
            ("health.command", "a command check runs on Phoenix's machine, not in the pod")
        )
    else:
        target = health.http.url if health.http is not None else str(health.tcp)
        host = urlsplit(target if "://" in target else f"tcp://{target}").hostname or ""
        if host in ("localhost", "::1") or host.startswith("127."):
            path = "health.http" if health.http is not None else "health.tcp"
            found.append(
                (
                    path,
                    f"{host} is Phoenix's own machine: check each pod at {{address}} (its IP) "
                    "or the Service by its DNS name",
                )
            )
    for index, version in enumerate(service.versions):
        if version.image is None:
            found.append(
                (f"versions[{index}].image", "required: the image a kubernetes version runs")
            )
        for key in ("command", "env", "cwd"):
            if _declared(getattr(version, key)):
                found.append(
                    (
                        f"versions[{index}].{key}",
                        "a kubernetes version sets the container's image only",
                    )
                )
    return found


def _declared(value: object) -> bool:
    return value not in (None, False, "", [], {}) and not (
        isinstance(value, BaseModel) and not value.model_fields_set
    )
