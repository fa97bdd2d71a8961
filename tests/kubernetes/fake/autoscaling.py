"""The HorizontalPodAutoscaler controller, reduced to what a cluster without a metrics server
does: keep the target's replicas within [minReplicas, maxReplicas] (the bounds are applied
before metrics are consulted), leave a target scaled to zero alone, and report that the
metrics could not be read."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from . import naming, resources
from .controllers import Controller, Key
from .events import NORMAL
from .resources import DEPLOYMENTS, HPAS, REPLICASETS, STATEFULSETS
from .store import Change

Obj = dict[str, Any]
COMPONENT = "horizontal-pod-autoscaler"
SYNC_PERIOD = 15.0  # cluster seconds, the controller manager's default
_TARGETS = {("apps", "Deployment"): DEPLOYMENTS, ("apps", "StatefulSet"): STATEFULSETS,
            ("apps", "ReplicaSet"): REPLICASETS}  # fmt: skip


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"
    kinds = (HPAS,)
    related = (DEPLOYMENTS, STATEFULSETS, REPLICASETS)

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.resource is HPAS:
            return [(change.namespace, change.name)]
        return [
            (change.namespace, h["metadata"]["name"])
            for h in self.ctx.store.list(HPAS, change.namespace)
            if h["spec"]["scaleTargetRef"].get("name") == change.name
            and h["spec"]["scaleTargetRef"].get("kind") == change.resource.kind
        ]

    async def sync(self, key: Key) -> float | None:
        hpa = self.ctx.store.get(HPAS, *key)
        if hpa is None:
            return None
        spec = hpa["spec"]
        ref = spec["scaleTargetRef"]
        group = ref.get("apiVersion", "").split("/")[0] if "/" in ref.get("apiVersion", "") else ""
        rt = _TARGETS.get((group, ref.get("kind", "")))
        target = self.ctx.store.get(rt, key[0], ref["name"]) if rt else None
        status = copy.deepcopy(hpa.get("status") or {})
        if rt is None or target is None:
            self._conditions(
                status,
                able=(
                    "False",
                    "FailedGetScale",
                    f"the HPA controller was unable to get the target's current scale: {_missing(ref)}",
                ),
            )
            self._write(hpa, status)
            return self.ctx.real(SYNC_PERIOD)
        current = int(target["spec"].get("replicas", 1))
        low, high = int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])
        desired, reason = current, None
        if current == 0 and low != 0:
            self._conditions(
                status,
                active=(
                    "False",
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero",
                ),
            )
        elif current > high:
            desired, reason = high, "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            desired, reason = low, "Current number of replicas below Spec.MinReplicas"
        else:
            self._conditions(
                status,
                active=(
                    "False",
                    "FailedGetResourceMetric",
                    "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API",
                ),
            )
        if reason is not None:
            self.ctx.registry.mutate(
                rt, key[0], ref["name"], lambda o: o["spec"].__setitem__("replicas", desired)
            )
            message = f"New size: {desired}; reason: {reason}"
            self.ctx.events.record(hpa, NORMAL, "SuccessfulRescale", message, component=COMPONENT)
            status["lastScaleTime"] = naming.timestamp()
            self._conditions(
                status,
                able=(
                    "True",
                    "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {desired}",
                ),
            )
        else:
            self._conditions(
                status, able=("True", "ReadyForNewScale", "recommended size matches current size")
            )
        status["currentReplicas"] = int((target.get("status") or {}).get("replicas", 0))
        status["desiredReplicas"] = desired
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        if not status["currentReplicas"]:
            del status["currentReplicas"]  # omitempty
        self._write(hpa, status)
        return self.ctx.real(SYNC_PERIOD)

    def _write(self, hpa: Obj, status: Obj) -> None:
        if status != (hpa.get("status") or {}):
            meta = hpa["metadata"]
            self.ctx.registry.mutate(
                HPAS,
                meta["namespace"],
                meta["name"],
                lambda h: h.__setitem__("status", status),
                status=True,
            )

    @staticmethod
    def _conditions(
        status: Obj,
        *,
        able: tuple[str, str, str] | None = None,
        active: tuple[str, str, str] | None = None,
    ) -> None:
        conditions = status.setdefault("conditions", [])
        for kind, value in (("AbleToScale", able), ("ScalingActive", active)):
            if value is None:
                continue
            state, reason, message = value
            existing = next((c for c in conditions if c["type"] == kind), None)
            if existing is not None and (existing["status"], existing.get("reason")) == (
                state,
                reason,
            ):
                continue
            moment = (
                existing["lastTransitionTime"]
                if existing and existing["status"] == state
                else naming.timestamp()
            )
            entry = {
                "type": kind,
                "status": state,
                "lastTransitionTime": moment,
                "reason": reason,
                "message": message,
            }
            if existing is None:
                conditions.append(entry)
            else:
                conditions[conditions.index(existing)] = entry


def _missing(ref: Obj) -> str:
    kind = ref.get("kind", "")
    rt = next((r for r in resources.ALL if r.kind == kind), None)
    plural = rt.qualified if rt else kind.lower()
    return f'{plural} "{ref.get("name")}" not found'
