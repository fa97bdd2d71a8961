"""The Kubernetes manifests under deploy/kubernetes/: valid for Kubernetes 1.37 (offline, the
strict schemas of kubernetes-validate), complete (the kustomization applies every file), and
saying what docs/kubernetes.md promises — an unprivileged pod on a read-only root, probes on
/health, secrets referenced and never embedded, least-privilege RBAC bound where Phoenix
watches, and an environment and service file Phoenix itself accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.config.settings import Settings, load_settings
from phoenix_server.config.tokens import parse_env_tokens
from phoenix_server.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
UID = 10001
Doc = dict[str, Any]


class _StrictLoader(yaml.SafeLoader):
    """YAML as the API server reads it: a key given twice is an error, not the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_StrictLoader) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def example_files() -> list[Path]:
    return sorted((MANIFESTS / "examples").glob("*.yaml"))


def applied() -> Iterator[tuple[Path, Doc]]:
    """Every document ``kubectl apply -k deploy/kubernetes`` applies."""
    for path in manifest_files():
        for doc in load_all(path):
            yield path, doc


def one(kind: str) -> Doc:
    found = [doc for _, doc in applied() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> Doc:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env() -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container().get("env", [])}


def plain_env() -> dict[str, str]:
    return {name: entry["value"] for name, entry in env().items() if "value" in entry}


def mounts() -> dict[str, Doc]:
    """The container's mounts by path, each with the pod volume it mounts."""
    volumes = {v["name"]: v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    return {
        m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in container()["volumeMounts"]
    }


def service_file_text() -> str:
    """The service file as the pod sees it: the ConfigMap key PHOENIX_CONFIG names."""
    path = Path(plain_env()["PHOENIX_CONFIG"])
    mount = mounts()[str(path.parent)]
    configmap = one("ConfigMap")
    assert mount["volume"]["configMap"]["name"] == configmap["metadata"]["name"]
    return str(configmap["data"][path.name])


@pytest.mark.parametrize(
    "path", manifest_files() + example_files(), ids=lambda p: str(p.relative_to(MANIFESTS))
)
def test_every_document_is_valid_for_kubernetes_1_37(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']} {where}: {exc.message}")


def test_the_kustomization_applies_every_manifest_and_no_secret() -> None:
    kustomization = load_all(MANIFESTS / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in manifest_files())
    assert len(set(listed)) == len(listed)
    assert "namespace" not in kustomization, "it would move rbac.yaml's RoleBinding"
    kinds = [doc["kind"] for _, doc in applied()]
    assert "Secret" not in kinds
    assert {"Namespace", "ServiceAccount", "ClusterRole", "RoleBinding", "ConfigMap",
            "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= set(kinds)  # fmt: skip
    for path, doc in applied():
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"].get("namespace"), f"{path.name}: {doc['kind']} names none"


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl to run kustomize (the listing is checked without it)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc)
    assert kinds == sorted(doc["kind"] for _, doc in applied())


def test_the_pod_runs_unprivileged_on_a_read_only_root() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    # What Phoenix writes goes to emptyDirs: its data directory, and /tmp.
    data_dir = plain_env()["PHOENIX_DATA_DIR"]
    for path in (data_dir, "/tmp"):
        assert "emptyDir" in mounts()[path]["volume"], path
        assert not mounts()[path].get("readOnly", False), path
    assert all(m.get("readOnly") for p, m in mounts().items() if p not in (data_dir, "/tmp"))
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_the_image_matches_the_pod() -> None:
    """The Dockerfile's user, port and data directory are the Deployment's."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(rf"^USER {UID}:{UID}$", final_stage, re.M)
    assert re.search(r"^EXPOSE 3051$", final_stage, re.M)
    assert f"PHOENIX_DATA_DIR={plain_env()['PHOENIX_DATA_DIR']}" in final_stage
    assert 'ENTRYPOINT ["phoenix"]' in final_stage
    assert container()["args"][0] == "serve"


def _port_number(port: int | str, ports: list[Doc]) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in ports if p.get("name") == port]
    assert named, f"no container port named {port!r}"
    return int(named[0])


def test_probes_ask_phoenix_for_health_on_its_port() -> None:
    ports = container()["ports"]
    assert len(ports) == 1
    listening = int(plain_env().get("PORT", "3051"))
    assert ports[0]["containerPort"] == listening
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container()[probe]["httpGet"]
        assert check["path"] == "/health", probe
        assert _port_number(check["port"], ports) == listening, probe
        assert check.get("scheme", "HTTP") == "HTTP", probe
    # The liveness probe gives up later than one slow answer.
    liveness = container()["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    service = one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels().items()
    [port] = service["spec"]["ports"]
    assert port["port"] == 3051
    assert _port_number(port["targetPort"], ports) == listening


def pod_labels() -> dict[str, str]:
    return dict(one("Deployment")["spec"]["template"]["metadata"]["labels"])


def test_one_replica_replaced_never_beside_another() -> None:
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1  # minAvailable: 1 would block every node drain
    assert budget["selector"]["matchLabels"].items() <= pod_labels().items()


SECRET_VARIABLES = {"PHOENIX_API_TOKENS": False, "DATABASE_URL": True, "ALERT_WEBHOOK_SECRET": True}
"""The variables that come from the Secret, and whether the pod starts without each."""


def test_secrets_are_referenced_never_embedded() -> None:
    variables = env()
    secret_names = set()
    for name, optional in SECRET_VARIABLES.items():
        assert "value" not in variables[name], f"{name} is written in the manifest"
        reference = variables[name]["valueFrom"]["secretKeyRef"]
        assert reference.get("optional", False) is optional, name
        secret_names.add(reference["name"])
    assert len(secret_names) == 1
    token = re.compile(r"\b\w+:(viewer|operator|admin):\S{16,}")
    password = re.compile(r"postgres(ql)?://[^@\s/]*:[^@\s/]*@")
    for path, doc in applied():
        for value in strings(doc):
            assert not token.search(value), f"{path.name}: an API token in {doc['kind']}"
            assert not password.search(value), f"{path.name}: a password in {doc['kind']}"


def strings(value: object) -> Iterator[str]:
    """Every string in a document, keys and values, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_the_example_secret_cannot_be_used_as_it_is() -> None:
    [secret] = load_all(MANIFESTS / "examples" / "secret.yaml")
    assert secret["kind"] == "Secret"
    assert (
        secret["metadata"]["name"]
        == {env()[name]["valueFrom"]["secretKeyRef"]["name"] for name in SECRET_VARIABLES}.pop()
    )
    keys = {env()[name]["valueFrom"]["secretKeyRef"]["key"] for name in SECRET_VARIABLES}
    assert set(secret["stringData"]) <= keys
    with pytest.raises(ConfigError):
        parse_env_tokens(secret["stringData"]["api-tokens"])


def _settings_variables() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
    return names


def test_phoenix_accepts_the_pods_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Phoenix would start with this environment (a public bind needs tokens, production
    refuses insecure settings); the secret's values are stand-ins."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in plain_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PHOENIX_API_TOKENS", "ops:admin:" + "x" * 32)
    settings = load_settings(_env_file=None)
    assert not settings.binds_loopback_only
    assert settings.has_tokens and not settings.insecure and settings.production
    assert str(settings.data_dir) == plain_env()["PHOENIX_DATA_DIR"]
    assert settings.installation_id, "the data directory does not outlive the pod"
    assert str(settings.config_file.parent) in mounts()  # type: ignore[union-attr]


def test_phoenix_accepts_the_service_file() -> None:
    text = service_file_text()
    try:
        catalog = parse_service_file(
            text, source="configmap.yaml", base_dir=MANIFESTS, default_interval=30.0
        )
    except ConfigError as exc:
        lines = "; ".join(exc.lines())
        if "kubernetes platform is not available" in lines or re.search(
            r"\.kubernetes: unknown key", lines
        ):
            pytest.skip(f"Phoenix's service file does not take platform: kubernetes yet: {lines}")
        raise
    assert [spec.platform.value for spec in catalog] == ["kubernetes"]


def watched() -> list[tuple[str, int | None]]:
    """(namespace, pod port) of each kubernetes service of the example service file."""
    services = yaml.safe_load(service_file_text())["services"]
    found = []
    for service in services:
        if service.get("platform") == "kubernetes":
            section = service.get("kubernetes") or {}
            found.append((section.get("namespace", "default"), section.get("port")))
    assert found, "the example service file declares no kubernetes service"
    return found


def test_rbac_grants_little_and_only_where_phoenix_watches() -> None:
    docs = load_all(MANIFESTS / "rbac.yaml")
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert len(roles) == 1, "the grants live in one ClusterRole"
    [role] = roles
    assert {d["kind"] for d in docs} <= {"ClusterRole", "RoleBinding"}
    elsewhere = [
        f"{path.name}: {doc['kind']}"
        for path, doc in applied()
        if path.name != "rbac.yaml" and doc["kind"] in ("Role", "ClusterRole", "RoleBinding",
                                                         "ClusterRoleBinding")
    ]  # fmt: skip
    assert not elsewhere, f"grants outside rbac.yaml: {elsewhere}"
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"secrets", "configmaps", "nodes", "pods/exec", "serviceaccounts/token"} & set(
            rule["resources"]
        ), rule
        assert not {
            "create",
            "update",
            "escalate",
            "bind",
            "impersonate",
            "deletecollection",
        } & set(rule["verbs"]), rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    account = one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    namespace = one("Deployment")["metadata"]["namespace"]
    assert one("ServiceAccount")["metadata"]["name"] == account
    bound = set()
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        ]
        bound.add(binding["metadata"]["namespace"])
    assert {ns for ns, _ in watched()} <= bound
    assert namespace not in bound, "Phoenix needs nothing in its own namespace"


def test_the_network_policy_lets_in_the_api_only_and_out_what_phoenix_reaches() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels().items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = [p for rule in policy["ingress"] for p in rule["ports"]]
    assert ingress_ports == [{"port": 3051, "protocol": "TCP"}]
    egress = policy["egress"]
    every_port = {(p["port"], p["protocol"]) for rule in egress for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (5432, "TCP")} <= every_port
    for namespace, port in watched():
        rules = [
            rule
            for rule in egress
            for peer in rule.get("to", [])
            if peer.get("namespaceSelector", {}).get("matchLabels")
            == {"kubernetes.io/metadata.name": namespace}
        ]
        assert rules, f"no egress to the watched namespace {namespace}"
        if port is not None:
            assert any(p["port"] == port for rule in rules for p in rule["ports"]), namespace
