"""Known-good versions and the rollback target (domain/deployments.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phoenix_server.domain.deployments import (
    known_good_versions,
    no_rollback_reason,
    rollback_target,
)
from phoenix_server.domain.services import (
    HealthPolicy,
    PlatformKind,
    ProcessCheck,
    ProcessRun,
    ServiceSpec,
    Version,
)


def spec(*versions: Version, initial: str | None = None) -> ServiceSpec:
    return ServiceSpec(
        name="shop",
        platform=PlatformKind.LOCAL,
        health=HealthPolicy(check=ProcessCheck(), interval=1.0, timeout=1.0, failure_threshold=1),
        run=ProcessRun(("run",)),
        versions=versions,
        initial_version=initial,
        known_good_after=60.0,
    )


V1, V2, V3 = Version("v1", known_good=True), Version("v2"), Version("v3")


def test_known_good_is_declared_or_proven_in_declaration_order() -> None:
    assert known_good_versions(spec(V1, V2, V3), proven={"v3"}) == ["v1", "v3"]
    assert known_good_versions(spec(V2, V3), proven=()) == []


@pytest.mark.parametrize(
    ("current", "proven", "target"),
    [
        ("v3", set(), "v1"),  # v2 never proved itself: back to the declared one
        ("v3", {"v2"}, "v2"),  # the newest known-good older one
        ("v2", {"v3"}, "v1"),  # a newer known-good version is not a rollback
        ("v1", {"v2", "v3"}, None),  # nothing older
        ("v9", {"v1"}, None),  # not a declared version
        (None, {"v1"}, None),
    ],
)
def test_rollback_target(current: str | None, proven: set[str], target: str | None) -> None:
    assert rollback_target(spec(V1, V2, V3), current, proven) == target


def test_the_current_version_is_the_deployed_else_the_initial_else_the_newest() -> None:
    assert spec(V1, V2, V3).current_version == "v3"
    assert spec(V1, V2, V3, initial="v2").current_version == "v2"
    assert replace(spec(V1, V2, V3, initial="v2"), deployed="v1").current_version == "v1"


def test_no_rollback_reasons_say_what_to_do() -> None:
    assert "declares no versions" in no_rollback_reason(spec(), None, ())
    assert "oldest declared version" in no_rollback_reason(spec(V1, V2), "v1", ())
    message = no_rollback_reason(spec(V2, V3), "v3", ())
    assert "no known-good version of 'shop' older than v3 (known good: none)" in message
    assert "known_good: true" in message and "60s" in message
