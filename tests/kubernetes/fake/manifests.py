"""Small manifest builders for tests (plain dicts, as a user would write them)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def container(name: str, image: str, port: int | None = 8080, **extra: Any) -> Obj:
    found: Obj = {"name": name, "image": image, **extra}
    if port is not None:
        found["ports"] = [{"containerPort": port}]
    return found


def deployment(
    name: str,
    image: str = "shop:v1",
    replicas: int = 2,
    *,
    namespace: str = "default",
    containers: list[Obj] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": containers or [container("app", image)]},
            },
            **spec,
        },
    }


def statefulset(name: str, image: str = "db:v1", replicas: int = 3, **spec: Any) -> Obj:
    found = deployment(name, image, replicas, **spec)
    found["kind"] = "StatefulSet"
    found["spec"]["serviceName"] = name
    return found


def pod(
    name: str,
    image: str = "shop:v1",
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {"containers": [container("app", image)]},
    }


def service(
    name: str, selector: dict[str, str], port: int = 80, target_port: int | str = 8080
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target_port}]},
    }


def hpa(name: str, target: str, minimum: int, maximum: int) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
        },
    }


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
