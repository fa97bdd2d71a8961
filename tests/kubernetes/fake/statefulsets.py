"""The StatefulSet controller, simplified: pods ``<name>-0`` .. ``<name>-N-1`` created in
order (each once the ones below are Running and Ready, unless the policy is ``Parallel``),
removed from the top, and rolled to a new template in reverse ordinal order down to the
partition; ``currentRevision``/``updateRevision`` name the templates. Revisions are kept in
memory rather than as ControllerRevision objects."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from . import naming
from .controllers import Controller, Key, controller_of, is_active, is_ready, owner_reference
from .events import NORMAL
from .resources import PODS, STATEFULSETS
from .store import Change

Obj = dict[str, Any]
COMPONENT = "statefulset-controller"
REVISION_LABEL = "controller-revision-hash"


class StatefulSetController(Controller):
    name = "statefulset-controller"
    kinds = (STATEFULSETS,)
    related = (PODS,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._templates: dict[str, Obj] = {}  # revision name → template

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.resource is STATEFULSETS:
            return [(change.namespace, change.name)]
        keys = set()
        for pod in (change.old, change.new):
            for ref in (pod or {}).get("metadata", {}).get("ownerReferences") or []:
                if ref.get("controller") and ref.get("kind") == "StatefulSet":
                    keys.add((change.namespace, ref["name"]))
        return keys

    async def sync(self, key: Key) -> float | None:
        sts = self.ctx.store.get(STATEFULSETS, *key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return None
        name, spec = sts["metadata"]["name"], sts["spec"]
        update_revision = f"{name}-{naming.template_hash(spec['template'])}"
        self._templates[update_revision] = spec["template"]
        current_revision = (sts.get("status") or {}).get("currentRevision") or update_revision
        uid = sts["metadata"]["uid"]
        pods = {
            _ordinal(p, name): p
            for p in self.ctx.store.list(PODS, key[0])
            if controller_of(p) == uid and _ordinal(p, name) is not None
        }
        wanted = int(spec.get("replicas", 1))
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        self._reconcile(sts, pods, wanted, ordered, current_revision, update_revision)
        return self._update_status(sts, key, uid, name, current_revision, update_revision)

    def _reconcile(
        self,
        sts: Obj,
        pods: dict[int | None, Obj],
        wanted: int,
        ordered: bool,
        current: str,
        update: str,
    ) -> None:
        healthy = True
        for ordinal in range(wanted):
            pod = pods.get(ordinal)
            if pod is None:
                if not (ordered and not healthy):
                    self._create(sts, ordinal, current, update)
                if ordered:
                    return
                continue
            healthy = healthy and is_active(pod) and is_ready(pod)
        # Scale down from the top, one pod at a time when ordered.
        extra = sorted((o for o in pods if o is not None and o >= wanted), reverse=True)
        for ordinal in extra:
            if ordered and not healthy:
                return
            pod = pods[ordinal]
            if is_active(pod):
                self._delete(sts, pod)
            if ordered:
                return
        strategy = sts["spec"].get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate" or not healthy:
            return
        partition = (strategy.get("rollingUpdate") or {}).get("partition", 0)
        for ordinal in range(wanted - 1, partition - 1, -1):
            pod = pods.get(ordinal)
            if pod is not None and pod["metadata"].get("labels", {}).get(REVISION_LABEL) != update:
                if is_active(pod):
                    self._delete(sts, pod)
                return

    def _create(self, sts: Obj, ordinal: int, current: str, update: str) -> None:
        partition = ((sts["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}).get(
            "partition", 0
        )
        revision = current if ordinal < partition and current in self._templates else update
        template = copy.deepcopy(self._templates[revision])
        name = f"{sts['metadata']['name']}-{ordinal}"
        meta = template.get("metadata") or {}
        labels = {
            **(meta.get("labels") or {}),
            REVISION_LABEL: revision,
            "statefulset.kubernetes.io/pod-name": name,
            "apps.kubernetes.io/pod-index": str(ordinal),
        }
        pod_spec = template.get("spec") or {}
        pod_spec["hostname"] = name
        if sts["spec"].get("serviceName"):
            pod_spec["subdomain"] = sts["spec"]["serviceName"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": sts["metadata"]["namespace"],
                "labels": labels,
                **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
                "ownerReferences": [owner_reference(sts)],
            },
            "spec": pod_spec,
        }
        self.ctx.registry.create(PODS, sts["metadata"]["namespace"], pod)
        message = f"create Pod {name} in StatefulSet {sts['metadata']['name']} successful"
        self.ctx.events.record(sts, NORMAL, "SuccessfulCreate", message, component=COMPONENT)

    def _delete(self, sts: Obj, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        self.ctx.registry.delete(PODS, sts["metadata"]["namespace"], name)
        message = f"delete Pod {name} in StatefulSet {sts['metadata']['name']} successful"
        self.ctx.events.record(sts, NORMAL, "SuccessfulDelete", message, component=COMPONENT)

    def _update_status(
        self, sts: Obj, key: Key, uid: str, name: str, current: str, update: str
    ) -> float | None:
        pods = [
            p for p in self.ctx.store.list(PODS, key[0]) if controller_of(p) == uid and is_active(p)
        ]
        min_ready = sts["spec"].get("minReadySeconds", 0)
        waits = [self.ctx.until_available(p, min_ready) for p in pods]
        revisions = [p["metadata"].get("labels", {}).get(REVISION_LABEL) for p in pods]
        status: Obj = {
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if is_ready(p)),
            "currentReplicas": revisions.count(current),
            "updatedReplicas": revisions.count(update),
            "availableReplicas": sum(1 for w in waits if w is not None and w <= 0),
            "currentRevision": current,
            "updateRevision": update,
            "observedGeneration": sts["metadata"].get("generation", 1),
            "collisionCount": 0,
        }
        wanted = int(sts["spec"].get("replicas", 1))
        if status["updatedReplicas"] == status["replicas"] == status["readyReplicas"] == wanted:
            status["currentRevision"], status["currentReplicas"] = update, status["updatedReplicas"]
        for field in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status[field]:
                del status[field]  # omitempty
        if status != (sts.get("status") or {}):
            self.ctx.registry.mutate(
                STATEFULSETS, key[0], key[1], lambda s: s.__setitem__("status", status), status=True
            )
        pending = [w for w in waits if w is not None and w > 0]
        return min(pending) + 0.01 if pending else None


def _ordinal(pod: Obj, name: str) -> int | None:
    prefix, _, suffix = pod["metadata"]["name"].rpartition("-")
    return int(suffix) if prefix == name and suffix.isdigit() else None
