"""Moving a kubernetes service's traffic: its Service's label selector decides which pods get
requests, so Phoenix moves traffic by changing what the selector picks.

- **Failover / fallback**: the selector is switched to a backup (or fallback) Deployment's
  labels; the one it had is kept in an annotation of the Service, so that switching back —
  by Phoenix, by a restarted Phoenix, or by a person with ``kubectl`` — restores exactly it.
- **Isolation**: when the selector requires ``phoenix.dev/serving: "true"`` (and the pod
  template sets it), a failing pod relabelled ``"false"`` leaves the Service's endpoints at
  once and stays its workload's pod (the ReplicaSet's selector does not look at that label).

Unlike Phoenix's router, a Service cannot hold requests while nothing serves, nor let a
share of them through: an open circuit here means the failing pods get no requests, and the
remaining pods (or the fallback) get them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import KubernetesWorkload
from phoenix_server.platforms.kubernetes.api import call
from phoenix_server.platforms.kubernetes.reading import annotations_of

SERVING_LABEL = "phoenix.dev/serving"
"""A pod label the Service's selector requires (``"true"``) for Phoenix to isolate pods."""
ROLE = "phoenix.dev/serving-role"
"""Service annotation: which workload it routes to now, when not the primary."""
PRIMARY_SELECTOR = "phoenix.dev/primary-selector"
"""Service annotation: the selector it had before Phoenix switched it (JSON)."""


def selector_of(service: Service) -> dict[str, str]:
    return dict(service.spec.selector or {}) if service.spec is not None else {}


def serving_role(service: Service | None) -> str:
    """``primary`` unless Phoenix switched the Service to the backup or the fallback."""
    if service is None:
        return "primary"
    return annotations_of(service).get(ROLE, "primary")


def can_isolate(service: Service | None) -> bool:
    return service is not None and selector_of(service).get(SERVING_LABEL) == "true"


class TrafficSwitch:
    def __init__(self, client: AsyncClient, workload: KubernetesWorkload) -> None:
        assert workload.service is not None
        self._client = client
        self._workload = workload
        self._service = workload.service
        self._namespace = workload.namespace

    async def switch_to(self, role: str) -> str:
        """Point the Service at the ``backup`` or ``fallback`` Deployment, once it has a pod
        available; keep the selector it had, to switch back to."""
        target = self._workload.backup if role == "backup" else self._workload.fallback
        if target is None:
            raise PlatformError(f"no {role} Deployment is declared (kubernetes.{role})")
        deployment = await call(
            f"read {role} deployment {self._namespace}/{target}",
            self._client.get(Deployment, target, namespace=self._namespace),
        )
        available = deployment.status.availableReplicas if deployment.status else None
        if not available:
            raise PlatformError(
                f"{role} deployment {target} has no available pod: traffic stays where it is"
            )
        spec = deployment.spec
        selector = dict(spec.selector.matchLabels or {}) if spec and spec.selector else {}
        if not selector or (spec and spec.selector and spec.selector.matchExpressions):
            raise PlatformError(
                f"{role} deployment {target}'s selector is not plain labels: a Service "
                "selects pods by labels only"
            )
        current = await self._read()
        annotations = annotations_of(current)
        primary = annotations.get(PRIMARY_SELECTOR) or json.dumps(
            selector_of(current), sort_keys=True
        )
        await self._patch(
            current,
            selector,
            {**annotations, ROLE: role, PRIMARY_SELECTOR: primary},
            f"switch Service {self._namespace}/{self._service} to {target}",
        )
        return (
            f"Service {self._service} now selects {role} deployment {target} "
            f"({_labels(selector)}; {available} pod(s) available)"
        )

    async def switch_back(self) -> str:
        """The Service's selector as it was before Phoenix switched it."""
        current = await self._read()
        annotations = annotations_of(current)
        saved = annotations.pop(PRIMARY_SELECTOR, None)
        annotations.pop(ROLE, None)
        if saved is None:
            return f"Service {self._service} already selects the primary"
        selector = json.loads(saved)
        await self._patch(
            current, selector, annotations, f"switch Service {self._namespace}/{self._service} back"
        )
        return f"Service {self._service} selects {self._workload.name} again ({_labels(selector)})"

    async def isolate(self, pods: Sequence[str]) -> str:
        """Take these pods out of the Service's endpoints (they keep running)."""
        current = await self._read()
        if not can_isolate(current):
            raise PlatformError(
                f"Service {self._service}'s selector does not require {SERVING_LABEL}: "
                '"true" (add it to the selector and to the pod template\'s labels)'
            )
        for pod in pods:
            await self._label(pod, "false")
        return f"pod(s) {', '.join(pods)} out of Service {self._service}'s endpoints"

    async def readmit(self, pods: Sequence[str]) -> str:
        for pod in pods:
            await self._label(pod, "true")
        return f"pod(s) {', '.join(pods)} back in Service {self._service}'s endpoints"

    async def _label(self, pod: str, value: str) -> None:
        try:
            await call(
                f"label pod {self._namespace}/{pod} {SERVING_LABEL}={value}",
                self._client.patch(
                    Pod,
                    pod,
                    {"metadata": {"labels": {SERVING_LABEL: value}}},
                    namespace=self._namespace,
                    patch_type=PatchType.MERGE,
                ),
            )
        except PlatformError as exc:
            if not (isinstance(exc.__cause__, ApiError) and exc.__cause__.status.code == 404):
                raise
            # Gone meanwhile: out of the endpoints as surely as relabelled.

    async def _read(self) -> Service:
        return await call(
            f"read Service {self._namespace}/{self._service}",
            self._client.get(Service, self._service, namespace=self._namespace),
        )

    async def _patch(
        self,
        read: Service,
        selector: Mapping[str, str],
        annotations: Mapping[str, str],
        what: str,
    ) -> None:
        """``read``: the Service as the change was computed from."""
        # A JSON patch replaces the selector whole: a merge patch would keep the old keys.
        version = read.metadata.resourceVersion if read.metadata else None
        await call(
            what,
            self._client.patch(
                Service,
                self._service,
                [
                    # Refused if someone changed the Service since it was read: their change
                    # is not overwritten (the step fails, saying so, and is tried again).
                    {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                    {"op": "replace", "path": "/spec/selector", "value": dict(selector)},
                    {"op": "add", "path": "/metadata/annotations", "value": dict(annotations)},
                ],
                namespace=self._namespace,
                patch_type=PatchType.JSON,
            ),
        )


def _labels(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
