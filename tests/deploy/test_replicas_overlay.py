"""deploy/kubernetes/replicas/: the base Deployment patched for two replicas on PostgreSQL,
valid for Kubernetes 1.37 once the patch is applied as kustomize applies it (a strategic
merge: containers and env entries merged by name, a null deleting a field), and an
environment each Phoenix pod accepts as one replica of several."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from phoenix_server.config.settings import load_settings
from tests.deploy.test_manifests import (
    KUBERNETES_VERSION,
    MANIFESTS,
    Doc,
    _settings_variables,
    load_all,
    one,
)

OVERLAY = MANIFESTS / "replicas"
MERGED_BY_NAME = {"containers", "env", "volumes", "volumeMounts", "ports"}


def merged(base: Any, patch: Any, key: str = "") -> Any:
    """``patch`` applied to ``base`` as a strategic merge patch of a Deployment."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for name, value in patch.items():
            if value is None:
                out.pop(name, None)
            elif name in out:
                out[name] = merged(out[name], value, name)
            else:
                out[name] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGED_BY_NAME:
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(out) if old["name"] == item["name"]), None)
            if index is None:
                out.append({k: v for k, v in item.items() if v is not None})
            else:
                out[index] = merged(out[index], item, key)
        return out
    return copy.deepcopy(patch)


def patched() -> Doc:
    [patch] = load_all(OVERLAY / "deployment-patch.yaml")
    result: Doc = merged(one("Deployment"), patch)
    return result


def test_the_overlay_takes_the_base_and_patches_only_the_deployment() -> None:
    [kustomization] = load_all(OVERLAY / "kustomization.yaml")
    assert kustomization["resources"] == [".."]
    [patch] = kustomization["patches"]
    [target] = load_all(OVERLAY / patch["path"])
    base = one("Deployment")
    assert (target["kind"], target["metadata"]) == ("Deployment", {
        "name": base["metadata"]["name"], "namespace": base["metadata"]["namespace"]
    })  # fmt: skip


def test_two_replicas_rolling_one_pod_at_a_time_valid_for_kubernetes() -> None:
    deployment = patched()
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1, "a drain keeps one of the two up"


def test_each_pod_is_a_replica_of_its_own_on_postgresql() -> None:
    [container] = patched()["spec"]["template"]["spec"]["containers"]
    env = {entry["name"]: entry for entry in container["env"]}
    names = [entry["name"] for entry in container["env"]]
    assert env["PHOENIX_CLUSTER"]["value"] == "1"
    identity = env["PHOENIX_INSTALLATION_ID"]
    assert "value" not in identity
    assert identity["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["PHOENIX_ADVERTISE_URL"]["value"] == "http://$(POD_IP):3051"
    assert names.index("POD_IP") < names.index("PHOENIX_ADVERTISE_URL"), (
        "$(POD_IP) expands only to a variable defined before it"
    )
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is False


def test_the_other_replicas_api_is_reachable_through_the_network_policy() -> None:
    policy = one("NetworkPolicy")["spec"]
    pods = policy["podSelector"]["matchLabels"]
    assert any(
        rule.get("to") == [{"podSelector": {"matchLabels": pods}}]
        and {"port": 3051, "protocol": "TCP"} in rule["ports"]
        for rule in policy["egress"]
    )


def test_phoenix_accepts_a_replica_pods_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the kubelet would set it for pod phoenix-6d4b8c7f9d-x2k4q at 10.0.3.17."""
    [container] = patched()["spec"]["template"]["spec"]["containers"]
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    resolved = {"POD_IP": "10.0.3.17"}
    for entry in container["env"]:
        if "value" in entry:
            resolved[entry["name"]] = entry["value"].replace("$(POD_IP)", resolved["POD_IP"])
    resolved["PHOENIX_INSTALLATION_ID"] = "phoenix-6d4b8c7f9d-x2k4q"
    resolved["PHOENIX_API_TOKENS"] = "ops:admin:" + "x" * 32
    resolved["DATABASE_URL"] = "postgresql://phoenix@db.example:5432/phoenix"
    for name, value in resolved.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.cluster and settings.advertised_url == "http://10.0.3.17:3051"
    assert settings.installation_id == "phoenix-6d4b8c7f9d-x2k4q"
