"""RBAC tested, not assumed: what Phoenix requested of the API server across the Kubernetes
tests (recorded by the fake server, see conftest.py) is exactly what deploy/kubernetes/rbac.yaml
grants — nothing asked that is not granted, nothing granted that is never asked.

The file is named to run after the tests whose requests it reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.kubernetes import conftest
from tests.support import REPO

RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"
PHOENIX_MODULES = {"test_recoveries", "test_watching"}
"""The modules whose tests run Phoenix against the fake cluster."""


def granted(path: Path = RBAC) -> set[tuple[str, str, str]]:
    rules = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            rules.extend(doc["rules"])
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_phoenix_asks_only_for_what_the_manifests_grant() -> None:
    if not conftest.PHOENIX_REQUESTS:
        pytest.skip("run with the Kubernetes tests that drive Phoenix (tests/kubernetes)")
    refused = conftest.PHOENIX_REQUESTS - granted()
    assert not refused, f"Phoenix requested what rbac.yaml does not grant: {sorted(refused)}"


def test_the_manifests_grant_nothing_phoenix_never_asks_for() -> None:
    missing_modules = PHOENIX_MODULES - conftest.MODULES_SEEN
    if missing_modules:
        pytest.skip(f"needs the requests of {sorted(missing_modules)}: run all of tests/kubernetes")
    unused = granted() - conftest.PHOENIX_REQUESTS
    assert not unused, f"rbac.yaml grants what Phoenix never requested: {sorted(unused)}"


def test_every_rule_counts_each_group_resource_and_verb(tmp_path: Path) -> None:
    """The reading above, on rules written here: a change to it cannot hide a grant."""
    rules = tmp_path / "rbac.yaml"
    rules.write_text(
        "kind: ClusterRole\nrules:\n"
        "  - {apiGroups: ['', apps], resources: [a, b/c], verbs: [get, patch]}\n"
        "---\nkind: RoleBinding\nsubjects: []\n"
    )
    assert granted(rules) == {
        (group, resource, verb)
        for group in ("", "apps")
        for resource in ("a", "b/c")
        for verb in ("get", "patch")
    }
