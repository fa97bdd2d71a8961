"""Reading the cluster's objects: a pod's problem in the cluster's words, its state as an
instance, and a rollout's state as ``kubectl rollout status`` judges it. The objects are the
real client's models, built from the JSON a cluster serves."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from phoenix_server.domain import services as svc
from phoenix_server.platforms.kubernetes.reading import (
    deployment_rollout,
    pod_instance,
    pod_problem,
    pod_state,
)

WORKLOAD = svc.KubernetesWorkload(namespace="shop", name="web")
SPEC = svc.ServiceSpec(
    name="web",
    platform=svc.PlatformKind.KUBERNETES,
    health=svc.HealthPolicy(
        check=svc.HttpCheck("http://{address}:{port}/"), interval=1, timeout=1, failure_threshold=1
    ),
    run=WORKLOAD,
    versions=(svc.Version("v1", image="shop/web:1"), svc.Version("v2", image="shop/web:2")),
)


def pod(
    *,
    ready: bool = True,
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    restarts: int = 0,
    phase: str = "Running",
    image: str = "shop/web:2",
    deleting: bool = False,
) -> Pod:
    status = {
        "name": "app",
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": restarts,
        "started": True,
        "state": state or {"running": {"startedAt": "2026-12-04T10:00:00Z"}},
    }
    if last is not None:
        status["lastState"] = {"terminated": last}
    meta: dict[str, Any] = {
        "name": "web-5d9f-abcde",
        "namespace": "shop",
        "labels": {"app": "web", "pod-template-hash": "5d9f"},
        "creationTimestamp": "2026-12-04T10:00:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T10:05:00Z"
    return Pod.from_dict(
        {
            "metadata": meta,
            "spec": {
                "containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]
            },
            "status": {
                "phase": phase,
                "podIP": "10.1.2.3",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [status],
            },
        }
    )


def test_a_ready_pod_is_a_running_instance_at_its_ip_and_port_with_its_version() -> None:
    instance = pod_instance(SPEC, WORKLOAD, pod())
    assert instance.id == "web-5d9f-abcde"
    assert instance.state is svc.InstanceState.RUNNING
    assert (instance.address, instance.port) == ("10.1.2.3", 8080)
    assert instance.version == "v2"
    assert instance.artifact == "5d9f"
    assert pod_problem(pod(), WORKLOAD) is None


def test_an_image_no_version_declares_has_no_version() -> None:
    assert pod_instance(SPEC, WORKLOAD, pod(image="shop/web:hotfix")).version is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {
                "ready": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                "last": {"exitCode": 1, "reason": "Error"},
                "restarts": 4,
            },
            "CrashLoopBackOff (last exit: Error, 4 restarts): back-off 20s",
        ),
        (
            {"ready": False, "state": {"waiting": {"reason": "ImagePullBackOff"}}},
            "ImagePullBackOff",
        ),
        (
            {
                "ready": False,
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "db" not found',
                    }
                },
            },
            'CreateContainerConfigError: secret "db" not found',
        ),
        (
            {"ready": False, "last": {"exitCode": 137, "reason": "OOMKilled"}, "restarts": 1},
            "OOMKilled (1 restarts)",
        ),
        ({"ready": False, "phase": "Failed"}, "pod failed"),
    ],
)
def test_a_pod_that_cannot_serve_says_why_in_the_clusters_words(
    kwargs: dict[str, Any], expected: str
) -> None:
    assert pod_problem(pod(**kwargs), WORKLOAD) == expected


def test_a_pod_still_starting_has_no_problem_yet() -> None:
    starting = pod(ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    assert pod_problem(starting, WORKLOAD) is None
    assert pod_state(starting) is svc.InstanceState.STARTING


def test_a_container_that_restarted_and_serves_again_has_no_problem_left() -> None:
    recovered = pod(ready=True, last={"exitCode": 137, "reason": "OOMKilled"}, restarts=1)
    assert pod_problem(recovered, WORKLOAD) is None


def test_a_terminating_pod_is_stopping_and_a_failed_one_ended() -> None:
    assert pod_state(pod(deleting=True)) is svc.InstanceState.STOPPING
    failed = pod_instance(SPEC, WORKLOAD, pod(phase="Failed", ready=False))
    assert failed.state is svc.InstanceState.EXITED
    assert failed.end_reason == "pod failed"


def deployment(status: dict[str, Any], *, generation: int = 3, replicas: int = 3) -> Deployment:
    return Deployment.from_dict(
        {
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "generation": generation,
                "annotations": {"deployment.kubernetes.io/revision": "4"},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "x"}]},
                },
            },
            "status": status,
        }
    )


def test_a_rollout_is_done_only_when_observed_updated_available_and_no_old_pod_is_left() -> None:
    done = {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    assert deployment_rollout(deployment(done)) == (
        True,
        None,
        "3/3 updated, 3 available, 3 in all (revision 4)",
    )
    unseen = {**done, "observedGeneration": 2}
    assert deployment_rollout(deployment(unseen))[:2] == (False, None)
    old_left = {**done, "replicas": 4}
    assert deployment_rollout(deployment(old_left))[:2] == (False, None)
    unavailable = {**done, "availableReplicas": 2}
    assert deployment_rollout(deployment(unavailable))[:2] == (False, None)


def test_a_rollout_past_its_progress_deadline_has_failed() -> None:
    stuck = {
        "observedGeneration": 3,
        "replicas": 4,
        "updatedReplicas": 1,
        "availableReplicas": 3,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "web-7c" has timed out progressing.',
            }
        ],
    }
    done, failed, _ = deployment_rollout(deployment(stuck))
    assert not done
    assert failed == 'progress deadline exceeded: ReplicaSet "web-7c" has timed out progressing.'
