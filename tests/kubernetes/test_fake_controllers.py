"""The controllers of the fake cluster: what a cluster does with workloads, observed through
lightkube and through real HTTP to pod IPs and service IPs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from tests.kubernetes.fake import Behaviour, FakeCluster
from tests.kubernetes.fake import manifests as m
from tests.kubernetes.fake.deployment_rules import REVISION, REVISION_HISTORY

Obj = dict[str, Any]
SCALE = 0.05  # a cluster second is 50 ms: back-offs of 10 s, 20 s take 0.5 s, 1 s


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(time_scale=SCALE) as running:
        yield running


@pytest.fixture
def client(cluster: FakeCluster) -> AsyncClient:
    return cluster.client()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=2.0) as plain:
        yield plain


def rolled_out(cluster: FakeCluster, name: str, replicas: int) -> Any:
    """The deployment once its controller saw its last change and all replicas are updated
    and available (kubectl rollout status's test)."""

    def check() -> Obj | None:
        d = cluster.get("Deployment", name)
        status = (d or {}).get("status") or {}
        done = (
            d is not None
            and status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
        )
        return d if done else None

    return check


def container_status(pod: Obj) -> Obj:
    return (pod.get("status") or {}).get("containerStatuses", [{}])[0]


def condition(obj: Obj, kind: str) -> Obj:
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


# -- deployments -----------------------------------------------------------------------------


async def test_a_deployment_gets_a_replicaset_and_pods_that_serve_http(
    cluster: FakeCluster, client: AsyncClient, http: httpx2.AsyncClient
) -> None:
    await client.create(Deployment.from_dict(m.deployment("shop", "shop:v1", replicas=3)))
    deployment = await cluster.wait_for(rolled_out(cluster, "shop", 3), what="rollout")
    assert deployment["metadata"]["annotations"][REVISION] == "1"
    assert condition(deployment, "Available")["reason"] == "MinimumReplicasAvailable"
    assert condition(deployment, "Progressing")["reason"] == "NewReplicaSetAvailable"
    [rs] = [r async for r in client.list(ReplicaSet)]
    pod_hash = rs.metadata.labels["pod-template-hash"]
    assert (
        rs.metadata.name == f"shop-{pod_hash}"
        and rs.spec.selector.matchLabels["pod-template-hash"] == pod_hash
    )
    assert (
        rs.metadata.ownerReferences[0].kind == "Deployment"
        and rs.metadata.ownerReferences[0].controller
    )
    assert rs.metadata.annotations[REVISION] == "1" and rs.status.readyReplicas == 3
    pods = [p async for p in client.list(Pod, labels={"app": "shop"})]
    assert len(pods) == 3 and len({p.status.podIP for p in pods}) == 3
    for pod in pods:
        assert (
            pod.metadata.name.startswith(f"{rs.metadata.name}-")
            and pod.metadata.ownerReferences[0].uid == rs.metadata.uid
        )
        assert pod.status.phase == "Running" and pod.spec.nodeName
        assert [c.type for c in pod.status.conditions if c.status == "True"] == [
            "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled",
        ]  # fmt: skip
        state = pod.status.containerStatuses[0]
        assert (
            state.ready
            and state.started
            and state.state.running.startedAt
            and state.restartCount == 0
        )
        assert state.image == "docker.io/library/shop:v1" and state.imageID.startswith(
            "docker.io/library/shop@sha256:"
        )
        answer = await http.get(f"http://{pod.status.podIP}:8080/health")
        assert answer.status_code == 200
        assert answer.json() == {
            "pod": pod.metadata.name,
            "namespace": "default",
            "container": "app",
            "image": "shop:v1",
            "path": "/health",
        }
        reasons = [e["reason"] for e in cluster.events(pod.metadata.name)]
        assert reasons == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    assert [e["reason"] for e in cluster.events(rs.metadata.name)] == ["SuccessfulCreate"] * 3


async def test_a_new_image_rolls_out_as_revision_two_and_undo_reuses_revision_one(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await client.create(Deployment.from_dict(m.deployment("shop", "shop:v1", replicas=3)))
    await cluster.wait_for(rolled_out(cluster, "shop", 3))
    first = cluster.list("rs")[0]
    await client.patch(
        Deployment,
        "shop",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v2"}]}}}},
    )
    deployment = await cluster.wait_for(rolled_out(cluster, "shop", 3), what="rollout to v2")
    assert deployment["metadata"]["annotations"][REVISION] == "2"
    by_name = {r["metadata"]["name"]: r for r in cluster.list("rs")}
    old, new = by_name.pop(first["metadata"]["name"]), next(iter(by_name.values()))
    assert old["spec"]["replicas"] == 0 and old["metadata"]["annotations"][REVISION] == "1"
    assert new["metadata"]["annotations"][REVISION] == "2" and new["spec"]["replicas"] == 3
    # The old pods were still Terminating when the rollout completed; then they go.
    v2 = {"docker.io/library/shop:v2"}
    await cluster.wait_for(lambda: {container_status(p)["image"] for p in cluster.pods()} == v2)
    scaling = [e["message"] for e in cluster.events("shop") if e["reason"] == "ScalingReplicaSet"]
    assert (
        scaling[1] == f"Scaled up replica set {new['metadata']['name']} from 0 to 1"
    )  # maxSurge 25% of 3

    # kubectl rollout undo: the old ReplicaSet's template (without its hash label) goes back.
    template = old["spec"]["template"]
    del template["metadata"]["labels"]["pod-template-hash"]
    await client.patch(
        Deployment, "shop", {"spec": {"template": template}}, patch_type=PatchType.MERGE
    )
    deployment = await cluster.wait_for(rolled_out(cluster, "shop", 3), what="undo")
    assert deployment["metadata"]["annotations"][REVISION] == "3"
    reused = cluster.get("rs", old["metadata"]["name"])
    assert reused is not None and len(cluster.list("rs")) == 2  # no third ReplicaSet
    assert reused["metadata"]["annotations"][REVISION] == "3"
    assert reused["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert cluster.get("rs", new["metadata"]["name"])["spec"]["replicas"] == 0  # type: ignore[index]


async def test_scaling_pausing_and_history_limit(cluster: FakeCluster, client: AsyncClient) -> None:
    await client.create(
        Deployment.from_dict(m.deployment("shop", "shop:v1", replicas=2, revisionHistoryLimit=1))
    )
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
    await client.patch(
        Deployment.Scale, "shop", {"spec": {"replicas": 4}}, patch_type=PatchType.MERGE
    )
    await cluster.wait_for(rolled_out(cluster, "shop", 4), what="scale up")
    for version in ("v2", "v3"):
        await client.patch(
            Deployment,
            "shop",
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "app", "image": f"shop:{version}"}]}
                    }
                }
            },
        )
        await cluster.wait_for(rolled_out(cluster, "shop", 4), what=f"rollout of {version}")
    await cluster.wait_for(
        lambda: len(cluster.list("rs")) == 2, what="history pruned to one old ReplicaSet"
    )
    assert sorted(r["metadata"]["annotations"][REVISION] for r in cluster.list("rs")) == ["2", "3"]

    await client.patch(Deployment, "shop", {"spec": {"paused": True}})
    await client.patch(
        Deployment,
        "shop",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v4"}]}}}},
    )
    paused = await cluster.wait_for(
        lambda: (
            condition(cluster.get("Deployment", "shop") or {}, "Progressing").get("reason")
            == "DeploymentPaused"
        )
    )
    # No rollout while paused; the paused sync prunes history (v2's ReplicaSet) as Kubernetes does.
    [active] = cluster.list("rs")
    assert (
        paused
        and active["metadata"]["annotations"][REVISION] == "3"
        and active["spec"]["replicas"] == 4
    )
    await client.patch(Deployment, "shop", {"spec": {"paused": False}})
    await cluster.wait_for(rolled_out(cluster, "shop", 4), what="rollout after resume")
    v4 = {"docker.io/library/shop:v4"}
    await cluster.wait_for(lambda: {container_status(p)["image"] for p in cluster.pods()} == v4)


async def test_a_crashing_rollout_exceeds_its_progress_deadline(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await client.create(
        Deployment.from_dict(m.deployment("shop", "shop:v1", replicas=2, progressDeadlineSeconds=3))
    )
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
    cluster.behave("shop:v2", Behaviour.CRASH)
    started = time.monotonic()
    await client.patch(
        Deployment,
        "shop",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v2"}]}}}},
    )

    def stuck() -> Obj | None:
        d = cluster.get("Deployment", "shop") or {}
        return (
            d if condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded" else None
        )

    deployment = await cluster.wait_for(stuck, what="ProgressDeadlineExceeded")
    assert time.monotonic() - started >= 3 * SCALE
    progressing = condition(deployment, "Progressing")
    assert (
        progressing["status"] == "False" and "has timed out progressing" in progressing["message"]
    )
    assert condition(deployment, "Available")["status"] == "True"  # the old pods still serve
    status = deployment["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (3, 1, 2)


# -- the kubelet -----------------------------------------------------------------------------


async def test_a_crashing_container_goes_into_crash_loop_back_off(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    cluster.behave("shop:bad", Behaviour.CRASH)
    await client.create(Pod.from_dict(m.pod("crasher", "shop:bad")))
    restarts: list[int] = []

    def backing_off() -> Obj | None:
        pod = cluster.get("Pod", "crasher") or {}
        state = container_status(pod)
        if state.get("restartCount") is not None and state["restartCount"] not in restarts:
            restarts.append(state["restartCount"])
        waiting = state.get("state", {}).get("waiting", {})
        return (
            pod
            if waiting.get("reason") == "CrashLoopBackOff" and state["restartCount"] >= 2
            else None
        )

    pod = await cluster.wait_for(backing_off, what="CrashLoopBackOff")
    state = container_status(pod)
    assert restarts == sorted(restarts) and state["restartCount"] >= 2
    assert (
        state["lastState"]["terminated"]["reason"] == "Error"
        and state["lastState"]["terminated"]["exitCode"] == 1
    )
    assert "back-off 20s restarting failed container=app" in state["state"]["waiting"]["message"]
    assert (
        not state["ready"]
        and pod["status"]["phase"] == "Running"
        and condition(pod, "Ready")["status"] == "False"
    )
    back_off = [e for e in cluster.events("crasher") if e["reason"] == "BackOff"]
    assert back_off[0]["type"] == "Warning" and back_off[0]["count"] >= 2

    cluster.behave("shop:bad", Behaviour.HEALTHY)
    healed = await cluster.wait_for(
        lambda: container_status(cluster.get("Pod", "crasher") or {}).get("ready")
    )
    assert healed


async def test_an_out_of_memory_container_is_oom_killed(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await client.create(Pod.from_dict(m.pod("hungry", "shop:v1")))
    await cluster.wait_for(
        lambda: container_status(cluster.get("Pod", "hungry") or {}).get("ready")
    )
    cluster.set_pod_behaviour("hungry", Behaviour.OOM)

    def killed() -> Obj | None:
        state = container_status(cluster.get("Pod", "hungry") or {})
        return state if state.get("lastState", {}).get("terminated") else None

    state = await cluster.wait_for(killed, what="OOMKilled")
    assert (
        state["lastState"]["terminated"]["reason"],
        state["lastState"]["terminated"]["exitCode"],
    ) == ("OOMKilled", 137)


async def test_unready_hung_unpullable_and_misconfigured_containers(
    cluster: FakeCluster, client: AsyncClient, http: httpx2.AsyncClient
) -> None:
    for name, behaviour in (("sulky", Behaviour.UNREADY), ("stuck", Behaviour.HANG)):
        cluster.set_pod_behaviour(name, behaviour)
        await client.create(Pod.from_dict(m.pod(name)))
    cluster.behave("missing:v1", Behaviour.IMAGE_PULL)
    cluster.behave("broken:v1", Behaviour.CONFIG_ERROR)
    await client.create(Pod.from_dict(m.pod("unpulled", "missing:v1")))
    await client.create(Pod.from_dict(m.pod("unconfigured", "broken:v1")))

    def state_of(name: str, key: str) -> Any:
        return lambda: container_status(cluster.get("Pod", name) or {}).get(key)

    sulky = await cluster.wait_for(
        lambda: (p := cluster.get("Pod", "sulky")) and container_status(p).get("started") and p
    )
    assert (
        condition(sulky, "Ready")["status"] == "False"
        and condition(sulky, "Ready")["reason"] == "ContainersNotReady"
    )
    assert (await http.get(cluster.pod_url(sulky, "/ready"))).status_code == 503
    await cluster.wait_for(state_of("stuck", "ready"))
    with pytest.raises(httpx2.ReadTimeout):
        await http.get(cluster.pod_url("stuck", "/health"), timeout=0.3)  # accepted, never answered
    pull = await cluster.wait_for(
        lambda: (
            container_status(cluster.get("Pod", "unpulled") or {})
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "ImagePullBackOff"
        )
    )
    assert pull and cluster.get("Pod", "unpulled")["status"]["phase"] == "Pending"  # type: ignore[index]
    assert {"Failed", "BackOff"} <= {e["reason"] for e in cluster.events("unpulled")}
    await cluster.wait_for(
        lambda: (
            container_status(cluster.get("Pod", "unconfigured") or {})
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "CreateContainerConfigError"
        )
    )


async def test_deleted_pods_terminate_gracefully_and_are_replaced(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await client.create(Deployment.from_dict(m.deployment("shop", replicas=2)))
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
    victim = cluster.pods()[0]["metadata"]["name"]
    await client.delete(Pod, victim)
    terminating = cluster.get("Pod", victim)
    assert (
        terminating is not None and terminating["metadata"]["deletionTimestamp"]
    )  # still there, Terminating
    await cluster.wait_for(lambda: cluster.get("Pod", victim) is None, what="termination")
    assert "Killing" in {e["reason"] for e in cluster.events(victim)}
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
    assert victim not in {p["metadata"]["name"] for p in cluster.pods()}


# -- services, autoscaling, statefulsets -------------------------------------------------------


async def test_a_service_forwards_to_ready_pods_only_and_follows_its_selector(
    cluster: FakeCluster, client: AsyncClient, http: httpx2.AsyncClient
) -> None:
    await cluster.apply(
        m.deployment("blue", "shop:blue", replicas=2, labels={"app": "shop", "colour": "blue"})
    )
    await cluster.apply(
        m.deployment("green", "shop:green", replicas=1, labels={"app": "shop", "colour": "green"})
    )
    service = await cluster.apply(m.service("shop", {"app": "shop", "colour": "blue"}))
    ip = service["spec"]["clusterIP"]
    await cluster.wait_for(rolled_out(cluster, "blue", 2))
    await cluster.wait_for(rolled_out(cluster, "green", 1))
    blue = sorted(p["metadata"]["name"] for p in cluster.pods(labels={"colour": "blue"}))

    async def answered_by(count: int) -> list[str]:
        # A connection each: kube-proxy balances connections, not requests.
        close = {"Connection": "close"}
        return [
            (await http.get(f"http://{ip}:80/", headers=close)).json()["pod"] for _ in range(count)
        ]

    await cluster.wait_for(
        lambda: (
            len(
                ((cluster.get("endpoints", "shop") or {}).get("subsets") or [{}])[0].get(
                    "addresses", []
                )
            )
            == 2
        )
    )
    assert sorted(set(await answered_by(4))) == blue  # round robin over both
    cluster.set_pod_behaviour(blue[0], Behaviour.UNREADY)
    await cluster.wait_for(
        lambda: (
            len(cluster.get("endpoints", "shop")["subsets"][0].get("notReadyAddresses", [])) == 1
        )
    )  # type: ignore[index]
    assert set(await answered_by(4)) == {blue[1]}
    await client.patch(Service, "shop", {"spec": {"selector": {"app": "shop", "colour": "green"}}})
    green = cluster.pods(labels={"colour": "green"})[0]["metadata"]["name"]
    await cluster.wait_for(
        lambda: (
            cluster.get("endpoints", "shop")["subsets"][0]["addresses"][0]["targetRef"]["name"]
            == green
        )
    )  # type: ignore[index]
    assert set(await answered_by(3)) == {green}
    await client.patch(Deployment, "green", {"spec": {"replicas": 0}})
    await cluster.wait_for(
        lambda: "subsets" not in (cluster.get("endpoints", "shop") or {"subsets": 1})
    )
    with pytest.raises(httpx2.ConnectError):
        await http.get(f"http://{ip}:80/")  # no ready endpoint: refused, as kube-proxy rejects


async def test_an_hpa_raises_replicas_to_its_minimum(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await cluster.apply(m.deployment("shop", replicas=1))
    await cluster.apply(m.hpa("shop", "shop", minimum=3, maximum=5))
    await cluster.wait_for(rolled_out(cluster, "shop", 3), what="scaled to minReplicas")
    hpa = await cluster.wait_for(
        lambda: (h := cluster.get("hpa", "shop")) and h["status"].get("currentReplicas") == 3 and h
    )
    assert hpa["status"]["desiredReplicas"] == 3
    rescale = [e["message"] for e in cluster.events("shop") if e["reason"] == "SuccessfulRescale"]
    assert rescale == ["New size: 3; reason: Current number of replicas below Spec.MinReplicas"]
    await client.patch(Deployment, "shop", {"spec": {"replicas": 9}})
    await cluster.wait_for(rolled_out(cluster, "shop", 5), what="capped to maxReplicas")


async def test_a_statefulset_makes_ordered_pods_and_updates_from_the_top(
    cluster: FakeCluster,
) -> None:
    await cluster.apply(m.statefulset("db", "db:v1", replicas=3))

    def settled(image: str) -> Any:
        def check() -> Obj | None:
            sts = cluster.get("StatefulSet", "db") or {}
            status = sts.get("status") or {}
            images = {container_status(p).get("image") for p in cluster.pods(labels={"app": "db"})}
            done = status.get("readyReplicas") == 3 and status.get("currentRevision") == status.get(
                "updateRevision"
            )
            return sts if done and images == {f"docker.io/library/{image}"} else None

        return check

    first = await cluster.wait_for(settled("db:v1"))
    assert sorted(p["metadata"]["name"] for p in cluster.pods(labels={"app": "db"})) == [
        "db-0",
        "db-1",
        "db-2",
    ]
    created = [e["message"] for e in cluster.events("db") if e["reason"] == "SuccessfulCreate"]
    assert created == [f"create Pod db-{i} in StatefulSet db successful" for i in range(3)]
    manifest = m.statefulset("db", "db:v2", replicas=3)
    await cluster.apply(manifest)
    second = await cluster.wait_for(settled("db:v2"), what="statefulset update")
    assert second["status"]["updateRevision"] != first["status"]["updateRevision"]
    deleted = [e["message"] for e in cluster.events("db") if e["reason"] == "SuccessfulDelete"]
    assert deleted == [f"delete Pod db-{i} in StatefulSet db successful" for i in (2, 1, 0)]


# -- the harness itself ----------------------------------------------------------------------


async def test_two_clusters_run_side_by_side_on_their_own_addresses() -> None:
    async with FakeCluster(time_scale=SCALE) as one, FakeCluster(time_scale=SCALE) as two:
        assert one.network.octet != two.network.octet and one.url != two.url
        for cluster in (one, two):
            await cluster.apply(m.deployment("shop", replicas=1))
        for cluster in (one, two):
            await cluster.wait_for(rolled_out(cluster, "shop", 1))
        ips = [c.pods()[0]["status"]["podIP"] for c in (one, two)]
        assert ips[0].split(".")[1] != ips[1].split(".")[1]


async def test_a_fleet_of_five_hundred_pods_comes_up_quickly() -> None:
    async with FakeCluster(time_scale=SCALE) as cluster:
        started = time.monotonic()
        await cluster.apply(m.deployment("fleet", replicas=500))
        await cluster.wait_for(rolled_out(cluster, "fleet", 500), timeout=30, what="500 pods")
        took = time.monotonic() - started
        assert len(cluster.pods()) == 500 and len(cluster.kubelet.servers) == 500
        client = cluster.client()
        listing = client.list(Pod, labels={"app": "fleet"})
        assert len([p async for p in listing]) == 500
    assert took < 15, took


async def test_min_ready_seconds_delays_availability_and_recreate_stops_old_pods_first(
    cluster: FakeCluster,
) -> None:
    await cluster.apply(
        m.deployment("shop", replicas=2, minReadySeconds=4, strategy={"type": "Recreate"})
    )

    def ready_not_available() -> Obj | None:
        rs = (cluster.list("rs") or [{}])[0]
        status = rs.get("status") or {}
        return (
            rs if status.get("readyReplicas") == 2 and not status.get("availableReplicas") else None
        )

    await cluster.wait_for(ready_not_available, what="ready but not yet available")
    await cluster.wait_for(rolled_out(cluster, "shop", 2), what="available after minReadySeconds")
    manifest = m.deployment(
        "shop", "shop:v2", replicas=2, minReadySeconds=4, strategy={"type": "Recreate"}
    )
    await cluster.apply(manifest)
    await cluster.wait_for(rolled_out(cluster, "shop", 2), what="recreated")
    scaling = [
        e["message"].split(" replica set ")[0]
        for e in cluster.events("shop")
        if e["reason"] == "ScalingReplicaSet"
    ]
    assert scaling == ["Scaled up", "Scaled down", "Scaled up"]


async def test_a_hung_container_with_a_liveness_probe_is_restarted_and_crash_pod_crashes_once(
    cluster: FakeCluster,
) -> None:
    probe = {
        "httpGet": {"path": "/health", "port": 8080},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    body = m.pod("probed")
    body["spec"]["containers"][0]["livenessProbe"] = probe
    await cluster.apply(body)
    await cluster.wait_for(
        lambda: container_status(cluster.get("Pod", "probed") or {}).get("ready")
    )
    cluster.crash_pod("probed")
    crashed = await cluster.wait_for(
        lambda: container_status(cluster.get("Pod", "probed") or {}).get("restartCount") == 1
    )
    assert crashed
    state = container_status(cluster.get("Pod", "probed") or {})
    assert state["lastState"]["terminated"]["exitCode"] == 1
    cluster.set_pod_behaviour("probed", Behaviour.HANG)
    await cluster.wait_for(
        lambda: container_status(cluster.get("Pod", "probed") or {}).get("restartCount") == 2
    )
    messages = [(e["reason"], e["message"]) for e in cluster.events("probed")]
    assert ("Killing", "Container app failed liveness probe, will be restarted") in messages
    assert any(r == "Unhealthy" and m_.startswith("Liveness probe failed:") for r, m_ in messages)


async def test_a_cluster_writes_a_kubeconfig_lightkube_can_use(
    cluster: FakeCluster, tmp_path: Any
) -> None:
    from lightkube import KubeConfig

    path = cluster.kubeconfig_path(tmp_path)
    async with AsyncClient(KubeConfig.from_file(path)) as own:
        names = [ns.metadata.name async for ns in own.list(_namespace())]
    assert {"default", "kube-system"} <= set(names)


def _namespace() -> Any:
    from lightkube.resources.core_v1 import Namespace

    return Namespace


async def test_a_pod_relabelled_out_of_its_selector_is_released_and_replaced(
    cluster: FakeCluster, client: AsyncClient
) -> None:
    await cluster.apply(m.deployment("shop", replicas=2))
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
    quarantined = cluster.pods()[0]["metadata"]["name"]
    await client.patch(
        Pod,
        quarantined,
        {"metadata": {"labels": {"app": "quarantine"}}},
        patch_type=PatchType.MERGE,
    )
    await cluster.wait_for(
        lambda: len(cluster.pods(labels={"app": "shop"})) == 2, what="a replacement"
    )
    released = cluster.get("Pod", quarantined) or {}
    assert "ownerReferences" not in released["metadata"] and container_status(released)["ready"]
    await cluster.wait_for(rolled_out(cluster, "shop", 2))
