"""Deployments in the store: round trip with steps, the latest per service, proven versions,
and closing the ones a stopped Phoenix left running — on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from phoenix_server.domain.deployments import Deployment, DeploymentReason, DeploymentStatus
from phoenix_server.domain.recoveries import Step, StepCondition, StepStatus
from phoenix_server.store import deployments
from phoenix_server.store.database import Store

NOW = datetime(2025, 11, 25, 18, 0, 0, 250000, tzinfo=UTC)


def deployment(
    deployment_id: str,
    version: str,
    *,
    service: str = "shop",
    minutes: float = 0,
    status: DeploymentStatus = DeploymentStatus.COMPLETED,
    **fields: object,
) -> Deployment:
    started = NOW + timedelta(minutes=minutes)
    plain = Deployment(
        id=deployment_id,
        service=service,
        version=version,
        previous_version=None,
        reason=DeploymentReason.DEPLOY,
        status=status,
        started_at=started,
    )
    return replace(plain, **fields)  # type: ignore[arg-type]


def test_a_deployment_round_trips_with_its_steps(store: Store) -> None:
    step = Step(
        position=0,
        name="Deploy v2",
        action="start_instances",
        status=StepStatus.COMPLETED,
        timeout=30.0,
        condition=StepCondition.ALWAYS,
        started_at=NOW,
        ended_at=NOW + timedelta(seconds=1.5),
        detail="started shop-1",
    )
    saved = deployment(
        "dep-1",
        "v2",
        previous_version="v1",
        ended_at=NOW + timedelta(seconds=2),
        known_good_at=NOW + timedelta(minutes=5),
        recovery_id="rec-9",
        detail="v2 deployed",
        steps=(step,),
    )
    store.run_sync(deployments.save_deployment, saved, "me")
    items, total = store.run_sync(
        deployments.list_deployments, service="shop", owner="me", limit=10, offset=0
    )
    assert total == 1 and items == [saved]
    # Another installation sharing the database sees none of it.
    assert store.run_sync(
        deployments.list_deployments, service="shop", owner="other", limit=10, offset=0
    ) == ([], 0)


def test_latest_per_service_and_newest_first_listing(store: Store) -> None:
    for saved in (
        deployment("dep-1", "v1", minutes=0),
        deployment("dep-2", "v2", minutes=1),
        deployment("dep-3", "v1", minutes=2, status=DeploymentStatus.FAILED),
        deployment("dep-4", "v7", service="cart", minutes=0),
    ):
        store.run_sync(deployments.save_deployment, saved)
    latest = store.run_sync(deployments.latest_deployments)
    assert {name: d.id for name, d in latest.items()} == {"shop": "dep-3", "cart": "dep-4"}
    items, total = store.run_sync(deployments.list_deployments, service="shop", limit=2, offset=0)
    assert total == 3 and [d.id for d in items] == ["dep-3", "dep-2"]
    rest, _ = store.run_sync(deployments.list_deployments, service="shop", limit=2, offset=2)
    assert [d.id for d in rest] == ["dep-1"]


def test_proven_versions_are_those_that_ran_healthy_long_enough(store: Store) -> None:
    store.run_sync(deployments.save_deployment, deployment("dep-1", "v1", known_good_at=NOW))
    store.run_sync(deployments.save_deployment, deployment("dep-2", "v2", minutes=1))
    again = deployment("dep-3", "v1", minutes=2, known_good_at=NOW)
    store.run_sync(deployments.save_deployment, again)
    assert store.run_sync(deployments.proven_versions) == {"shop": {"v1"}}


def test_unfinished_deployments_of_this_installation_become_interrupted(store: Store) -> None:
    running = deployment("dep-1", "v2", status=DeploymentStatus.IN_PROGRESS)
    theirs = deployment("dep-2", "v2", service="cart", status=DeploymentStatus.IN_PROGRESS)
    store.run_sync(deployments.save_deployment, running, "me")
    store.run_sync(deployments.save_deployment, theirs, "other")
    later = NOW + timedelta(minutes=3)
    assert store.run_sync(deployments.interrupt_unfinished, at=later, owner="me") == 1
    [mine], _ = store.run_sync(
        deployments.list_deployments, service="shop", owner="me", limit=5, offset=0
    )
    assert mine == replace(
        running,
        status=DeploymentStatus.INTERRUPTED,
        ended_at=later,
        detail="Phoenix stopped while it ran",
    )
    [other], _ = store.run_sync(
        deployments.list_deployments, service="cart", owner="other", limit=5, offset=0
    )
    assert other.status is DeploymentStatus.IN_PROGRESS


def test_proven_artifacts_are_the_newest_known_good_run_of_each_version(store: Store) -> None:
    at = NOW + timedelta(minutes=10)
    later = at + timedelta(minutes=1)
    for saved in (
        deployment("dep-1", "v1", known_good_at=at, artifact="sha256:old"),
        deployment("dep-2", "v1", minutes=1, known_good_at=later, artifact="sha256:new"),
        deployment("dep-3", "v2", minutes=2, artifact="sha256:unproven"),
        deployment("dep-4", "v3", minutes=3, known_good_at=at),  # no artifact: a local version
        deployment("dep-5", "v1", service="other", known_good_at=at, artifact="sha256:o"),
    ):
        store.run_sync(deployments.save_deployment, saved)
    assert store.run_sync(deployments.proven_artifacts) == {
        "shop": {"v1": "sha256:new"},
        "other": {"v1": "sha256:o"},
    }
    latest = store.run_sync(deployments.latest_deployments)
    assert latest["shop"].id == "dep-4" and latest["other"].artifact == "sha256:o"
