"""The platform's view of the cluster through its watches, against the faults watches go
through: a dropped connection, a resourceVersion the server has compacted away (410 Gone, as
an ERROR event in a 200 stream and as an HTTP 410), an API server that answers 503 or not at
all — and, through all of it, every change reported once, nothing missed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.platforms.base import InstanceEvent, InstanceEventKind
from phoenix_server.platforms.kubernetes import KubernetesPlatform
from phoenix_server.platforms.kubernetes import platform as platform_module
from tests.kubernetes.fake.behaviour import Behaviour
from tests.kubernetes.fake.cluster import FakeCluster
from tests.kubernetes.workloads import (
    NAMESPACE,
    cluster_prelude,
    deployment,
    web_service,
)
from tests.support import REPO, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
async def web(cluster: FakeCluster) -> None:
    await cluster.apply(deployment(replicas=2))
    await cluster.wait_for(lambda: len(cluster.pods(NAMESPACE)) == 2, what="two pods")


def spec_for(cluster: FakeCluster, tmp_path: Path, versions: str = "") -> ServiceSpec:
    prelude = cluster_prelude(str(cluster.kubeconfig_path(tmp_path)))
    catalog = parse_service_file(
        prelude + "services:\n" + web_service(extra=versions),
        source="test",
        base_dir=REPO,
        default_interval=1.0,
    )
    return catalog.get("web")


@pytest.fixture
async def watched(
    cluster: FakeCluster, tmp_path: Path
) -> AsyncIterator[tuple[KubernetesPlatform, ServiceSpec, list[InstanceEvent]]]:
    spec = spec_for(cluster, tmp_path)
    assert spec.run is not None
    platform = KubernetesPlatform(spec.run.cluster)  # type: ignore[union-attr]
    events: list[InstanceEvent] = []
    platform.subscribe(events.append)
    assert await platform.reconcile([spec]) == {}
    try:
        yield platform, spec, events
    finally:
        await platform.shutdown(keep_running=True)


def live_names(cluster: FakeCluster) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in cluster.pods(NAMESPACE)
        if not p["metadata"].get("deletionTimestamp")
    }


async def replace_a_pod(cluster: FakeCluster) -> str:
    victim = sorted(live_names(cluster))[0]
    await cluster.delete("pods", victim, NAMESPACE)
    await cluster.wait_for(
        lambda: len(live_names(cluster)) == 2 and victim not in live_names(cluster),
        what="the replacement pod",
    )
    return victim


async def sees_the_cluster(platform: KubernetesPlatform, cluster: FakeCluster) -> None:
    await eventually(
        lambda: {i.id for i in platform.instances("web")} == live_names(cluster),
        timeout=10,
        message="the platform's instances are the cluster's pods",
    )


async def test_running_pods_are_adopted_once_each(
    cluster: FakeCluster,
    watched: tuple[KubernetesPlatform, ServiceSpec, list[InstanceEvent]],
) -> None:
    platform, _, events = watched
    await sees_the_cluster(platform, cluster)
    adopted = [e.instance.id for e in events if e.kind is InstanceEventKind.ADOPTED]
    assert sorted(adopted) == sorted(live_names(cluster))
    assert not [e for e in events if e.kind is InstanceEventKind.STARTED]


@pytest.mark.parametrize("fault", ["drop", "expire_in_stream", "expire_as_http"])
async def test_a_change_made_while_the_watch_was_down_is_seen_after_it(
    cluster: FakeCluster,
    watched: tuple[KubernetesPlatform, ServiceSpec, list[InstanceEvent]],
    fault: str,
) -> None:
    platform, _, events = watched
    await sees_the_cluster(platform, cluster)
    lists_before = sum(1 for r in cluster.server.requests if r.verb == "list")
    with cluster.server.paused("pods"):
        # The watch is cut (and, expired, its resourceVersion compacted away) while a pod
        # is replaced: the reconnect must bring the change in.
        if fault == "drop":
            cluster.server.drop_watches("pods")
        else:
            cluster.server.watch_expiry_as_http = fault == "expire_as_http"
            cluster.server.expire_watches()
        victim = await replace_a_pod(cluster)
    await sees_the_cluster(platform, cluster)
    stopped = [e.instance.id for e in events if e.kind is InstanceEventKind.STOPPED]
    started = [e.instance.id for e in events if e.kind is InstanceEventKind.STARTED]
    assert stopped == [victim]
    assert started == sorted(live_names(cluster) - {i for i in adopted_ids(events)})
    lists_after = sum(1 for r in cluster.server.requests if r.verb == "list")
    if fault == "drop":
        assert lists_after == lists_before, "a dropped watch resumes; it does not list again"
    else:
        assert lists_after > lists_before, "an expired watch lists again"


def adopted_ids(events: list[InstanceEvent]) -> list[str]:
    return [e.instance.id for e in events if e.kind is InstanceEventKind.ADOPTED]


async def test_an_api_server_that_fails_is_retried_and_its_problem_said(
    cluster: FakeCluster,
    watched: tuple[KubernetesPlatform, ServiceSpec, list[InstanceEvent]],
) -> None:
    platform, _, _ = watched
    await sees_the_cluster(platform, cluster)
    cluster.server.fail_next(3, 503, resource="pods", verb="watch")
    cluster.server.drop_watches("pods")
    await eventually(
        lambda: any(
            "watch of pods in namespace shop interrupted" in p for p in platform.watch_problems()
        ),
        timeout=10,
        message="the interrupted watch named in the platform's problems",
    )
    await replace_a_pod(cluster)
    await sees_the_cluster(platform, cluster)
    await eventually(lambda: not platform.watch_problems(), timeout=10, message="problem cleared")


async def test_a_problem_shows_in_the_clusters_words_and_clears_when_the_pod_serves(
    cluster: FakeCluster,
    watched: tuple[KubernetesPlatform, ServiceSpec, list[InstanceEvent]],
) -> None:
    platform, _, events = watched
    await sees_the_cluster(platform, cluster)
    pod = sorted(live_names(cluster))[0]
    cluster.set_pod_behaviour(pod, Behaviour.OOM, NAMESPACE)
    await eventually(
        lambda: any(
            e.kind is InstanceEventKind.UNHEALTHY
            and e.instance.id == pod
            and "OOMKilled" in e.detail
            for e in events
        ),
        timeout=10,
        message="an unhealthy verdict naming the OOM kill",
    )
    cluster.set_pod_behaviour(pod, Behaviour.HEALTHY, NAMESPACE)
    await eventually(
        lambda: any(e.kind is InstanceEventKind.HEALTHY and e.instance.id == pod for e in events),
        timeout=30,
        message="healthy again once the kubelet's restart serves",
    )
    # Kubernetes restarted the container: the pod never ended, so nothing was stopped.
    assert not [
        e for e in events if e.kind in (InstanceEventKind.STOPPED, InstanceEventKind.EXITED)
    ]


async def test_pods_of_a_revision_never_seen_healthy_that_crash_call_for_a_rollback(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    versions = "versions: [{name: v1, image: 'shop/web:1'}, {name: v2, image: 'shop/web:2'}]"
    spec = spec_for(cluster, tmp_path, versions)
    platform = KubernetesPlatform(spec.run.cluster)  # type: ignore[union-attr]
    await platform.reconcile([spec])
    try:
        await sees_the_cluster(platform, cluster)
        await eventually(
            lambda: all(i.state.value == "running" for i in platform.instances("web")),
            timeout=10,
            message="both pods ready",
        )
        assert platform.advise(spec) is None  # revision 1 ran healthy: no bad release
        cluster.behave("shop/web:2", Behaviour.CRASH)
        await cluster.apply(deployment(replicas=2, image="shop/web:2"))  # kubectl apply
        advice = await eventually(lambda: platform.advise(spec), timeout=15, message="advice")
        strategy, why = advice
        assert strategy.value == "rollback"
        assert "(shop/web:2), which never ran healthy, has CrashLoopBackOff" in why or (
            "(shop/web:2), which never ran healthy, has not ready after a restart" in why
        )
    finally:
        await platform.shutdown(keep_running=True)


async def test_a_cluster_that_answers_late_is_taken_in_when_it_does(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform_module, "SYNC_TIMEOUT", 0.5)
    spec = spec_for(cluster, tmp_path)
    platform = KubernetesPlatform(spec.run.cluster)  # type: ignore[union-attr]
    try:
        with cluster.server.paused("pods"):
            failed = await platform.reconcile([spec])
            assert "cannot list the cluster's objects" in failed["web"]
            assert any("cannot list" in p for p in platform.watch_problems())
            assert platform.instances("web") == []
        await sees_the_cluster(platform, cluster)
        await eventually(lambda: not platform.watch_problems(), timeout=5, message="cleared")
    finally:
        await platform.shutdown(keep_running=True)


async def test_a_restarted_revision_of_an_image_seen_healthy_is_no_bad_release(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    """A rollout restart makes a new revision of the same image: if its pods crash (a
    database down, say), that is no bad release to roll back."""
    spec = spec_for(cluster, tmp_path)
    platform = KubernetesPlatform(spec.run.cluster)  # type: ignore[union-attr]
    events: list[InstanceEvent] = []
    platform.subscribe(events.append)
    await platform.reconcile([spec])
    try:
        await eventually(
            lambda: (
                len(platform.instances("web")) == 2
                and all(i.state.value == "running" for i in platform.instances("web"))
            ),
            timeout=10,
            message="both pods ready",
        )
        first = {i.artifact for i in platform.instances("web")}
        cluster.behave("shop/web:1", Behaviour.CRASH)
        restarted = deployment(replicas=2)
        restarted["spec"]["template"]["metadata"]["annotations"] = {
            "kubectl.kubernetes.io/restartedAt": "2026-12-04T12:00:00Z"
        }
        await cluster.apply(restarted)
        await eventually(
            lambda: any(
                e.kind is InstanceEventKind.UNHEALTHY
                and "restart" in e.detail
                and e.instance.artifact not in first
                for e in events
            ),
            timeout=15,
            message="a pod of the new revision crashing",
        )
        assert platform.advise(spec) is None
    finally:
        await platform.shutdown(keep_running=True)
