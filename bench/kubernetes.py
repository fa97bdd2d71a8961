"""Phoenix on Kubernetes, against the fake API server of tests/kubernetes/fake (no real API
server can run here: see its README), in one run:

* **reaction**: a pod's status turns bad in the watch stream (its container crashes, is
  OOM-killed, or stops being ready) → Phoenix's first API call acting on it (the DELETE of
  that pod, which its ReplicaSet replaces). Both ends are read from the fake's store: when
  the kubelet wrote the bad status, and when Phoenix's DELETE marked the pod terminating.
  Target: median < 100 ms.
* **hung pod**: its server accepts connections and never answers (Kubernetes still calls
  it Ready) → Phoenix's probes call it unhealthy, beside Kubernetes' default liveness probe
  (period 10 s x failure threshold 3 ≈ 30 s). Target: within three of Phoenix's probe
  intervals.
* **API calls for 500 healthy pods**: what Phoenix asks of the API server while nothing
  changes — lists and watches, never polling. Target: well under one request per pod per
  minute.

``python -m bench.kubernetes [--runs 5] [--quiet-seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.kubernetes.fake.behaviour import Behaviour
from tests.kubernetes.fake.cluster import FakeCluster
from tests.kubernetes.workloads import NAMESPACE, cluster_prelude, deployment, namespace
from tests.recovery.engine import engine

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.platforms.kubernetes import KubernetesPlatform
from phoenix_server.platforms.kubernetes.api import WATCH_SECONDS
from phoenix_server.runtime import Runtime

REACTION_TARGET = 0.100
PROBE_INTERVAL = 1.0
HANG_TARGET = 3 * PROBE_INTERVAL
KUBERNETES_LIVENESS = 10.0 * 3
"""Kubernetes' default liveness probe: periodSeconds 10 x failureThreshold 3."""
FLEET = 500
SERVICE = f"""  - name: web
    platform: kubernetes
    kubernetes: {{namespace: {NAMESPACE}, deployment: web}}
    health: {{http: 'http://{{address}}:{{port}}/health', interval: {PROBE_INTERVAL}s,
              timeout: 0.5s, failure_threshold: 2, startup_timeout: 20s}}
    recovery: {{backoff: {{initial: 0.1s, reset_after: 0.5s}}, stabilisation: 0.5s,
                budget: {{attempts: 10000}}}}
"""


@contextlib.asynccontextmanager
async def phoenix(cluster: FakeCluster, workdir: Path) -> AsyncIterator[Runtime]:
    """The engine the recovery tests drive, on SERVICE in the fake cluster."""
    prelude = cluster_prelude(str(cluster.kubeconfig_path(workdir)))
    async with engine(workdir, SERVICE, prelude=prelude) as runtime:
        yield runtime


def live_pods(cluster: FakeCluster) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.pods(NAMESPACE, {"app": "web"})
        if not p["metadata"].get("deletionTimestamp")
    ]


def is_bad(pod: dict[str, Any]) -> bool:
    """The kubelet has written what a watch reports as a failing pod."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("lastState", {}).get("terminated") or "waiting" in status.get("state", {}):
            return True
        if not status.get("ready"):
            return True
    return False


async def settled(runtime: Runtime, cluster: FakeCluster, replicas: int) -> None:
    """Every pod ready and passing Phoenix's probes, and no recovery running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = runtime.tracker.view("web").targets
        ready = [p for p in live_pods(cluster) if not is_bad(p)]
        if (
            len(ready) == replicas
            and len(targets) == replicas
            and all(s is ServiceStatus.HEALTHY for s in targets.values())
            and runtime.active_recovery("web") is None
            and not runtime.unsettled_recovery_ids()  # past the last one's stabilisation
        ):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the service did not settle within 60 s")


async def reaction(
    cluster: FakeCluster, runtime: Runtime, behaviour: Behaviour, runs: int
) -> list[float]:
    """Seconds from the bad status written to the pod's DELETE, ``runs`` times."""
    found: list[float] = []
    for _ in range(runs):
        await settled(runtime, cluster, 3)
        victim = sorted(p["metadata"]["name"] for p in live_pods(cluster))[0]
        marks: dict[str, float] = {}

        def watch(change: Any, victim: str = victim, marks: dict[str, float] = marks) -> None:
            obj = change.new
            if change.name != victim or not isinstance(obj, dict):
                return
            now = time.perf_counter()
            if "bad" not in marks and is_bad(obj):
                marks["bad"] = now
            if "deleted" not in marks and obj["metadata"].get("deletionTimestamp"):
                marks["deleted"] = now

        unsubscribe = cluster.store.subscribe(watch)
        try:
            cluster.set_pod_behaviour(victim, behaviour, NAMESPACE)
            await cluster.wait_for(lambda m=marks: "deleted" in m, timeout=30, what="delete")
        finally:
            unsubscribe()
            cluster.set_pod_behaviour(victim, None, NAMESPACE)
        found.append(marks["deleted"] - marks["bad"])
    return found


async def hang(cluster: FakeCluster, runtime: Runtime, runs: int) -> list[float]:
    """Seconds from a pod hanging to Phoenix's probes calling it unhealthy."""
    found: list[float] = []
    for _ in range(runs):
        await settled(runtime, cluster, 3)
        victim = sorted(p["metadata"]["name"] for p in live_pods(cluster))[0]
        started = time.perf_counter()
        cluster.set_pod_behaviour(victim, Behaviour.HANG, NAMESPACE)
        try:
            while runtime.tracker.view("web").targets.get(victim) is not ServiceStatus.UNHEALTHY:
                if time.perf_counter() - started > 60:
                    raise TimeoutError("the hung pod was not noticed within 60 s")
                await asyncio.sleep(0.005)
            found.append(time.perf_counter() - started)
            await cluster.wait_for(lambda v=victim: v not in names(cluster), timeout=30)
        finally:
            cluster.set_pod_behaviour(victim, None, NAMESPACE)
    return found


def names(cluster: FakeCluster) -> set[str]:
    return {p["metadata"]["name"] for p in live_pods(cluster)}


async def quiet_fleet(workdir: Path, seconds: float) -> tuple[int, int, float]:
    """(requests while listing, requests in ``seconds`` after, seconds to list) for a
    Deployment of FLEET healthy pods."""
    async with FakeCluster(serve_pods=False) as cluster:
        await cluster.apply(namespace())
        await cluster.apply(deployment(replicas=FLEET))
        await cluster.wait_for(
            lambda: sum(1 for p in live_pods(cluster) if not is_bad(p)) == FLEET,
            timeout=120,
            what=f"{FLEET} ready pods",
        )
        catalog = parse_service_file(
            cluster_prelude(str(cluster.kubeconfig_path(workdir))) + "services:\n" + SERVICE,
            source="bench",
            base_dir=workdir,
            default_interval=1,
        )
        spec = catalog.get("web")
        assert spec.run is not None
        platform = KubernetesPlatform(spec.run.cluster)  # type: ignore[union-attr]
        cluster.server.clear_requests()
        began = time.perf_counter()
        await platform.reconcile([spec])
        listed = time.perf_counter() - began
        assert len(platform.instances("web")) == FLEET
        at_start = len(cluster.server.requests)
        await asyncio.sleep(seconds)
        later = len(cluster.server.requests) - at_start
        await platform.shutdown(keep_running=True)
        return at_start, later, listed


def describe(name: str, values: list[float], unit: float = 1000.0, label: str = "ms") -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"{name:<22} median {statistics.median(ordered) * unit:8.1f} {label}   "
        f"p90 {p90 * unit:8.1f} {label}   max {ordered[-1] * unit:8.1f} {label}   n={len(ordered)}"
    )


async def run(runs: int, quiet_seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-k8s-") as tmp:
        workdir = Path(tmp)
        async with FakeCluster() as cluster:
            await cluster.apply(namespace())
            await cluster.apply(deployment(replicas=3))
            async with phoenix(cluster, workdir) as runtime:
                reactions: dict[str, list[float]] = {}
                for label, behaviour in (
                    ("crash", Behaviour.CRASH),
                    ("OOM kill", Behaviour.OOM),
                    ("unready", Behaviour.UNREADY),
                ):
                    reactions[label] = await reaction(cluster, runtime, behaviour, runs)
        async with FakeCluster() as cluster:
            # A TCP readiness probe, which a hung server still passes (as with a real
            # kubelet): only Phoenix's HTTP probes see the hang.
            await cluster.apply(namespace())
            await cluster.apply(deployment(replicas=3, readiness="tcp"))
            async with phoenix(cluster, workdir) as runtime:
                hung = await hang(cluster, runtime, runs)
        print("bad status in the watch stream -> Phoenix's DELETE of that pod:")
        for label, values in reactions.items():
            print("  " + describe(label, values))
        every = [v for values in reactions.values() for v in values]
        print("  " + describe("all", every))
        median = statistics.median(every)
        verdict = "met" if median < REACTION_TARGET else "MISSED"
        print(f"  target: median < {REACTION_TARGET * 1000:.0f} ms: {verdict}")
        print(
            f"hung pod -> unhealthy by Phoenix's probes (every {PROBE_INTERVAL:g}s, "
            f"0.5 s timeout, 2 failures):"
        )
        print("  " + describe("Phoenix", hung, 1.0, "s"))
        ratio = statistics.median(hung) / KUBERNETES_LIVENESS
        verdict = "met" if statistics.median(hung) <= HANG_TARGET else "MISSED"
        print(
            f"  Kubernetes' default liveness: {KUBERNETES_LIVENESS:.0f} s "
            f"(ratio Phoenix/liveness {ratio:.2f}); target <= {HANG_TARGET:g} s: {verdict}"
        )
        at_start, later, listed = await quiet_fleet(workdir, quiet_seconds)
    kinds = 4  # pods, deployments, services, events: one list and one watch each
    per_hour = at_start + kinds * math.ceil(3600 / WATCH_SECONDS) + later
    print(f"{FLEET} healthy pods, watched by one Phoenix:")
    print(f"  first listing: {at_start} requests in {listed * 1000:.0f} ms")
    print(f"  then {later} request(s) in {quiet_seconds:g} s of quiet (measured)")
    print(
        f"  per hour: at most {per_hour} ({kinds} watches reopened every {WATCH_SECONDS} s, "
        f"from the last resourceVersion) = {per_hour / FLEET:.3f} per pod per hour; "
        f"target < {FLEET * 60} (one per pod per minute): "
        + ("met" if per_hour < FLEET * 60 else "MISSED")
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kubernetes", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="faults of each kind (default 5)")
    parser.add_argument(
        "--quiet-seconds", type=float, default=60, help="quiet window for the 500 pods"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("phoenix").setLevel(logging.CRITICAL)  # recoveries log as they go
    asyncio.run(run(args.runs, args.quiet_seconds))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
