"""The Kubernetes platform: services run as a cluster's workloads (Deployments,
StatefulSets), which heal and roll out by themselves.

Phoenix never starts or stops a pod itself and has no router here: its instances are the
workload's pods as the API's watches report them, and every strategy is a change asked of
the API (delete failing pods, a rollout restart, the template of a known-good revision, more
replicas) followed by watching the rollout it causes. A container the kubelet restarts is
not an ended instance: it is a pod with a problem (``CrashLoopBackOff``, ``OOMKilled``),
reported as such, and what to do about it is the recovery's choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, ReplicaSet, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Event, Pod, Service
from lightkube.types import PatchType

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import (
    Instance,
    InstanceState,
    KubernetesCluster,
    KubernetesWorkload,
    PlatformKind,
    ServiceSpec,
    WorkloadKind,
)
from phoenix_server.platforms.base import EventListener, InstanceEvent, InstanceEventKind, Rollout
from phoenix_server.platforms.kubernetes.api import ObjectWatch, call, connect, describe
from phoenix_server.platforms.kubernetes.reading import (
    RESTARTED_AT,
    REVISION,
    TEMPLATE_HASH,
    WAITING_PROBLEMS,
    annotations_of,
    deployment_rollout,
    labels_of,
    name_of,
    owned_by,
    pod_image,
    pod_instance,
    pod_key,
    pod_problem,
    pod_ready,
    present,
    statefulset_rollout,
)
from phoenix_server.platforms.kubernetes.traffic import (
    SERVING_LABEL,
    TrafficSwitch,
    can_isolate,
    serving_role,
)
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.kubernetes")

SUPPORTED = frozenset(Strategy)
SYNC_TIMEOUT = 10.0
"""Seconds reconcile waits for the first listing of each watched kind."""
Passes = Callable[[ServiceSpec, Sequence[Instance]], Awaitable[bool]]
"""``(service, instances)``: whether every one of them passes Phoenix's own check."""
FAILBACK_LIMIT = 3
FAILBACK_WINDOW = 3600.0
"""Failing back this many times within this many seconds, each undone by a new failover,
is flapping: the service stays on its backup and /health says so."""
CACHE_TIMEOUT = 5.0
"""Seconds to wait for the watches to show a change Phoenix just made."""
FAILBACK_CHECK = 1.0
"""Seconds between looks at failed-over services' primaries. A primary must stay fully
available for its service's stabilisation period before the Service goes back to it."""
RECHECK_PAUSE = 1.0
"""Longest pause between the probes that decide whether an isolated pod is readmitted or
replaced (its service's probe interval when shorter)."""
RECHECK_BUDGET = 6.0
"""Seconds those probes may take in all (the step that closes a circuit has 10: the rest is
for the API calls that readmit or replace)."""


class KubernetesPlatform:
    kind = PlatformKind.KUBERNETES

    def __init__(
        self,
        cluster: KubernetesCluster,
        *,
        client: AsyncClient | None = None,
        passes: Passes | None = None,
        acts_on: Callable[[str], bool] | None = None,
    ) -> None:
        self._cluster = cluster
        self._client = client
        self._passes = passes
        self._acts_on = acts_on or (lambda _service: True)
        """Whether this Phoenix may act on a service by itself (failing back, closing a
        circuit left open): with several replicas, only its owner does."""
        """Phoenix's own check of instances (its probes): what Kubernetes' readiness does not
        see (a server answering 500s, a hung one behind a TCP probe) keeps traffic away."""
        self._failbacks: dict[str, list[float]] = {}
        self.flapping: dict[str, str] = {}
        """Services left on their backup because failing back did not hold, and why."""
        self._primary_well_since: dict[str, float] = {}
        self._ran_healthy: dict[str, set[str]] = {}
        """Per service, the pod-template-hashes seen fully rolled out with every pod ready."""
        self._ran_healthy_images: dict[str, set[str]] = {}
        """Per service, the images of those revisions."""
        self._listeners: list[EventListener] = []
        self._specs: dict[str, ServiceSpec] = {}
        self._instances: dict[str, dict[str, Instance]] = {}
        self._serving_role: dict[str, str] = {}
        """Per service, whose pods its Kubernetes Service routed to at the last refresh."""
        # Pod state is keyed by namespace/name (pod_key): two namespaces may hold one name.
        self._problems: dict[str, str] = {}
        """Pod → the problem last reported for it."""
        self._was_ready: set[str] = set()
        """Pods seen ready at least once (a readiness failure then is a problem)."""
        self._warnings: dict[str, str] = {}
        """Pod → the cluster's last Warning event about it (shown with its problem)."""
        self._pods: dict[str, ObjectWatch[Pod]] = {}
        self._deployments: dict[str, ObjectWatch[Deployment]] = {}
        self._statefulsets: dict[str, ObjectWatch[StatefulSet]] = {}
        self._events: dict[str, ObjectWatch[Event]] = {}
        self._services: dict[str, ObjectWatch[Service]] = {}
        self._changed = asyncio.Event()
        self._adopting = True
        """Pods found now were running before Phoenix (adopted, not started)."""
        self._listed = False
        """Every watch has its first listing: the view is whole."""
        self.tasks = SupervisedTasks("kubernetes")
        self.problem: str | None = None
        """Why Phoenix cannot reach the cluster now (None: it can)."""

    # -- the core -------------------------------------------------------------------------

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def instances(self, service: str) -> list[Instance]:
        return list(self._instances.get(service, {}).values())

    def supported_strategies(self, service: ServiceSpec) -> frozenset[Strategy]:
        return SUPPORTED - self.unavailable_strategies(service).keys()

    def unavailable_strategies(self, service: ServiceSpec) -> dict[Strategy, str]:
        workload = service.run
        if not isinstance(workload, KubernetesWorkload):
            why = f"service '{service.name}' names no Kubernetes workload"
            return {s: why for s in Strategy}
        name = service.name
        missing = self._traffic_missing(service, workload)
        if workload.kind is WorkloadKind.STATEFUL_SET:
            missing[Strategy.ROLLBACK] = (
                f"service '{name}' is a StatefulSet: Phoenix rolls back Deployments to a "
                "revision, not StatefulSets yet"
            )
        elif len(service.versions) < 2:
            missing[Strategy.ROLLBACK] = (
                f"service '{name}' declares fewer than two versions (each with its image): "
                "Phoenix rolls back to a version that proved good"
            )
        wanted = self.desired_replicas(service)
        if wanted >= service.replicas.max:
            missing[Strategy.SCALE] = (
                f"service '{name}' already asks for {wanted} replica(s), its declared maximum "
                f"(replicas.max: {service.replicas.max})"
                if wanted == service.replicas.max
                else f"service '{name}' asks for {wanted} replica(s), above its replicas.max "
                f"({service.replicas.max}): raise replicas.max to let Phoenix scale it out"
            )
        return missing

    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        """Start watching each service's namespace; report what runs as adopted."""
        self._specs = {s.name: s for s in services if isinstance(s.run, KubernetesWorkload)}
        if not self._specs:
            return {}
        try:
            client = self.client()
        except PlatformError as exc:
            self.problem = exc.message
            return {name: exc.message for name in self._specs}
        namespaces = sorted({self._workload(s).namespace for s in self._specs.values()})
        kinds = {self._workload(s).kind for s in self._specs.values()}
        for namespace in namespaces:
            self._pods[namespace] = self._watch(client, Pod, namespace, self._on_pod)
            self._deployments[namespace] = self._watch(
                client, Deployment, namespace, self._on_workload
            )
            if WorkloadKind.STATEFUL_SET in kinds:
                self._statefulsets[namespace] = self._watch(
                    client, StatefulSet, namespace, self._on_workload
                )
            self._events[namespace] = self._watch(client, Event, namespace, self._on_event)
            self._services[namespace] = self._watch(client, Service, namespace, self._on_workload)
        watches: list[ObjectWatch[Any]] = [
            *self._pods.values(),
            *self._deployments.values(),
            *self._statefulsets.values(),
            *self._services.values(),
        ]
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await asyncio.gather(*(w.synced.wait() for w in watches))
        except TimeoutError:
            problems = [w.problem for w in watches if w.problem] or ["no answer yet"]
            self.problem = (
                f"cannot list the cluster's objects: {problems[0]}; Phoenix keeps trying "
                "and takes the cluster's view as soon as it answers"
            )
            self.tasks.spawn(self._when_listed(watches), name="kubernetes-first-listing")
            return {name: self.problem for name in self._specs}
        self._take_view()
        failed: dict[str, str] = {}
        for name, spec in self._specs.items():
            if self._workload_object(spec) is None:
                workload = self._workload(spec)
                failed[name] = (
                    f"{workload.kind.value} {workload.namespace}/{workload.name} not found"
                )
        return failed

    async def _when_listed(self, watches: list[ObjectWatch[Any]]) -> None:
        """The cluster answered late: take its view once every first listing is in."""
        await asyncio.gather(*(w.synced.wait() for w in watches))
        self.problem = None
        self._take_view()

    def _take_view(self) -> None:
        """Every first listing is in: what runs is adopted, then changes are followed."""
        self._listed = True
        for name in self._specs:
            self._refresh(name)
        self._adopting = False
        self.tasks.keep_running(self._fail_back, name="kubernetes-failback")
        for spec in self._specs.values():
            if self._acts_on(spec.name):
                self.taken_over(spec)

    def taken_over(self, spec: ServiceSpec) -> None:
        """This Phoenix now acts on ``spec`` (it started, or its replica took the service
        over): a circuit an earlier owner left open is closed."""
        if self._listed and self._circuit_left_open(spec):
            self.tasks.spawn(self._close_left_circuit(spec), name=f"close-circuit-{spec.name}")

    async def shutdown(self, *, keep_running: bool) -> None:
        """The cluster keeps running the workloads whatever Phoenix does: stop watching."""
        await self.tasks.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- the workloads capability ---------------------------------------------------------

    async def replace_instances(self, service: ServiceSpec, instance_ids: Sequence[str]) -> str:
        workload = self._workload(service)
        deleted, gone = [], []
        for pod in instance_ids:
            try:
                await self.client().delete(Pod, pod, namespace=workload.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise PlatformError(
                        f"Kubernetes API: delete pod {workload.namespace}/{pod}: {describe(exc)}"
                    ) from exc
                gone.append(pod)  # already gone: what was asked is done
                continue
            except (httpx2.HTTPError, OSError) as exc:
                raise PlatformError(
                    f"Kubernetes API: delete pod {workload.namespace}/{pod}: {describe(exc)}"
                ) from exc
            deleted.append(pod)
        # Read our own writes: what follows judges the rollout from the watched pods, which
        # must no longer show the deleted ones as serving.
        await self._until(
            lambda: not [p for p in self._pods_of(service) if name_of(p) in deleted and present(p)]
        )
        kind = workload.kind.value
        said = f"deleted pod(s) {', '.join(deleted)}; {kind} {workload.name} replaces them"
        return said + (f" ({', '.join(gone)} already gone)" if gone else "")

    async def _until(self, condition: Callable[[], bool], timeout: float = CACHE_TIMEOUT) -> None:
        """Wait (briefly) until the watched view shows ``condition``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition() and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._changed.wait()

    async def restart_workload(self, service: ServiceSpec) -> str:
        workload = self._workload(service)
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        await call(
            f"rollout restart of {workload.kind.value} {workload.namespace}/{workload.name}",
            self.client().patch(
                self._resource(workload),
                workload.name,
                patch,
                namespace=workload.namespace,
                patch_type=PatchType.MERGE,
            ),
        )
        return f"rollout restart of {workload.kind.value} {workload.name} (restartedAt {at})"

    async def roll_to(self, service: ServiceSpec, version: str) -> str:
        workload = self._workload(service)
        declared = service.version(version)
        if declared is None or declared.image is None:
            raise PlatformError(f"service '{service.name}' declares no image for {version}")
        pinned = service.pins.get(version)
        client = self.client()
        if pinned is not None and workload.kind is WorkloadKind.DEPLOYMENT:
            found = await self._replica_set(workload, pinned)
            if found is not None:
                template = (
                    found.spec.template.to_dict() if found.spec and found.spec.template else None
                )
                if template is not None:
                    labels = template.get("metadata", {}).get("labels", {})
                    labels.pop(TEMPLATE_HASH, None)
                    revision = (
                        (found.metadata.annotations or {}).get(REVISION) if found.metadata else None
                    )
                    await call(
                        f"undo of deployment {workload.namespace}/{workload.name}",
                        client.patch(
                            Deployment,
                            workload.name,
                            [{"op": "replace", "path": "/spec/template", "value": template}],
                            namespace=workload.namespace,
                            patch_type=PatchType.JSON,
                        ),
                    )
                    return (
                        f"deployment {workload.name} back to the template of revision "
                        f"{revision} ({version}, {declared.image}, pod-template-hash {pinned})"
                    )
        container = workload.container or self._first_container(service)
        patch = {
            "spec": {
                "template": {"spec": {"containers": [{"name": container, "image": declared.image}]}}
            }
        }
        await call(
            f"image of {workload.kind.value} {workload.namespace}/{workload.name}",
            client.patch(
                self._resource(workload),
                workload.name,
                patch,
                namespace=workload.namespace,
                patch_type=PatchType.STRATEGIC,
            ),
        )
        kind = workload.kind.value
        return f"{kind} {workload.name}: container {container} set to {declared.image} ({version})"

    async def scale_workload(self, service: ServiceSpec, replicas: int) -> str:
        """Scale out to ``replicas`` — never in: the target is at least the replicas asked for
        now plus the service's step (pods still pending do not make it smaller), within
        ``replicas.max`` and, with an HPA, within its maxReplicas."""
        workload = self._workload(service)
        client = self.client()
        current = self.desired_replicas(service)
        target = min(service.replicas.max, max(replicas, current + service.replicas.step))
        if workload.hpa is not None:
            hpa = await call(
                f"read HPA {workload.namespace}/{workload.hpa}",
                client.get(HorizontalPodAutoscaler, workload.hpa, namespace=workload.namespace),
            )
            ceiling = hpa.spec.maxReplicas if hpa.spec is not None else target
            floor = (hpa.spec.minReplicas if hpa.spec is not None else None) or 1
            target = min(target, ceiling)
            if target <= max(current, floor):
                raise PlatformError(
                    f"HPA {workload.hpa} already runs {current} replica(s) (minReplicas "
                    f"{floor}, maxReplicas {ceiling}); Phoenix does not raise its ceiling"
                )
            await call(
                f"minReplicas of HPA {workload.namespace}/{workload.hpa}",
                client.patch(
                    HorizontalPodAutoscaler,
                    workload.hpa,
                    {"spec": {"minReplicas": target}},
                    namespace=workload.namespace,
                    patch_type=PatchType.MERGE,
                ),
            )
            return (
                f"HPA {workload.hpa}: minReplicas {floor} -> {target} (it scales "
                f"{workload.name} from there)"
            )
        if target <= current:
            raise PlatformError(
                f"{workload.kind.value} {workload.name} already asks for {current} replica(s), "
                f"the service's replicas.max ({service.replicas.max})"
            )
        await call(
            f"replicas of {workload.kind.value} {workload.namespace}/{workload.name}",
            client.patch(
                self._resource(workload),
                workload.name,
                {"spec": {"replicas": target}},
                namespace=workload.namespace,
                patch_type=PatchType.MERGE,
            ),
        )
        return f"{workload.kind.value} {workload.name}: {current} -> {target} replicas"

    def desired_replicas(self, service: ServiceSpec) -> int:
        found = self._workload_object(service)
        if found is None or found.spec is None or found.spec.replicas is None:
            return 1
        return found.spec.replicas

    async def rollout(self, service: ServiceSpec) -> Rollout:
        workload = self._workload(service)
        client = self.client()
        what = f"read {workload.kind.value} {workload.namespace}/{workload.name}"
        if workload.kind is WorkloadKind.DEPLOYMENT:
            deployment = await call(
                what, client.get(Deployment, workload.name, namespace=workload.namespace)
            )
            done, failed, detail = deployment_rollout(deployment)
            current = await self._current_hash(workload, deployment)
        else:
            statefulset = await call(
                what, client.get(StatefulSet, workload.name, namespace=workload.namespace)
            )
            done, failed, detail = statefulset_rollout(statefulset)
            current = statefulset.status.updateRevision if statefulset.status else None
        pods = self._pods_of(service)
        label = (
            TEMPLATE_HASH
            if workload.kind is WorkloadKind.DEPLOYMENT
            else "controller-revision-hash"
        )
        fresh = [p for p in pods if current is not None and labels_of(p).get(label) == current]
        if failed is None:
            for pod in (p for p in fresh if present(p)):
                problem = self._problem(pod, workload)
                if problem is not None and problem.split(" ", 1)[0].rstrip(":") in WAITING_PROBLEMS:
                    failed = f"pod {name_of(pod)}: {problem}"
                    break
        instances = tuple(
            pod_instance(self._specs.get(service.name, service), workload, p)
            for p in fresh
            if present(p)
        )
        return Rollout(
            done=done,
            failed=failed,
            detail=detail,
            instances=instances,
            replicas=self.desired_replicas(service),
        )

    async def wait_for_rollout(self, service: ServiceSpec) -> Rollout:
        self._changed.clear()
        await self._changed.wait()
        return await self.rollout(service)

    # -- advice ---------------------------------------------------------------------------

    def advise(self, service: ServiceSpec) -> tuple[Strategy, str] | None:
        """A rollback when the pods failing are of a revision never seen healthy, running an
        image never seen healthy either (a rollout restart makes a new revision of the same
        image), and no version proved good with it: a bad release, which no restart fixes."""
        workload = self._workload(service)
        if workload.kind is not WorkloadKind.DEPLOYMENT:
            return None
        proven = self._ran_healthy.get(service.name, set()) | set(service.pins.values())
        images = self._ran_healthy_images.get(service.name, set()) | {
            v.image for v in service.versions if v.name in service.pins and v.image
        }
        for pod in self._pods_of(service):
            problem = self._problem(pod, workload)
            template = labels_of(pod).get(TEMPLATE_HASH)
            if problem is None or template is None or template in proven:
                continue
            if pod_image(pod, workload) in images:
                continue
            if problem.startswith("not ready:"):
                continue  # a readiness probe failing while it warms up is no bad release yet
            revision = self._revision_of(service, template)
            return (
                Strategy.ROLLBACK,
                f"pod {name_of(pod)} of {revision}, which never ran healthy, has {problem}: "
                "a restart does not fix a bad release",
            )
        return None

    def _revision_of(self, service: ServiceSpec, template: str) -> str:
        image = next(
            (
                pod_image(p, self._workload(service))
                for p in self._pods_of(service)
                if labels_of(p).get(TEMPLATE_HASH) == template
            ),
            None,
        )
        return f"pod-template-hash {template}" + (f" ({image})" if image else "")

    def _note_healthy(self, spec: ServiceSpec, pods: list[Pod]) -> None:
        """Remember the revisions seen serving in full: their pods are not a bad release."""
        found = self._workload_object(spec)
        if not isinstance(found, Deployment) or not pods:
            return
        done, failed, _ = deployment_rollout(found)
        workload = self._workload(spec)
        if (
            done
            and failed is None
            and all(pod_ready(p) and self._problem(p, workload) is None for p in pods)
        ):
            hashes = {labels_of(p).get(TEMPLATE_HASH) for p in pods}
            self._ran_healthy.setdefault(spec.name, set()).update(h for h in hashes if h)
            images = {pod_image(p, workload) for p in pods}
            self._ran_healthy_images.setdefault(spec.name, set()).update(i for i in images if i)

    # -- the traffic selection capability ------------------------------------------------

    async def switch_traffic(self, service: ServiceSpec, role: str) -> str:
        switch = self._switch(service)
        detail = await switch.switch_to(role)
        await self._reread_service(service)
        return detail

    async def switch_back(self, service: ServiceSpec) -> str:
        detail = await self._switch(service).switch_back()
        await self._reread_service(service)
        return detail

    async def open_circuit(self, service: ServiceSpec, instance_ids: Sequence[str]) -> str:
        workload = self._workload(service)
        if workload.fallback is not None:
            detail = await self.switch_traffic(service, "fallback")
            return f"{detail}: the fallback answers every request while the circuit is open"
        serving = {i.id for i in self.instances(service.name) if i.alive}
        failing = [i for i in instance_ids if i in serving]
        # Asked without naming them (an operator's trigger): the pods with a problem, else all.
        troubled = {n for n in serving if f"{workload.namespace}/{n}" in self._problems}
        failing = failing or sorted(troubled)
        if not failing:
            raise PlatformError(
                f"no pod of service '{service.name}' is known to fail: nothing to take out of "
                "the Service's endpoints (declare kubernetes.fallback to switch it whole)"
            )
        detail = await self._switch(service).isolate(failing)
        if set(failing) >= serving:
            detail += (
                "; no pod is left to serve: a Service cannot hold requests as Phoenix's "
                "router does, so clients are refused until a pod is readmitted"
            )
        return detail

    async def close_circuit(self, service: ServiceSpec) -> str:
        workload = self._workload(service)
        parts = []
        if self._role(service) == "fallback":
            parts.append(await self.switch_back(service))
        isolated = [p for p in self._pods_of(service) if labels_of(p).get(SERVING_LABEL) == "false"]
        well: list[str] = []
        still: list[str] = []
        # A pod with a problem Kubernetes shows is replaced; the others are probed, all
        # together: the step that closes a circuit has 10 s in all.
        probed = [p for p in isolated if self._problem(p, workload) is None]
        failing = await asyncio.gather(*(self._fails(service, pod) for pod in probed))
        passing = {name_of(pod) for pod, failed in zip(probed, failing, strict=True) if not failed}
        for pod in isolated:
            (well if name_of(pod) in passing else still).append(name_of(pod))
        switch = self._switch(service) if isolated else None
        if switch is not None and well:
            parts.append(await switch.readmit(well))
        if still:
            parts.append(await self.replace_instances(service, still))
        return "; ".join(parts) or "nothing was isolated"

    def _circuit_left_open(self, spec: ServiceSpec) -> bool:
        """A circuit an earlier Phoenix opened and never closed (it stopped mid-recovery):
        pods still relabelled out of the endpoints, or the Service still on the fallback."""
        if self._workload(spec).service is None:
            return False
        isolated = any(labels_of(p).get(SERVING_LABEL) == "false" for p in self._pods_of(spec))
        return isolated or self._role(spec) == "fallback"

    async def _close_left_circuit(self, spec: ServiceSpec) -> None:
        try:
            detail = await self.close_circuit(spec)
        except PlatformError as exc:
            log.warning("%s: cannot close the circuit left open: %s", spec.name, exc.message)
            return
        log.warning("%s: closed the circuit an earlier Phoenix left open: %s", spec.name, detail)

    def _switch(self, service: ServiceSpec) -> TrafficSwitch:
        workload = self._workload(service)
        if workload.service is None:
            raise PlatformError(f"service '{service.name}' names no Kubernetes Service")
        return TrafficSwitch(self.client(), workload)

    def _role(self, spec: ServiceSpec) -> str:
        workload = self._workload(spec)
        watch = self._services.get(workload.namespace)
        found = watch.objects.get(workload.service or "") if watch else None
        return serving_role(found)

    async def _reread_service(self, spec: ServiceSpec) -> None:
        """What the switch changed, seen at once (its watch event follows a moment later)."""
        workload = self._workload(spec)
        watch = self._services.get(workload.namespace)
        if watch is None or workload.service is None:
            return
        fresh = await call(
            f"read Service {workload.namespace}/{workload.service}",
            self.client().get(Service, workload.service, namespace=workload.namespace),
        )
        watch.objects[workload.service] = fresh
        self._refresh(spec.name)
        self._changed.set()

    def _traffic_missing(
        self, service: ServiceSpec, workload: KubernetesWorkload
    ) -> dict[Strategy, str]:
        name = service.name
        missing: dict[Strategy, str] = {}
        if workload.service is None:
            why = (
                f"service '{name}' names no Kubernetes Service (kubernetes.service) whose "
                "selector Phoenix could switch"
            )
            return {Strategy.FAILOVER: why, Strategy.CIRCUIT_BREAK: why}
        if workload.backup is None:
            missing[Strategy.FAILOVER] = (
                f"service '{name}' declares no backup Deployment (kubernetes.backup)"
            )
        elif self._role(service) != "primary":
            missing[Strategy.FAILOVER] = (
                f"service '{name}' already routes to its {self._role(service)}"
            )
        else:
            watch = self._deployments.get(workload.namespace)
            backup = watch.objects.get(workload.backup) if watch else None
            available = backup.status.availableReplicas if backup and backup.status else 0
            if not available:
                missing[Strategy.FAILOVER] = (
                    f"backup deployment {workload.backup} of service '{name}' has no available pod"
                )
        if workload.fallback is None:
            watch_of = self._services.get(workload.namespace)
            found = watch_of.objects.get(workload.service) if watch_of else None
            if not can_isolate(found):
                missing[Strategy.CIRCUIT_BREAK] = (
                    f"circuit breaking needs a fallback Deployment (kubernetes.fallback) or "
                    f"Service {workload.service}'s selector to require {SERVING_LABEL}: "
                    '"true" (and the pod template to carry it), so that failing pods can '
                    "leave its endpoints"
                )
        return missing

    async def _fail_back(self) -> None:
        """Send failed-over traffic back once the primary has stayed fully available for
        the hold (its rollout done, every pod ready, none with a problem)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FAILBACK_CHECK)
            for name, spec in list(self._specs.items()):
                if self._role(spec) != "backup" or not self._acts_on(name):
                    self._primary_well_since.pop(name, None)
                    continue
                if name in self.flapping or not self._primary_well(spec):
                    self._primary_well_since.pop(name, None)
                    continue
                since = self._primary_well_since.setdefault(name, loop.time())
                hold = spec.recovery.stabilisation_period
                if loop.time() - since < hold:
                    continue
                if not await self._pass(spec, self._pods_of(spec)):
                    self._primary_well_since.pop(name, None)
                    continue  # ready to Kubernetes, failing Phoenix's own check
                recent = [
                    t for t in self._failbacks.get(name, []) if loop.time() - t < FAILBACK_WINDOW
                ]
                if len(recent) >= FAILBACK_LIMIT:
                    self.flapping[name] = (
                        f"service {name} failed back to its primary {len(recent)} times within "
                        f"{FAILBACK_WINDOW / 60:g} min and failed over again each time: it stays "
                        "on its backup until a person looks (restart Phoenix to try again)"
                    )
                    log.warning("%s", self.flapping[name])
                    continue
                self._failbacks[name] = [*recent, loop.time()]
                try:
                    detail = await self.switch_back(spec)
                except PlatformError as exc:
                    log.warning("%s: cannot switch back to the primary: %s", name, exc.message)
                    continue
                self._primary_well_since.pop(name, None)
                log.info("%s: primary healthy for %gs: %s", name, hold, detail)

    async def _pass(self, spec: ServiceSpec, pods: Sequence[Pod]) -> bool:
        """These pods pass Phoenix's own check (True when Phoenix has none to apply)."""
        if self._passes is None:
            return True
        workload = self._workload(spec)
        instances = [pod_instance(spec, workload, p) for p in pods if present(p)]
        return bool(instances) and await self._passes(spec, instances)

    async def _fails(self, spec: ServiceSpec, pod: Pod) -> bool:
        """The pod fails Phoenix's own check as many times in a row as make a service
        unhealthy: one slow answer on a busy node is no reason to replace a pod. Within
        :data:`RECHECK_BUDGET`: a pod whose probes hang is judged failing once no further
        probe would end in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECHECK_BUDGET
        for attempt in range(max(1, spec.health.failure_threshold)):
            if attempt:
                pause = min(spec.health.interval, RECHECK_PAUSE)
                if loop.time() + pause + spec.health.timeout > deadline:
                    return True
                await asyncio.sleep(pause)
            if await self._pass(spec, [pod]):
                return False
        return True

    def _primary_well(self, spec: ServiceSpec) -> bool:
        found = self._workload_object(spec)
        if not isinstance(found, Deployment):
            return False
        done, failed, _ = deployment_rollout(found)
        pods = self._pods_of(spec)
        workload = self._workload(spec)
        return (
            done
            and failed is None
            and bool(pods)
            and all(pod_ready(p) and self._problem(p, workload) is None for p in pods)
        )

    # -- watching -------------------------------------------------------------------------

    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = connect(self._cluster)
        return self._client

    def _watch(self, client: AsyncClient, resource: Any, namespace: str, handler: Any) -> Any:
        watch: ObjectWatch[Any] = ObjectWatch(client, resource, namespace, handler)
        self.tasks.keep_running(watch.run, name=f"watch-{resource.__name__.lower()}-{namespace}")
        return watch

    def _all_watches(self) -> list[ObjectWatch[Any]]:
        return [
            *self._pods.values(),
            *self._deployments.values(),
            *self._statefulsets.values(),
            *self._events.values(),
            *self._services.values(),
        ]

    def watch_problems(self) -> list[str]:
        """What keeps Phoenix's view of the cluster from being current (for /health)."""
        found = [w.problem for w in self._all_watches() if w.problem]
        found += sorted(self.flapping.values())
        return [self.problem, *found] if self.problem else found

    def api_requests(self) -> int:
        """Lists and watches opened so far (what watching costs the API server)."""
        return sum(w.requests for w in self._all_watches())

    def _on_pod(self, kind: str, pod: Pod) -> None:
        namespace = pod.metadata.namespace if pod.metadata else None
        if kind == "DELETED":
            key = pod_key(pod)
            self._warnings.pop(key, None)
            self._was_ready.discard(key)
        for name, spec in self._specs.items():
            if self._workload(spec).namespace == namespace:
                self._refresh(name)
        self._changed.set()

    def _on_workload(self, kind: str, obj: Any) -> None:
        namespace = obj.metadata.namespace if obj.metadata else None
        for name, spec in self._specs.items():
            if self._workload(spec).namespace == namespace:
                self._refresh(name)
        self._changed.set()

    def _on_event(self, kind: str, event: Event) -> None:
        if kind == "DELETED" or event.type != "Warning":
            return
        involved = event.involvedObject
        if involved is None or involved.kind != "Pod" or involved.name is None:
            return
        pods = self._pods.get(involved.namespace or "")
        if pods is None or involved.name not in pods.objects:
            return  # about a pod gone or not yet seen: nothing to explain (and kept bounded)
        self._warnings[f"{involved.namespace}/{involved.name}"] = f"{event.reason}: {event.message}"
        for name, spec in self._specs.items():
            if self._workload(spec).namespace == involved.namespace:
                self._refresh(name)

    def _refresh(self, service: str) -> None:
        """Compare the service's pods as the watches show them with what was last reported,
        and report the difference: new pods, problems that began or ended, pods gone."""
        if not self._listed:
            return  # reconcile refreshes every service once every first listing is in
        spec = self._specs[service]
        workload = self._workload(spec)
        known = self._instances.setdefault(service, {})
        seen: dict[str, Instance] = {}
        self._note_healthy(spec, self._pods_of(spec))
        role = self._role(spec)
        # Traffic switched (a failover, a failback): the pods now serving ran already.
        switched = self._serving_role.setdefault(service, role) != role
        self._serving_role[service] = role
        for pod in self._pods_of(spec, serving=True):
            if not present(pod):
                continue
            instance = pod_instance(spec, workload, pod)
            seen[instance.id] = instance
            before = known.get(instance.id)
            if before is None:
                # Only a ready one: a pod of the new side still starting gets its grace.
                found = self._adopting or (switched and pod_ready(pod))
                self._emit(
                    InstanceEventKind.ADOPTED if found else InstanceEventKind.STARTED, instance
                )
            key = pod_key(pod)
            problem = self._problem(pod, workload)
            reported = self._problems.get(key)
            if problem is not None and problem != reported:
                self._problems[key] = problem
                warning = self._warnings.get(key)
                said = f" ({warning})" if warning and warning not in problem else ""
                self._emit(InstanceEventKind.UNHEALTHY, instance, f"{problem}{said}")
            elif problem is None and reported is not None:
                del self._problems[key]
                self._emit(InstanceEventKind.HEALTHY, instance, "running and ready again")
        for name, instance in known.items():
            if name not in seen:
                self._problems.pop(f"{workload.namespace}/{name}", None)
                ended = replace(instance, state=InstanceState.STOPPED, ended_at=datetime.now(UTC))
                self._emit(InstanceEventKind.STOPPED, ended)
        self._instances[service] = seen

    def _problem(self, pod: Pod, workload: KubernetesWorkload) -> str | None:
        key = pod_key(pod)
        if pod_ready(pod):
            self._was_ready.add(key)
        problem = pod_problem(pod, workload, self._warnings.get(key))
        if problem is not None and problem.startswith("not ready:") and key not in self._was_ready:
            # Never ready yet: a readiness probe failing while it warms up. Phoenix's own
            # probes give it its startup time; a crash or a waiting reason is reported at once.
            return None
        return problem

    def _emit(self, kind: InstanceEventKind, instance: Instance, detail: str = "") -> None:
        event = InstanceEvent(kind, instance, detail)
        for listener in self._listeners:
            listener(event)

    # -- lookups --------------------------------------------------------------------------

    @staticmethod
    def _workload(spec: ServiceSpec) -> KubernetesWorkload:
        if not isinstance(spec.run, KubernetesWorkload):
            raise PlatformError(f"service '{spec.name}' names no Kubernetes workload")
        return spec.run

    @staticmethod
    def _resource(workload: KubernetesWorkload) -> type[Deployment] | type[StatefulSet]:
        return Deployment if workload.kind is WorkloadKind.DEPLOYMENT else StatefulSet

    def _workload_object(self, spec: ServiceSpec) -> Deployment | StatefulSet | None:
        workload = self._workload(spec)
        watches: dict[str, Any] = (
            self._deployments if workload.kind is WorkloadKind.DEPLOYMENT else self._statefulsets
        )
        watch = watches.get(workload.namespace)
        found: Deployment | StatefulSet | None = watch.objects.get(workload.name) if watch else None
        return found

    def _pods_of(self, spec: ServiceSpec, *, serving: bool = False) -> list[Pod]:
        """The workload's pods: those its controller owns (a Deployment's through its
        ReplicaSets, named after it and the template's hash), whatever other workload's
        selector they may also match. With ``serving``: the pods of whichever Deployment
        the Service routes to now (the backup's while failed over)."""
        workload = self._workload(spec)
        role = self._role(spec) if serving else "primary"
        kind, name = workload.kind, workload.name
        if role != "primary":
            kind = WorkloadKind.DEPLOYMENT
            name = (workload.backup if role == "backup" else workload.fallback) or ""
        watches: dict[str, Any] = (
            self._deployments if kind is WorkloadKind.DEPLOYMENT else self._statefulsets
        )
        owners = watches.get(workload.namespace)
        pods = self._pods.get(workload.namespace)
        if owners is None or pods is None or name not in owners.objects:
            return []  # no workload, no pods of it (those left are being collected)
        return [p for p in pods.objects.values() if owned_by(p, kind, name)]

    def _first_container(self, spec: ServiceSpec) -> str:
        found = self._workload_object(spec)
        template = found.spec.template if found is not None and found.spec is not None else None
        containers = template.spec.containers if template is not None and template.spec else []
        if not containers:
            raise PlatformError(f"the workload of service '{spec.name}' has no container")
        return containers[0].name

    async def _replica_sets(self, workload: KubernetesWorkload) -> list[ReplicaSet]:
        found: list[ReplicaSet] = []
        deployment = self._deployments.get(workload.namespace)
        owner = deployment.objects.get(workload.name) if deployment else None
        spec = owner.spec if owner is not None else None
        # Only the Deployment's own (its selector), not every ReplicaSet of the namespace.
        labels = dict(spec.selector.matchLabels or {}) if spec and spec.selector else None
        listing = self.client().list(
            ReplicaSet, namespace=workload.namespace, labels=labels or None
        )
        async for replica_set in listing:
            owners = replica_set.metadata.ownerReferences if replica_set.metadata else None
            if any(o.kind == "Deployment" and o.name == workload.name for o in owners or []):
                found.append(replica_set)
        return found

    async def _replica_set(
        self, workload: KubernetesWorkload, template_hash: str
    ) -> ReplicaSet | None:
        sets = await call(f"list replicasets in {workload.namespace}", self._replica_sets(workload))
        return next((s for s in sets if labels_of(s).get(TEMPLATE_HASH) == template_hash), None)

    async def _current_hash(
        self, workload: KubernetesWorkload, deployment: Deployment
    ) -> str | None:
        """The pod-template-hash of the Deployment's current revision."""
        revision = (
            (deployment.metadata.annotations or {}).get(REVISION) if deployment.metadata else None
        )
        if revision is None:
            return None
        sets = await call(f"list replicasets in {workload.namespace}", self._replica_sets(workload))
        for replica_set in sets:
            if annotations_of(replica_set).get(REVISION) == revision:
                return labels_of(replica_set).get(TEMPLATE_HASH)
        return None
