"""The ReplicaSet controller: keeps ``spec.replicas`` pods, replaces the ones that go, and
reports replicas, readyReplicas and availableReplicas (ready for ``minReadySeconds``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from . import selectors
from .controllers import Controller, Key, controller_of, is_active, is_ready, owner_reference
from .events import NORMAL
from .resources import PODS, REPLICASETS
from .store import Change

Obj = dict[str, Any]
COMPONENT = "replicaset-controller"


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    kinds = (REPLICASETS,)
    related = (PODS,)

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.resource is REPLICASETS:
            return [(change.namespace, change.name)]
        return self._owners(change)

    def _owners(self, change: Change) -> Iterable[Key]:
        keys = set()
        for pod in (change.old, change.new):
            owner = controller_of(pod) if pod else None
            if owner is None:
                continue
            for ref in pod["metadata"].get("ownerReferences") or []:  # type: ignore[index]
                if ref.get("uid") == owner and ref.get("kind") == "ReplicaSet":
                    keys.add((change.namespace, ref["name"]))
        return keys

    def pods_of(self, rs: Obj) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        return [
            p
            for p in self.ctx.store.list(PODS, rs["metadata"]["namespace"])
            if controller_of(p) == uid
        ]

    async def sync(self, key: Key) -> float | None:
        namespace, name = key
        rs = self.ctx.store.get(REPLICASETS, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return None
        self._adopt_orphans(rs)
        pods = [p for p in self.pods_of(rs) if is_active(p)]
        wanted = rs["spec"].get("replicas", 1)
        if len(pods) < wanted:
            for _ in range(wanted - len(pods)):
                self._create_pod(rs)
        elif len(pods) > wanted:
            for pod in _deletion_order(pods)[: len(pods) - wanted]:
                self.ctx.registry.delete(PODS, namespace, pod["metadata"]["name"])
                message = f"Deleted pod: {pod['metadata']['name']}"
                self.ctx.events.record(rs, NORMAL, "SuccessfulDelete", message, component=COMPONENT)
        return self._update_status(rs, pods)

    def _adopt_orphans(self, rs: Obj) -> None:
        """``ClaimPods``: pods matching the selector with no controller become this
        ReplicaSet's; its pods that no longer match (relabelled to take them out of service)
        are released, and so no longer counted: a replacement is made."""
        selector, uid = rs["spec"].get("selector"), rs["metadata"]["uid"]
        for pod in self.ctx.store.list(PODS, rs["metadata"]["namespace"]):
            owner = controller_of(pod)
            matching = selectors.label_selector_matches(selector, pod["metadata"].get("labels"))
            refs = pod["metadata"].get("ownerReferences") or []
            if owner is None and matching and is_active(pod):
                kept = [*refs, owner_reference(rs)]
            elif owner == uid and not matching:
                kept = [r for r in refs if r.get("uid") != uid]
            else:
                continue

            def claim(p: Obj, kept: list[Obj] = kept) -> None:
                if kept:
                    p["metadata"]["ownerReferences"] = kept
                else:
                    p["metadata"].pop("ownerReferences", None)

            self.ctx.registry.mutate(
                PODS, rs["metadata"]["namespace"], pod["metadata"]["name"], claim
            )

    def _create_pod(self, rs: Obj) -> None:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{rs['metadata']['name']}-",
                "namespace": rs["metadata"]["namespace"],
                "labels": meta.get("labels") or {},
                **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
                "ownerReferences": [owner_reference(rs)],
            },
            "spec": template.get("spec") or {},
        }
        created = self.ctx.registry.create(PODS, rs["metadata"]["namespace"], pod)
        message = f"Created pod: {created['metadata']['name']}"
        self.ctx.events.record(rs, NORMAL, "SuccessfulCreate", message, component=COMPONENT)

    def _update_status(self, rs: Obj, pods: list[Obj]) -> float | None:
        min_ready = rs["spec"].get("minReadySeconds", 0)
        template_labels = (rs["spec"]["template"].get("metadata") or {}).get("labels") or {}
        ready = [p for p in pods if is_ready(p)]
        waits = [self.ctx.until_available(p, min_ready) for p in ready]
        available = sum(1 for w in waits if w is not None and w <= 0)
        labelled = sum(
            1
            for p in pods
            if template_labels.items() <= (p["metadata"].get("labels") or {}).items()
        )
        status: Obj = {"replicas": len(pods)}
        # Zero counts are left out, as the Go structs' omitempty does.
        for field, count in (
            ("fullyLabeledReplicas", labelled),
            ("readyReplicas", len(ready)),
            ("availableReplicas", available),
        ):
            if count:
                status[field] = count
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        if (rs.get("status") or {}) != status:
            self.ctx.registry.mutate(
                REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"],
                lambda r: r.__setitem__("status", status), status=True,
            )  # fmt: skip
        pending = [w for w in waits if w is not None and w > 0]
        return min(pending) + 0.01 if pending else None


def _deletion_order(pods: list[Obj]) -> list[Obj]:
    """Which pods go first when scaling down, as ``controller.ActivePods`` ranks them:
    unscheduled, then pending, then not ready, then the most restarted, then the newest."""

    def rank(pod: Obj) -> tuple[Any, ...]:
        status = pod.get("status") or {}
        phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
        restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
        created = pod["metadata"].get("creationTimestamp", "")
        return (
            1 if pod["spec"].get("nodeName") else 0,
            phase_rank,
            1 if is_ready(pod) else 0,
            -restarts,
            _reverse(created),
        )

    return sorted(pods, key=rank)


def _reverse(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)
