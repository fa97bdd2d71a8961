"""The service file's Kubernetes parts: a ``platform: kubernetes`` service's workload section,
the top-level ``kubernetes_cluster``, and what has no meaning for a cluster's workload."""

from __future__ import annotations

import textwrap

import pytest

from phoenix_server.domain import services as svc
from tests.config.test_servicefile import BASE, parse, problems

HEALTH = "health: {http: 'http://{address}:{port}/health', interval: 2s}"


def kube(extra: str = "", section: str = "{namespace: shop, deployment: web}") -> str:
    lines = [
        "  - name: web",
        "    platform: kubernetes",
        f"    kubernetes: {section}",
        f"    {HEALTH}",
        *(f"    {line}" for line in textwrap.dedent(extra).strip().splitlines()),
    ]
    return "services:\n" + "\n".join(lines) + "\n"


def test_a_deployment_with_its_service_hpa_and_versions() -> None:
    text = kube(
        "versions: [{name: v1, image: 'shop/web:1'}, {name: v2, image: 'shop/web:2'}]\n"
        "replicas: {min: 2, max: 6}",
        section="{namespace: shop, deployment: web, service: web, hpa: web, container: app, port: 8080}",
    )
    (spec,) = list(parse(text))
    assert spec.platform is svc.PlatformKind.KUBERNETES
    assert spec.run == svc.KubernetesWorkload(
        namespace="shop",
        name="web",
        kind=svc.WorkloadKind.DEPLOYMENT,
        container="app",
        port=8080,
        service="web",
        hpa="web",
    )
    assert [v.image for v in spec.versions] == ["shop/web:1", "shop/web:2"]
    assert spec.routed is False
    assert spec.health.check == svc.HttpCheck("http://{address}:{port}/health")


def test_a_statefulset_in_the_default_namespace() -> None:
    (spec,) = list(parse(kube(section="{statefulset: db}")))
    assert isinstance(spec.run, svc.KubernetesWorkload)
    assert (spec.run.namespace, spec.run.name, spec.run.kind) == (
        "default",
        "db",
        svc.WorkloadKind.STATEFUL_SET,
    )


def test_the_cluster_section_names_a_kubeconfig_relative_to_the_file_and_a_context() -> None:
    text = "kubernetes_cluster: {kubeconfig: kube/config, context: staging}\n" + kube()
    (spec,) = list(parse(text))
    assert isinstance(spec.run, svc.KubernetesWorkload)
    assert spec.run.cluster == svc.KubernetesCluster(
        kubeconfig=str((BASE / "kube/config").resolve()), context="staging"
    )


def test_without_a_cluster_section_the_usual_places_are_used() -> None:
    (spec,) = list(parse(kube()))
    assert isinstance(spec.run, svc.KubernetesWorkload)
    assert spec.run.cluster == svc.KubernetesCluster(kubeconfig=None, context=None)


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("command: [run]", "command", "their command is in the workload's pod template"),
        ("image: shop/web:1", "image", "declare versions with an image each"),
        ("port: 8080", "port", "kubernetes.port is the pod port Phoenix probes"),
        ("router: true", "router", "its Service routes to the pods"),
        ("zero_downtime: true", "zero_downtime", "rollout strategy"),
        ("backup: {mode: hot}", "backup", "kubernetes.backup"),
        ("fallback: {status: 503}", "fallback", "kubernetes.fallback"),
        ("hooks: {smoke: [true]}", "hooks", "not available yet"),
        ("env: {A: b}", "env", "pod template"),
        ("resources: {memory_max: 1G}", "resources", "local service only"),
        ("versions: [{name: v1}]", "versions[0].image", "the image a kubernetes version runs"),
        (
            "versions: [{name: v1, image: x, command: [run]}]",
            "versions[0].command",
            "sets the container's image only",
        ),
    ],
)
def test_what_a_cluster_workload_cannot_have_is_refused_with_what_to_write(
    extra: str, path: str, message: str
) -> None:
    found = problems(kube(extra))
    located = [p for p in found if p.path == f"services[0] (web).{path}"]
    assert located, found
    assert message in located[0].message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{namespace: shop}", "name the workload: deployment: <name> or statefulset: <name>"),
        ("{deployment: a, statefulset: b}", "one of them"),
        ("{deployment: Web_1}", "is not a Kubernetes object name"),
        ("{namespace: Shop, deployment: web}", "is not a Kubernetes name"),
        ("{deployment: web, backup: web-b}", "name the Service"),
        ("{deployment: web, service: web, backup: web}", "must be another Deployment"),
        ("{deployment: web, replicas: 3}", "unknown key"),
    ],
)
def test_a_bad_workload_section_says_what_is_wrong(section: str, message: str) -> None:
    found = problems(kube(section=section))
    assert any(message in p.message for p in found), found
    assert all(p.path.startswith("services[0] (web).kubernetes") for p in found), found


def test_a_kubernetes_service_needs_a_check_of_its_pods() -> None:
    text = "services:\n  - name: web\n    platform: kubernetes\n    kubernetes: {deployment: web}\n"
    found = problems(text)
    assert [p.path for p in found] == ["services[0] (web).health"]
    assert "http://{address}:{port}/health" in found[0].message


def test_only_a_kubernetes_service_names_a_workload() -> None:
    text = "services:\n  - name: a\n    command: [run]\n    kubernetes: {deployment: web}\n"
    found = problems(text)
    assert [(p.path, p.message) for p in found] == [
        ("services[0] (a).kubernetes", "only a kubernetes service names a workload")
    ]


def test_a_bad_cluster_section_is_located() -> None:
    found = problems("kubernetes_cluster: {kubeconfig: '', contxt: a}\n" + kube())
    paths = sorted(p.path for p in found)
    assert paths == ["kubernetes_cluster.contxt", "kubernetes_cluster.kubeconfig"], found


@pytest.mark.parametrize(
    ("health", "path"),
    [
        ("{http: 'http://localhost:{port}/health'}", "health.http"),
        ("{tcp: '127.0.0.1:8080'}", "health.tcp"),
        ("{command: [curl, -f, 'http://x/']}", "health.command"),
    ],
)
def test_a_check_that_cannot_reach_the_pods_is_refused(health: str, path: str) -> None:
    text = kube().replace(HEALTH, f"health: {health}")
    found = [p for p in problems(text) if p.path == f"services[0] (web).{path}"]
    assert found, problems(text)
    assert "Phoenix's machine" in found[0].message or "Phoenix's own machine" in found[0].message


def test_a_check_of_the_service_by_its_dns_name_is_accepted() -> None:
    text = kube().replace(HEALTH, "health: {http: 'http://web.shop.svc:80/health'}")
    (spec,) = list(parse(text))
    assert spec.health.check == svc.HttpCheck("http://web.shop.svc:80/health")
