"""The Deployment controller, after ``pkg/controller/deployment``: one ReplicaSet per distinct
pod template (a template equal to an older one's reuses that ReplicaSet with the next
revision, as ``kubectl rollout undo`` relies on), rolling and recreate rollouts, scaling
(proportional during a rollout), pausing, the progress deadline, history pruning, and the
status and conditions Kubernetes computes."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any

from . import deployment_rules as rules
from . import errors, naming
from .controllers import Controller, Key, controller_of, owner_reference
from .events import NORMAL
from .resources import DEPLOYMENTS, PODS, REPLICASETS
from .store import Change

Obj = dict[str, Any]
COMPONENT = "deployment-controller"


class DeploymentController(Controller):
    name = "deployment-controller"
    kinds = (DEPLOYMENTS,)
    related = (REPLICASETS, PODS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When each deployment's Progressing condition last recorded progress (monotonic):
        # the condition's own timestamp has whole seconds only.
        self._progress_at: dict[str, float] = {}

    # -- which deployment a change concerns --------------------------------------------------

    def keys_for(self, change: Change) -> Iterable[Key]:
        if change.resource is DEPLOYMENTS:
            return [(change.namespace, change.name)]
        keys = set()
        for obj in (change.old, change.new):
            if obj is None:
                continue
            rs = obj if change.resource is REPLICASETS else self._replicaset_of(obj)
            if rs is not None:
                owner = self._owner_name(rs, "Deployment")
                if owner:
                    keys.add((change.namespace, owner))
        return keys

    def _replicaset_of(self, pod: Obj) -> Obj | None:
        name = self._owner_name(pod, "ReplicaSet")
        if name is None:
            return None
        return self.ctx.store.get(REPLICASETS, pod["metadata"].get("namespace", ""), name)

    @staticmethod
    def _owner_name(obj: Obj, kind: str) -> str | None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == kind:
                return str(ref["name"])
        return None

    # -- the sync --------------------------------------------------------------------------

    async def sync(self, key: Key) -> float | None:
        namespace, name = key
        stored = self.ctx.store.get(DEPLOYMENTS, namespace, name)
        if stored is None:
            return None
        d = copy.deepcopy(stored)
        rss = self._replicasets(d)
        if d["metadata"].get("deletionTimestamp"):
            return self._sync_status_only(d, rss)
        self._check_paused_conditions(d)
        if d["spec"].get("paused"):
            return self._sync_scale(d, rss)
        if self._is_scaling_event(d, rss):
            return self._sync_scale(d, self._replicasets(d))
        if rules.is_rolling(d):
            return self._rollout_rolling(d, rss)
        return self._rollout_recreate(d, rss)

    def _replicasets(self, d: Obj) -> list[Obj]:
        uid = d["metadata"]["uid"]
        found = self.ctx.store.list(REPLICASETS, d["metadata"]["namespace"])
        return [copy.deepcopy(rs) for rs in found if controller_of(rs) == uid]

    def _refresh(self, d: Obj) -> Obj:
        stored = self.ctx.store.get(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])
        if stored is None:
            raise errors.not_found(DEPLOYMENTS, d["metadata"]["name"])
        return copy.deepcopy(stored)

    def _write_status(self, d: Obj) -> Obj:
        """``UpdateStatus`` with the deployment's status and annotations (the revision)."""
        meta = d["metadata"]
        written = self.ctx.registry.update(
            DEPLOYMENTS, meta["namespace"], meta["name"], d, subresource="status"
        )
        return copy.deepcopy(written)

    def _check_paused_conditions(self, d: Obj) -> None:
        if not rules.has_progress_deadline(d):
            return
        status = d.setdefault("status", {})
        current = rules.condition(status, "Progressing")
        if current is not None and current.get("reason") == rules.TIMED_OUT:
            return
        paused_recorded = current is not None and current.get("reason") == rules.PAUSED
        if d["spec"].get("paused") and not paused_recorded:
            wanted = rules.new_condition(
                "Progressing", "Unknown", rules.PAUSED, "Deployment is paused"
            )
        elif not d["spec"].get("paused") and paused_recorded:
            wanted = rules.new_condition(
                "Progressing", "Unknown", rules.RESUMED, "Deployment is resumed"
            )
        else:
            return
        rules.set_condition(status, wanted)
        d.update(self._write_status(d))

    # -- ReplicaSets -----------------------------------------------------------------------

    def _all_and_new(self, d: Obj, rss: list[Obj], *, create: bool) -> tuple[Obj | None, list[Obj]]:
        existing = rules.find_new(d, rss)
        old = [
            rs
            for rs in rss
            if existing is None or rs["metadata"]["uid"] != existing["metadata"]["uid"]
        ]
        return self._new_replicaset(d, rss, old, existing, create=create), old

    def _new_replicaset(
        self, d: Obj, rss: list[Obj], old: list[Obj], existing: Obj | None, *, create: bool
    ) -> Obj | None:
        new_revision = max((rules.revision(rs) for rs in old), default=0) + 1
        status = d.setdefault("status", {})
        if existing is not None:
            rs = copy.deepcopy(existing)
            annotated = rules.set_new_rs_annotations(d, rs, new_revision, exists=True)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if annotated or rs["spec"].get("minReadySeconds", 0) != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
                return self._update_replicaset(rs)
            changed = rules.set_deployment_revision(
                d, rs["metadata"]["annotations"][rules.REVISION]
            )
            if rules.has_progress_deadline(d) and rules.condition(status, "Progressing") is None:
                message = f'Found new replica set "{rs["metadata"]["name"]}"'
                self._progress(
                    d, rules.new_condition("Progressing", "True", rules.FOUND_NEW_RS, message)
                )
                changed = True
            if changed:
                d.update(self._write_status(d))
            return rs
        if not create:
            return None
        return self._create_replicaset(d, old, new_revision)

    def _create_replicaset(self, d: Obj, old: list[Obj], new_revision: int) -> Obj:
        template = copy.deepcopy(d["spec"]["template"])
        status = d.setdefault("status", {})
        pod_hash = naming.template_hash(template, status.get("collisionCount", 0))
        template.setdefault("metadata", {}).setdefault("labels", {})[rules.POD_TEMPLATE_HASH] = (
            pod_hash
        )
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[rules.POD_TEMPLATE_HASH] = pod_hash
        spec: Obj = {"replicas": 0, "selector": selector, "template": template}
        if d["spec"].get("minReadySeconds"):
            spec["minReadySeconds"] = d["spec"]["minReadySeconds"]
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{pod_hash}",
                "namespace": d["metadata"]["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(d)],
            },
            "spec": spec,
        }
        spec["replicas"] = rules.new_rs_replicas(d, [*old, rs], rs)
        rules.set_new_rs_annotations(d, rs, new_revision, exists=False)
        try:
            created = copy.deepcopy(
                self.ctx.registry.create(REPLICASETS, d["metadata"]["namespace"], rs)
            )
        except errors.ApiStatusError as error:
            if error.reason != "AlreadyExists":
                raise
            # A hash collision with a ReplicaSet of another template: count it, retry.
            status["collisionCount"] = status.get("collisionCount", 0) + 1
            self._write_status(d)
            raise
        if spec["replicas"] > 0:
            self._scaled_event(d, created, 0, spec["replicas"])
        rules.set_deployment_revision(d, str(new_revision))
        if rules.has_progress_deadline(d):
            message = f'Created new replica set "{created["metadata"]["name"]}"'
            self._progress(
                d, rules.new_condition("Progressing", "True", rules.NEW_RS_CREATED, message)
            )
        d.update(self._write_status(d))
        return created

    def _update_replicaset(self, rs: Obj) -> Obj:
        meta = rs["metadata"]
        return copy.deepcopy(
            self.ctx.registry.update(REPLICASETS, meta["namespace"], meta["name"], rs)
        )

    def _scale(self, d: Obj, rs: Obj, size: int) -> bool:
        """``scaleReplicaSetAndRecordEvent``: resize (and re-annotate) one ReplicaSet."""
        if rules.replicas(rs) == size:
            return False
        before = rules.replicas(rs)
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = size
        rules.set_replicas_annotations(
            updated, rules.replicas(d), rules.replicas(d) + rules.max_surge(d)
        )
        rs.update(self._update_replicaset(updated))
        self._scaled_event(d, rs, before, size)
        return True

    def _scaled_event(self, d: Obj, rs: Obj, before: int, after: int) -> None:
        direction = "up" if after > before else "down"
        message = (
            f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {after}"
        )
        self.ctx.events.record(d, NORMAL, "ScalingReplicaSet", message, component=COMPONENT)

    # -- scaling (and paused deployments) --------------------------------------------------

    def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        new_rs, old = self._all_and_new(d, rss, create=False)
        for rs in rules.active([*old, new_rs]):
            desired = (rs["metadata"].get("annotations") or {}).get(rules.DESIRED_REPLICAS)
            if desired is not None and desired != str(rules.replicas(d)):
                return True
        return False

    def _sync_scale(self, d: Obj, rss: list[Obj]) -> float | None:
        new_rs, old = self._all_and_new(d, rss, create=False)
        self._proportional_scale(d, new_rs, old)
        if d["spec"].get("paused"):
            self._cleanup(d, old)
        return self._sync_status_only(d, [*old, *([new_rs] if new_rs else [])], new_rs)

    def _proportional_scale(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        target = rules.find_active_or_latest(new_rs, old)
        if target is not None:
            if rules.replicas(target) != rules.replicas(d):
                self._scale(d, target, rules.replicas(d))
            return
        if rules.is_saturated(d, new_rs):
            for rs in rules.active(list(old)):
                self._scale(d, rs, 0)
            return
        if rules.is_rolling(d):
            running = rules.active([*old, new_rs])
            sizes = rules.proportional_sizes(d, running)
            for rs in running:
                self._scale(d, rs, sizes[rs["metadata"]["name"]])

    def _sync_status_only(self, d: Obj, rss: list[Obj], new_rs: Obj | None = None) -> float | None:
        if new_rs is None:
            new_rs = rules.find_new(d, rss)
        status = rules.calculate_status(d, rss, new_rs)
        if status != (d.get("status") or {}):
            d["status"] = status
            self._write_status(d)
        return None

    # -- rollouts --------------------------------------------------------------------------

    def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> float | None:
        new_rs, old = self._all_and_new(d, rss, create=True)
        assert new_rs is not None
        all_rss = [*old, new_rs]
        if self._reconcile_new(d, all_rss, new_rs):
            return self._sync_rollout_status(d, all_rss, new_rs)
        if self._reconcile_old(d, all_rss, rules.active(list(old)), new_rs):
            return self._sync_rollout_status(d, all_rss, new_rs)
        if rules.complete(d, d.get("status") or {}):
            self._cleanup(d, old)
        return self._sync_rollout_status(d, all_rss, new_rs)

    def _reconcile_new(self, d: Obj, all_rss: list[Obj], new_rs: Obj) -> bool:
        want = rules.replicas(d)
        if rules.replicas(new_rs) == want:
            return False
        if rules.replicas(new_rs) > want:
            return self._scale(d, new_rs, want)
        return self._scale(d, new_rs, rules.new_rs_replicas(d, all_rss, new_rs))

    def _reconcile_old(self, d: Obj, all_rss: list[Obj], old: list[Obj], new_rs: Obj) -> bool:
        if rules.total(old) == 0:
            return False
        min_available = rules.replicas(d) - rules.max_unavailable(d)
        new_unavailable = rules.replicas(new_rs) - rules.status_of(new_rs, "availableReplicas")
        max_scaled_down = rules.total(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = self._cleanup_unhealthy(d, old, max_scaled_down)
        scaled = self._scale_down_old(d, [*old, new_rs], old)
        return cleaned + scaled > 0

    def _cleanup_unhealthy(self, d: Obj, old: list[Obj], most: int) -> int:
        """Old ReplicaSets' unavailable pods go first: they serve nobody."""
        done = 0
        for rs in rules.by_creation(old):
            if done >= most:
                break
            size, healthy = rules.replicas(rs), rules.status_of(rs, "availableReplicas")
            if size == 0 or size == healthy:
                continue
            count = min(most - done, size - healthy)
            self._scale(d, rs, size - count)
            done += count
        return done

    def _scale_down_old(self, d: Obj, all_rss: list[Obj], old: list[Obj]) -> int:
        min_available = rules.replicas(d) - rules.max_unavailable(d)
        available = rules.total(all_rss, "availableReplicas")
        if available <= min_available:
            return 0
        budget, done = available - min_available, 0
        for rs in rules.by_creation(old):
            if done >= budget:
                break
            if rules.replicas(rs) == 0:
                continue
            count = min(rules.replicas(rs), budget - done)
            self._scale(d, rs, rules.replicas(rs) - count)
            done += count
        return done

    def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> float | None:
        new_rs, old = self._all_and_new(d, rss, create=False)
        scaled_down = False
        for rs in rules.active(list(old)):
            scaled_down |= self._scale(d, rs, 0)
        all_rss = [*old, *([new_rs] if new_rs else [])]
        if scaled_down or self._old_pods_running(new_rs, old):
            return self._sync_rollout_status(d, all_rss, new_rs)
        if new_rs is None:
            new_rs, old = self._all_and_new(d, self._replicasets(d), create=True)
            assert new_rs is not None
            all_rss = [*old, new_rs]
        self._scale(d, new_rs, rules.replicas(d))
        if rules.complete(d, d.get("status") or {}):
            self._cleanup(d, old)
        return self._sync_rollout_status(d, all_rss, new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old: list[Obj]) -> bool:
        if rules.total(old, "replicas") > 0:
            return True
        old_uids = {rs["metadata"]["uid"] for rs in old}
        namespace = old[0]["metadata"]["namespace"] if old else ""
        for pod in self.ctx.store.list(PODS, namespace):
            if controller_of(pod) in old_uids:
                if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                    return True
        return False

    def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        """Keep at most ``revisionHistoryLimit`` old ReplicaSets, dropping the oldest revisions."""
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        surplus = len(alive) - limit
        if surplus <= 0:
            return
        ordered = sorted(
            alive, key=lambda rs: (rules.revision(rs), rs["metadata"].get("creationTimestamp", ""))
        )
        for rs in ordered[:surplus]:
            observed = (rs.get("status") or {}).get("observedGeneration", 0)
            if rules.status_of(rs, "replicas") or rules.replicas(rs):
                continue
            if rs["metadata"].get("generation", 1) > observed:
                continue
            meta = rs["metadata"]
            self.ctx.registry.delete(REPLICASETS, meta["namespace"], meta["name"])

    # -- status and the progress deadline ----------------------------------------------------

    def _progress(self, d: Obj, wanted: Obj) -> None:
        if rules.set_condition(d.setdefault("status", {}), wanted):
            self._progress_at[d["metadata"]["uid"]] = time.monotonic()

    def _sync_rollout_status(self, d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> float | None:
        d = self._refresh(d)
        all_rss = [self._latest(rs) for rs in all_rss]
        new_rs = self._latest(new_rs) if new_rs is not None else None
        status = rules.calculate_status(d, all_rss, new_rs)
        uid = d["metadata"]["uid"]
        if not rules.has_progress_deadline(d):
            rules.remove_condition(status, "Progressing")
        current = rules.condition(d.get("status") or {}, "Progressing")
        finished = (
            status.get("replicas", 0) == status.get("updatedReplicas", 0)
            and current is not None
            and current.get("reason") == rules.NEW_RS_AVAILABLE
        )
        rs_name = new_rs["metadata"]["name"] if new_rs else None
        what = f'ReplicaSet "{rs_name}"' if rs_name else f'Deployment "{d["metadata"]["name"]}"'
        if rules.has_progress_deadline(d) and not finished:
            if rules.complete(d, status):
                message = f"{what} has successfully progressed."
                rules.set_condition(
                    status,
                    rules.new_condition("Progressing", "True", rules.NEW_RS_AVAILABLE, message),
                )
            elif rules.progressing(d, status):
                # Progress refreshes lastUpdateTime even when the reason stays the same.
                wanted = rules.new_condition(
                    "Progressing", "True", rules.RS_UPDATED, f"{what} is progressing."
                )
                if current is not None and current["status"] == "True":
                    wanted["lastTransitionTime"] = current["lastTransitionTime"]
                rules.remove_condition(status, "Progressing")
                rules.set_condition(status, wanted)
                self._progress_at[uid] = time.monotonic()
            elif self._timed_out(d, status):
                message = f"{what} has timed out progressing."
                rules.set_condition(
                    status, rules.new_condition("Progressing", "False", rules.TIMED_OUT, message)
                )
        if status != (d.get("status") or {}):
            d["status"] = status
            self._write_status(d)
            return None  # the write wakes this controller again
        return self._until_deadline(d, status)

    def _latest(self, rs: Obj) -> Obj:
        meta = rs["metadata"]
        stored = self.ctx.store.get(REPLICASETS, meta["namespace"], meta["name"])
        return copy.deepcopy(stored) if stored is not None else rs

    def _deadline_from(self, d: Obj, status: Obj) -> float | None:
        """Monotonic time of the last recorded progress (None: no deadline applies)."""
        current = rules.condition(status, "Progressing")
        if current is None or current.get("reason") in (rules.NEW_RS_AVAILABLE, rules.TIMED_OUT):
            return None
        if current.get("status") != "True":
            return None
        marked = self._progress_at.get(d["metadata"]["uid"])
        if marked is not None:
            return marked
        # Progress recorded before this controller started: go by the timestamp.
        age = time.time() - naming.parse_timestamp(current["lastUpdateTime"]).timestamp()
        return time.monotonic() - age

    def _timed_out(self, d: Obj, status: Obj) -> bool:
        start = self._deadline_from(d, status)
        if start is None:
            current = rules.condition(status, "Progressing")
            return current is not None and current.get("reason") == rules.TIMED_OUT
        deadline = self.ctx.real(d["spec"]["progressDeadlineSeconds"])
        return time.monotonic() > start + deadline

    def _until_deadline(self, d: Obj, status: Obj) -> float | None:
        if not rules.has_progress_deadline(d) or rules.complete(d, status):
            return None
        start = self._deadline_from(d, status)
        if start is None:
            return None
        deadline = self.ctx.real(d["spec"]["progressDeadlineSeconds"])
        return max(0.01, start + deadline - time.monotonic() + 0.01)
