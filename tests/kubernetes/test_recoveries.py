"""Phoenix's engine (the real Runtime: probes, health tracking, decisions, the executor and
SQLite) looking after Deployments on the fake cluster through the real client: noticing what
the watches report, and each strategy carried out as the API calls a person would make,
verified by the rollout's status and by probing the new pods."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.recoveries import RecoveryStatus, Strategy
from phoenix_server.runtime import Runtime
from tests.kubernetes.fake.behaviour import Behaviour
from tests.kubernetes.fake.cluster import FakeCluster
from tests.kubernetes.fake.resources import PODS
from tests.kubernetes.workloads import (
    NAMESPACE,
    cluster_prelude,
    deployment,
    hpa,
    service,
    statefulset,
    web_service,
)
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import eventually

pytestmark = pytest.mark.e2e


def running_pods(cluster: FakeCluster, app: str = "web") -> list[str]:
    return sorted(
        p["metadata"]["name"]
        for p in cluster.pods(NAMESPACE, {"app": app})
        if not p["metadata"].get("deletionTimestamp")
    )


async def every_pod_healthy(runtime: Runtime, count: int) -> None:
    """The service healthy with ``count`` pods each passing its probes (not merely one)."""
    await healthy(runtime, "web")

    def all_pass() -> bool:
        targets = runtime.tracker.view("web").targets
        return len(targets) == count and all(s is ServiceStatus.HEALTHY for s in targets.values())

    await eventually(all_pass, timeout=15, message=f"{count} pods passing their probes")


def web_selector(cluster: FakeCluster) -> dict[str, str]:
    """The ``web`` Service's selector as the cluster has it now."""
    return dict((cluster.get("services", "web", NAMESPACE) or {})["spec"]["selector"])


async def primary_beside(
    cluster: FakeCluster, other: str, image: str, readiness: str = "http"
) -> None:
    """Two ``web`` pods and the ``web`` Service, beside one pod of Deployment ``other``
    (a backup or a fallback), all running."""
    await cluster.apply(deployment(replicas=2, readiness=readiness))
    await cluster.apply(deployment(other, image=image, replicas=1))
    await cluster.apply(service())
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="primary pods")
    await cluster.wait_for(lambda: running_pods(cluster, other), what=f"the {other} pod")


def mutations(cluster: FakeCluster) -> list[tuple[str, str, str | None]]:
    """What Phoenix asked to change: (verb, resource[/subresource], name)."""
    found = []
    for request in cluster.server.requests:
        if request.verb in ("create", "update", "patch", "delete", "deletecollection"):
            resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
            found.append((request.verb, resource, request.name))
    return found


@asynccontextmanager
async def phoenix(
    tmp_path: Path, cluster: FakeCluster, section: str = "", extra: str = "", **env: str
) -> AsyncIterator[Runtime]:
    kubeconfig = cluster.kubeconfig_path(tmp_path)
    async with engine(
        tmp_path, web_service(section, extra), prelude=cluster_prelude(str(kubeconfig)), **env
    ) as runtime:
        yield runtime


async def test_pods_are_adopted_probed_at_their_ip_and_a_crash_looping_one_replaced(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(deployment(replicas=2))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    async with phoenix(tmp_path, cluster) as runtime:
        await every_pod_healthy(runtime, 2)
        instances = runtime.instances(runtime.catalog.get("web"))
        assert sorted(i.id for i in instances) == running_pods(cluster)
        assert all(i.address and i.address.startswith("127.") and i.port == 8080 for i in instances)
        bad = instances[0].id
        cluster.set_pod_behaviour(bad, Behaviour.CRASH, NAMESPACE)
        recovery = await eventually(
            lambda: runtime.active_recovery("web"), timeout=20, message="a recovery starts"
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert done.strategy is Strategy.RESTART
        first = done.steps[0]
        assert first.name == "Failing pods replaced"
        assert f"deleted pod(s) {bad}" in (first.detail or "")
        assert ("delete", "pods", bad) in mutations(cluster)
        # Only the failing pod was touched: no rollout restart, the other pod kept.
        assert not [m for m in mutations(cluster) if m[1] == "deployments"]
        assert bad not in running_pods(cluster)
        assert instances[1].id in running_pods(cluster)
        await healthy(runtime, "web")


async def test_a_failed_deploy_rolls_back_to_the_revision_the_good_version_ran_as(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(deployment(replicas=2, image="shop/web:1"))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    cluster.behave("shop/web:2", Behaviour.CRASH)
    versions = (
        "versions: [{name: v1, image: 'shop/web:1', known_good: true}, "
        "{name: v2, image: 'shop/web:2'}]\nversion: v1"
    )
    async with phoenix(tmp_path, cluster, extra=versions) as runtime:
        await healthy(runtime, "web")
        first_hash = {p["metadata"]["labels"]["pod-template-hash"] for p in cluster.pods(NAMESPACE)}
        await eventually(
            lambda: runtime.catalog.get("web").pins.get("v1") in first_hash,
            timeout=10,
            message="v1 pinned to the revision it runs as",
        )
        _, changed = await runtime.deploy("web", "v2")
        assert changed
        rollbacks = await eventually(
            lambda: history(runtime, strategy=Strategy.ROLLBACK), timeout=30, message="rollback"
        )
        done = await finished(runtime, rollbacks[0].id, timeout=60)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert "back to the template of revision 1" in (done.steps[0].detail or "")
        live = cluster.get("deployments", "web", NAMESPACE)
        assert live is not None
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:1"
        assert live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        await healthy(runtime, "web")
        serving = [p for p in cluster.pods(NAMESPACE) if not p["metadata"].get("deletionTimestamp")]
        assert {p["spec"]["containers"][0]["image"] for p in serving} == {"shop/web:1"}


async def test_a_bad_release_made_outside_phoenix_is_rolled_back_not_restarted(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """kubectl set image to a release that crashes: the pods of a revision that never ran
    healthy call for a rollback (a rollout restart would only restart the bad release)."""
    await cluster.apply(deployment(replicas=2, image="shop/web:1"))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    cluster.behave("shop/web:2", Behaviour.CRASH)
    versions = (
        "versions: [{name: v1, image: 'shop/web:1', known_good: true}, "
        "{name: v2, image: 'shop/web:2'}]\nversion: v2"
    )
    async with phoenix(tmp_path, cluster, extra=versions) as runtime:
        # Phoenix was told v2 runs; the cluster runs v1 (healthy) until someone sets v2.
        await healthy(runtime, "web")
        await cluster.apply(deployment(replicas=2, image="shop/web:2"))  # kubectl apply
        recovery = await eventually(
            lambda: runtime.active_recovery("web"), timeout=30, message="a recovery starts"
        )
        assert recovery.strategy is Strategy.ROLLBACK, recovery.decision
        assert "never ran healthy" in recovery.decision.reason
        done = await finished(runtime, recovery.id, timeout=60)
        assert done.status is RecoveryStatus.COMPLETED, done
        await healthy(runtime, "web")


async def test_scaling_raises_the_hpas_floor_instead_of_fighting_it(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(deployment(replicas=2))
    await cluster.apply(hpa(low=2, high=5))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    async with phoenix(
        tmp_path, cluster, section="hpa: web", extra="replicas: {min: 2, max: 4}"
    ) as runtime:
        await healthy(runtime, "web")
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.SCALE, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert "HPA web: minReplicas 2 -> 3" in (done.steps[0].detail or "")
        live_hpa = cluster.get("horizontalpodautoscalers", "web", NAMESPACE)
        assert live_hpa is not None and live_hpa["spec"]["minReplicas"] == 3
        assert len(running_pods(cluster)) == 3
        assert not [m for m in mutations(cluster) if m[1] == "deployments"]


async def test_scaling_without_an_hpa_sets_the_replicas_within_the_declared_maximum(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(deployment(replicas=1))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 1, what="one pod")
    async with phoenix(tmp_path, cluster, extra="replicas: {min: 1, max: 2}") as runtime:
        await healthy(runtime, "web")
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.SCALE, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert len(running_pods(cluster)) == 2
        await eventually(
            lambda: Strategy.SCALE not in runtime.strategies(runtime.catalog.get("web")),
            timeout=5,
            message="scale no longer offered at the maximum",
        )
        reason = runtime.orchestrator.unavailable_reason(runtime.catalog.get("web"), Strategy.SCALE)
        assert "already asks for 2 replica(s), its declared maximum" in reason


async def test_failover_switches_the_service_to_the_backup_and_back_once_the_primary_holds(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await primary_beside(cluster, "web-backup", "shop/web:1")
    async with phoenix(tmp_path, cluster, section="service: web, backup: web-backup") as runtime:
        await healthy(runtime, "web")
        heard: list[ServiceStatus] = []
        runtime.tracker.subscribe(lambda t: heard.append(t.current))
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.FAILOVER, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=30)
        assert done.status is RecoveryStatus.COMPLETED, done
        switched = cluster.get("services", "web", NAMESPACE)
        assert switched is not None
        assert switched["spec"]["selector"] == {"app": "web-backup"}
        assert switched["metadata"]["annotations"]["phoenix.dev/serving-role"] == "backup"
        serving = {i.id for i in runtime.instances(runtime.catalog.get("web"))}
        assert serving == set(running_pods(cluster, "web-backup"))
        # The primary is healthy: after the stabilisation period (1 s) traffic goes back.
        await cluster.wait_for(
            lambda: web_selector(cluster) == {"app": "web"},
            timeout=15,
            what="the Service back on the primary",
        )
        restored = cluster.get("services", "web", NAMESPACE)
        assert restored is not None
        assert "phoenix.dev/serving-role" not in (restored["metadata"].get("annotations") or {})
        await eventually(
            lambda: (
                {i.id for i in runtime.instances(runtime.catalog.get("web"))}
                == set(running_pods(cluster))
            ),
            timeout=5,
            message="the primary's pods are the instances again",
        )
        # Both switches moved traffic to pods that ran already: no moment of outage
        # between the old pods' removal and the new ones' first probe (it opened an
        # incident, and a failover again, when that probe was slow).
        assert heard == [], heard


async def test_circuit_breaking_takes_a_failing_pod_out_of_the_endpoints_then_replaces_it(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    serving = {"phoenix.dev/serving": "true"}
    await cluster.apply(deployment(replicas=2, labels=serving))
    await cluster.apply(service(selector={"app": "web", **serving}))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    extra = "circuit: {open_for: 1s}"
    # Automatic recovery off: only the operator's circuit breaker acts on the failing pod.
    async with phoenix(
        tmp_path, cluster, section="service: web", extra=extra, AUTO_RECOVERY="false"
    ) as runtime:
        await every_pod_healthy(runtime, 2)
        bad = running_pods(cluster)[0]
        cluster.set_pod_behaviour(bad, Behaviour.UNREADY, NAMESPACE)
        await eventually(
            lambda: runtime.tracker.status("web") is not ServiceStatus.HEALTHY,
            timeout=15,
            message="web degraded",
        )
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.CIRCUIT_BREAK, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert f"pod(s) {bad} out of Service web's endpoints" in (done.steps[0].detail or "")
        assert ("patch", "pods", bad) in mutations(cluster)
        assert ("delete", "pods", bad) in mutations(cluster)
        assert bad not in running_pods(cluster)
        await healthy(runtime, "web")


async def test_a_strategy_that_cannot_apply_says_what_is_missing(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(deployment(replicas=1))
    await cluster.apply(service())
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 1, what="one pod")
    async with phoenix(tmp_path, cluster, section="service: web") as runtime:
        spec = runtime.catalog.get("web")
        assert runtime.strategies(spec) == {Strategy.RESTART}
        reasons = {
            s: runtime.orchestrator.unavailable_reason(spec, s)
            for s in (Strategy.FAILOVER, Strategy.CIRCUIT_BREAK, Strategy.ROLLBACK, Strategy.SCALE)
        }
        assert "declares no backup Deployment (kubernetes.backup)" in reasons[Strategy.FAILOVER]
        assert 'require phoenix.dev/serving: "true"' in reasons[Strategy.CIRCUIT_BREAK]
        assert (
            "no versions" in reasons[Strategy.ROLLBACK]
            or "fewer than two" in reasons[Strategy.ROLLBACK]
        )
        assert "declared maximum" in reasons[Strategy.SCALE]


async def test_a_statefulset_is_restarted_through_a_rollout_and_verified(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await cluster.apply(statefulset(replicas=2))
    await cluster.wait_for(lambda: len(running_pods(cluster, "db")) == 2, what="two db pods")
    entry = (
        web_service().replace("name: web", "name: db").replace("deployment: web", "statefulset: db")
    )
    kubeconfig = cluster.kubeconfig_path(tmp_path)
    async with engine(tmp_path, entry, prelude=cluster_prelude(str(kubeconfig))) as runtime:
        await healthy(runtime, "db")
        before = set(running_pods(cluster, "db"))
        assert {i.id for i in runtime.instances(runtime.catalog.get("db"))} == before
        recovery = await runtime.trigger(
            service="db", strategy=Strategy.RESTART, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert "rollout restart of StatefulSet db" in (done.steps[0].detail or "")
        assert ("patch", "statefulsets", "db") in mutations(cluster)
        restarted = cluster.get("statefulsets", "db", NAMESPACE)
        assert restarted is not None
        annotations = restarted["spec"]["template"]["metadata"]["annotations"]
        assert "kubectl.kubernetes.io/restartedAt" in annotations
        await healthy(runtime, "db")
        reason = runtime.orchestrator.unavailable_reason(
            runtime.catalog.get("db"), Strategy.ROLLBACK
        )
        assert "is a StatefulSet" in reason


async def test_circuit_breaking_with_a_fallback_switches_the_service_to_it_and_back(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    await primary_beside(cluster, "web-degraded", "shop/degraded:1")
    section = "service: web, fallback: web-degraded"
    async with phoenix(
        tmp_path, cluster, section=section, extra="circuit: {open_for: 2s}", AUTO_RECOVERY="false"
    ) as runtime:
        await every_pod_healthy(runtime, 2)
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.CIRCUIT_BREAK, reason="test", force=True
        )
        await cluster.wait_for(
            lambda: web_selector(cluster) == {"app": "web-degraded"},
            timeout=10,
            what="the Service on the fallback while the circuit is open",
        )
        done = await finished(runtime, recovery.id, timeout=40)
        assert done.status is RecoveryStatus.COMPLETED, done
        assert "the fallback answers every request" in (done.steps[0].detail or "")
        assert "selects web again" in (done.steps[2].detail or "")
        restored = cluster.get("services", "web", NAMESPACE)
        assert restored is not None and restored["spec"]["selector"] == {"app": "web"}
        await healthy(runtime, "web")


async def test_a_circuit_an_earlier_phoenix_left_open_is_closed_at_start(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """Phoenix stopped mid-recovery: a pod still relabelled out of the endpoints and the
    Service still on the fallback. The next Phoenix closes the circuit it finds open."""
    serving = {"phoenix.dev/serving": "true"}
    await cluster.apply(deployment(replicas=2, labels=serving))
    await cluster.apply(deployment("web-degraded", image="shop/degraded:1", replicas=1))
    await cluster.wait_for(lambda: len(running_pods(cluster)) == 2, what="two pods")
    await cluster.wait_for(lambda: running_pods(cluster, "web-degraded"), what="fallback pod")
    left = running_pods(cluster)[0]
    cluster.registry.mutate(
        PODS,
        NAMESPACE,
        left,
        lambda p: p["metadata"]["labels"].update({"phoenix.dev/serving": "false"}),
    )
    switched = service(selector={"app": "web-degraded"})
    switched["metadata"]["annotations"] = {
        "phoenix.dev/serving-role": "fallback",
        "phoenix.dev/primary-selector": json.dumps({"app": "web", **serving}),
    }
    await cluster.apply(switched)
    section = "service: web, fallback: web-degraded"
    async with phoenix(tmp_path, cluster, section=section, AUTO_RECOVERY="false") as runtime:
        await cluster.wait_for(
            lambda: web_selector(cluster) == {"app": "web", **serving},
            timeout=10,
            what="the Service back on the primary",
        )
        await cluster.wait_for(
            lambda: (
                (cluster.get("pods", left, NAMESPACE) or {"metadata": {"labels": {}}})["metadata"][
                    "labels"
                ].get("phoenix.dev/serving")
                == "true"
            ),
            timeout=10,
            what="the healthy pod readmitted (not replaced)",
        )
        await healthy(runtime, "web")


async def test_no_failback_while_the_primary_fails_phoenixs_probes_though_kubernetes_calls_it_ready(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """The primary hangs behind a TCP readiness probe: Ready to Kubernetes, failing Phoenix's
    HTTP check. Traffic stays on the backup until the primary answers again."""
    await primary_beside(cluster, "web-backup", "shop/backup:1", readiness="tcp")
    section = "service: web, backup: web-backup"
    async with phoenix(tmp_path, cluster, section=section, AUTO_RECOVERY="false") as runtime:
        await every_pod_healthy(runtime, 2)
        cluster.behave("shop/web:1", Behaviour.HANG)
        recovery = await runtime.trigger(
            service="web", strategy=Strategy.FAILOVER, reason="test", force=True
        )
        done = await finished(runtime, recovery.id, timeout=30)
        assert done.status is RecoveryStatus.COMPLETED, done
        primary = cluster.get("deployments", "web", NAMESPACE)
        assert primary is not None and primary["status"].get("readyReplicas") == 2
        # Well past the stabilisation period (1 s): still on the backup.
        for _ in range(4):
            await asyncio.sleep(1.0)  # the condition is that nothing happens: time must pass
            selector = web_selector(cluster)
            assert selector == {"app": "web-backup"}
        cluster.behave("shop/web:1", Behaviour.HEALTHY)
        await cluster.wait_for(
            lambda: web_selector(cluster) == {"app": "web"},
            timeout=15,
            what="the Service back on the primary once it answers",
        )
