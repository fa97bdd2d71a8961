"""What the cluster's objects say, read without I/O: a pod as an :class:`Instance` and the
problem its statuses show, and where a Deployment's rollout stands.

Kubernetes restarts a crashed container by itself, so a pod whose container exited is not
an ended instance: it is a live pod with a problem (``CrashLoopBackOff``, ``OOMKilled``),
and the problem is what Phoenix reports. A pod ends only when it is deleted or fails as a
whole (an eviction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lightkube.models.core_v1 import ContainerStatus
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Pod

from phoenix_server.domain.services import (
    Instance,
    InstanceState,
    KubernetesWorkload,
    PlatformKind,
    ServiceSpec,
    WorkloadKind,
)

TEMPLATE_HASH = "pod-template-hash"
"""The label a Deployment's controller gives each ReplicaSet's pods (its template's hash)."""
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

READINESS_FAILED = "Unhealthy: Readiness probe failed"
"""How the kubelet's Warning event about a failing readiness probe begins (reason: message)."""
WAITING_PROBLEMS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons that mean the container cannot run as it is (not merely starting)."""


def labels_of(obj: Any) -> dict[str, str]:
    meta = getattr(obj, "metadata", None)
    return dict(meta.labels or {}) if meta is not None else {}


def annotations_of(obj: Any) -> dict[str, str]:
    meta = getattr(obj, "metadata", None)
    return dict(meta.annotations or {}) if meta is not None else {}


def name_of(obj: Any) -> str:
    meta = getattr(obj, "metadata", None)
    return str(meta.name) if meta is not None else ""


def pod_key(pod: Pod) -> str:
    """``namespace/name``: a pod's identity across the namespaces Phoenix watches."""
    meta = pod.metadata
    return f"{meta.namespace}/{meta.name}" if meta is not None else ""


def owned_by(pod: Pod, kind: WorkloadKind, name: str) -> bool:
    """The pod's controller is the workload: a StatefulSet directly, a Deployment through
    the ReplicaSet it names ``<deployment>-<pod-template-hash>``."""
    refs = (pod.metadata.ownerReferences if pod.metadata else None) or []
    controller = next((r for r in refs if r.controller), None)
    if controller is None:
        return False
    if kind is WorkloadKind.STATEFUL_SET:
        return controller.kind == "StatefulSet" and controller.name == name
    template = labels_of(pod).get(TEMPLATE_HASH)
    return controller.kind == "ReplicaSet" and controller.name == f"{name}-{template}"


def container_status(pod: Pod, workload: KubernetesWorkload) -> ContainerStatus | None:
    """The status of the service's container (the named one, else the first)."""
    statuses = (pod.status.containerStatuses if pod.status else None) or []
    if workload.container is not None:
        return next((s for s in statuses if s.name == workload.container), None)
    if pod.spec is not None and pod.spec.containers:
        first = pod.spec.containers[0].name
        return next((s for s in statuses if s.name == first), statuses[0] if statuses else None)
    return statuses[0] if statuses else None


def pod_image(pod: Pod, workload: KubernetesWorkload) -> str | None:
    containers = pod.spec.containers if pod.spec else []
    for container in containers:
        if workload.container is None or container.name == workload.container:
            return container.image
    return None


def pod_port(pod: Pod, workload: KubernetesWorkload) -> int | None:
    """The port Phoenix probes: the declared one, else the container's first."""
    if workload.port is not None:
        return workload.port
    for container in pod.spec.containers if pod.spec else []:
        if workload.container is None or container.name == workload.container:
            ports = container.ports or []
            return ports[0].containerPort if ports else None
    return None


def pod_ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def pod_problem(pod: Pod, workload: KubernetesWorkload, warning: str | None = None) -> str | None:
    """What keeps the pod from serving, in the cluster's words (None: nothing, or it is still
    starting). A container that restarted and runs ready again has no problem left.
    ``warning``: the cluster's last Warning event about the pod (a failing readiness probe
    is what tells a pod that stopped being ready from one still starting)."""
    status = container_status(pod, workload)
    phase = pod.status.phase if pod.status else None
    if phase == "Failed":
        reason = pod.status.reason if pod.status else None
        return f"pod failed{f': {reason}' if reason else ''}"
    if status is None:
        return None
    waiting = status.state.waiting if status.state else None
    last = status.lastState.terminated if status.lastState else None
    if waiting is not None and waiting.reason in WAITING_PROBLEMS:
        said = f": {waiting.message}" if waiting.message else ""
        after = ""
        if last is not None:
            after = f" (last exit: {last.reason or 'code ' + str(last.exitCode)}"
            after += f", {status.restartCount} restarts)"
        return f"{waiting.reason}{after}{said}"
    if status.ready:
        return None
    if last is not None and last.reason == "OOMKilled":
        return f"OOMKilled ({status.restartCount} restarts)"
    running = status.state.running if status.state else None
    if running is not None and status.started and last is not None:
        return f"not ready after a restart (last exit: {last.reason or last.exitCode})"
    if running is not None and warning is not None and warning.startswith(READINESS_FAILED):
        return f"not ready: {warning.removeprefix('Unhealthy: ')}"
    return None


def present(pod: Pod) -> bool:
    """The pod is one of the service's instances: it has an address to probe (a pod still
    being scheduled has none) and is not leaving (a terminating pod is out of every
    Service's endpoints already)."""
    leaving = pod.metadata is not None and pod.metadata.deletionTimestamp is not None
    ended = pod.status is not None and pod.status.phase in ("Failed", "Succeeded")
    return not leaving and not ended and pod.status is not None and bool(pod.status.podIP)


def pod_state(pod: Pod) -> InstanceState:
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return InstanceState.STOPPING
    phase = pod.status.phase if pod.status else None
    if phase in ("Failed", "Succeeded"):
        return InstanceState.EXITED
    return InstanceState.RUNNING if pod_ready(pod) else InstanceState.STARTING


def version_of(spec: ServiceSpec, image: str | None) -> str | None:
    """The declared version whose image the pod runs (None: an image no version names)."""
    if image is None:
        return None
    return next((v.name for v in spec.versions if v.image == image), None)


def pod_instance(spec: ServiceSpec, workload: KubernetesWorkload, pod: Pod) -> Instance:
    meta = pod.metadata
    assert meta is not None and meta.name is not None
    started = meta.creationTimestamp or datetime.now(UTC)
    status = container_status(pod, workload)
    state = pod_state(pod)
    exit_code = None
    if state is InstanceState.EXITED and status is not None and status.state is not None:
        terminated = status.state.terminated
        exit_code = terminated.exitCode if terminated is not None else None
    image = pod_image(pod, workload)
    return Instance(
        id=meta.name,
        service=spec.name,
        platform=PlatformKind.KUBERNETES,
        state=state,
        started_at=started,
        port=pod_port(pod, workload),
        version=version_of(spec, image),
        exit_code=exit_code,
        end_reason=pod_problem(pod, workload) if state is InstanceState.EXITED else None,
        artifact=(meta.labels or {}).get(TEMPLATE_HASH),
        address=pod.status.podIP if pod.status else None,
    )


def deployment_rollout(deployment: Deployment) -> tuple[bool, str | None, str]:
    """``(done, failed, detail)`` as ``kubectl rollout status`` judges a Deployment."""
    meta, spec, status = deployment.metadata, deployment.spec, deployment.status
    wanted = spec.replicas if spec is not None and spec.replicas is not None else 1
    revision = (meta.annotations or {}).get(REVISION) if meta else None
    at = f" (revision {revision})" if revision else ""
    if spec is not None and spec.paused:
        # As kubectl refuses to roll back a paused Deployment: nothing would move.
        return False, "the Deployment is paused (kubectl rollout resume)", f"paused{at}"
    if status is None or meta is None or (status.observedGeneration or 0) < (meta.generation or 0):
        return False, None, f"waiting for the controller to see the change{at}"
    updated = status.updatedReplicas or 0
    available = status.availableReplicas or 0
    total = status.replicas or 0
    detail = f"{updated}/{wanted} updated, {available} available, {total} in all{at}"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return False, f"progress deadline exceeded: {condition.message or ''}".strip(), detail
    done = updated >= wanted and total == updated and available >= wanted
    return done, None, detail


def statefulset_rollout(statefulset: StatefulSet) -> tuple[bool, str | None, str]:
    meta, spec, status = statefulset.metadata, statefulset.spec, statefulset.status
    wanted = spec.replicas if spec is not None and spec.replicas is not None else 1
    if status is None or meta is None or (status.observedGeneration or 0) < (meta.generation or 0):
        return False, None, "waiting for the controller to see the change"
    updated = status.updatedReplicas or 0
    ready = status.readyReplicas or 0
    same = status.currentRevision == status.updateRevision
    detail = f"{updated}/{wanted} updated, {ready} ready (revision {status.updateRevision})"
    return ready >= wanted and updated >= wanted and same, None, detail
