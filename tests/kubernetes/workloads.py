"""Manifests of the workloads the Kubernetes tests run on the fake cluster, and the service
file entries that point Phoenix at them."""

from __future__ import annotations

from typing import Any

NAMESPACE = "shop"
PORT = 8080


def namespace(name: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(
    name: str = "web",
    image: str = "shop/web:1",
    *,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    progress_deadline: int = 600,
    readiness: str = "http",
) -> dict[str, Any]:
    """A Deployment whose pods serve HTTP on PORT (the fake kubelet runs a real server),
    with an ``http`` readiness probe on /health or a ``tcp`` one (which a hung server still
    passes, as with a real kubelet)."""
    probe: dict[str, Any] = (
        {"httpGet": {"path": "/health", "port": PORT}}
        if readiness == "http"
        else {"tcpSocket": {"port": PORT}}
    )
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, **(labels or {})}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"containerPort": PORT}],
                            "readinessProbe": {**probe, "periodSeconds": 2},
                        }
                    ]
                },
            },
        },
    }


def service(name: str = "web", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [{"port": 80, "targetPort": PORT}],
        },
    }


def hpa(name: str = "web", *, low: int = 2, high: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
        },
    }


def cluster_prelude(kubeconfig: str) -> str:
    return f"kubernetes_cluster: {{kubeconfig: {kubeconfig}}}\n"


def web_service(section: str = "", extra: str = "") -> str:
    """The service file entry for the ``web`` Deployment (``section``: more keys of its
    kubernetes section; ``extra``: more lines of the service)."""
    more = f", {section}" if section else ""
    lines = [
        "  - name: web",
        "    platform: kubernetes",
        f"    kubernetes: {{namespace: {NAMESPACE}, deployment: web{more}}}",
        "    health: {http: 'http://{address}:{port}/health', interval: 0.5s, timeout: 1s,"
        " failure_threshold: 2, startup_timeout: 20s}",
        "    recovery: {backoff: {initial: 0.2s, reset_after: 1s}, stabilisation: 1s}",
        *(f"    {line}" for line in extra.strip().splitlines() if line),
    ]
    return "\n".join(lines) + "\n"


def statefulset(name: str = "db", image: str = "shop/db:1", *, replicas: int = 2) -> dict[str, Any]:
    found = deployment(name, image, replicas=replicas)
    found["kind"] = "StatefulSet"
    del found["spec"]["progressDeadlineSeconds"]
    found["spec"]["serviceName"] = name
    return found
