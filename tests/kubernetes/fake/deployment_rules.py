"""The arithmetic of Kubernetes' deployment controller (``pkg/controller/deployment/util``):
revisions and their annotations, surge and unavailability, proportional scaling, status and
conditions. Pure functions over dicts, kept apart from the loop that applies them."""

from __future__ import annotations

import copy
from typing import Any

from . import naming
from .controllers import int_or_percent

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_NOT_COPIED = {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS}
POD_TEMPLATE_HASH = "pod-template-hash"

# Condition reasons, as deploymentutil names them.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NO_DEADLINE = 2**31 - 1  # progressDeadlineSeconds = MaxInt32 means "no deadline"


def replicas(obj: Obj) -> int:
    return int(obj["spec"].get("replicas", 0))


def status_of(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field, 0))


def revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def is_rolling(d: Obj) -> bool:
    return bool(d["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate")


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas; never both zero."""
    rolling = d["spec"].get("strategy", {}).get("rollingUpdate") or {}
    desired = replicas(d)
    surge = int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


def has_progress_deadline(d: Obj) -> bool:
    deadline = d["spec"].get("progressDeadlineSeconds")
    return deadline is not None and deadline != NO_DEADLINE


def without_hash(template: Obj) -> Obj:
    copied = copy.deepcopy(template)
    labels = (copied.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH, None)
    return copied


def by_creation(rss: list[Obj]) -> list[Obj]:
    return sorted(
        rss, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"])
    )


def find_new(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's, hash label aside."""
    wanted = without_hash(d["spec"]["template"])
    for rs in by_creation(rss):
        if without_hash(rs["spec"]["template"]) == wanted:
            return rs
    return None


def active(rss: list[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def total(rss: list[Obj], field: str | None = None) -> int:
    return sum(replicas(rs) if field is None else status_of(rs, field) for rs in rss)


# -- annotations ---------------------------------------------------------------------------


def _annotations(obj: Obj) -> dict[str, str]:
    return obj["metadata"].setdefault("annotations", {})  # type: ignore[no-any-return]


def copy_annotations(d: Obj, rs: Obj) -> bool:
    changed = False
    target = _annotations(rs)
    for key, value in (d["metadata"].get("annotations") or {}).items():
        if key in _NOT_COPIED or target.get(key) == value:
            continue
        target[key] = value
        changed = True
    return changed


def set_replicas_annotations(rs: Obj, desired: int, most: int) -> bool:
    target = _annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(most))):
        if target.get(key) != value:
            target[key] = value
            changed = True
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """``SetNewReplicaSetAnnotations``: a reused ReplicaSet (a rollback) gets the next
    revision, and its old number goes to the revision-history annotation."""
    changed = copy_annotations(d, rs)
    target = _annotations(rs)
    had = REVISION in target
    old_revision = revision(rs)
    if old_revision < new_revision:
        target[REVISION] = str(new_revision)
        changed = True
        if had:
            history = [h for h in target.get(REVISION_HISTORY, "").split(",") if h]
            target[REVISION_HISTORY] = ",".join([*history, str(old_revision)])
    if not exists:
        changed |= set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d))
    return changed


def set_deployment_revision(d: Obj, value: str) -> bool:
    target = _annotations(d)
    if target.get(REVISION) == value:
        return False
    target[REVISION] = value
    return True


# -- scaling -------------------------------------------------------------------------------


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    if not is_rolling(d):
        return replicas(d)
    current = total(all_rss)
    most = replicas(d) + max_surge(d)
    if current >= most:
        return replicas(new_rs)
    return replicas(new_rs) + min(most - current, replicas(d) - replicas(new_rs))


def find_active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    if new_rs is None and not old_rss:
        return None
    newest_first = list(reversed(by_creation(old_rss)))
    running = active([*newest_first, new_rs])
    if not running:
        return new_rs if new_rs is not None else newest_first[0]
    return running[0] if len(running) == 1 else None


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
    return (
        replicas(rs) == replicas(d)
        and desired == str(replicas(d))
        and status_of(rs, "availableReplicas") == replicas(d)
    )


def _round_half_away(value: float) -> int:
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def _fraction(rs: Obj, d: Obj) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    deployment_replicas = replicas(d) + max_surge(d)
    annotated = (rs["metadata"].get("annotations") or {}).get(MAX_REPLICAS)
    base = int(annotated) if annotated and annotated.isdigit() else status_of(d, "replicas")
    if base == 0:
        return 0
    return _round_half_away(replicas(rs) * deployment_replicas / base) - replicas(rs)


def proportional_sizes(d: Obj, running: list[Obj]) -> dict[str, int]:
    """How a scaling event spreads over the active ReplicaSets of a rollout in progress."""
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - total(running)
    if to_add > 0:
        ordered = sorted(running, key=lambda r: (-replicas(r), _newest_key(r)))
    else:
        ordered = sorted(running, key=lambda r: (-replicas(r), _oldest_key(r)))
    sizes, added = {}, 0
    for rs in ordered:
        proportion = 0
        if to_add != 0 and replicas(rs) != 0 and to_add != added:
            fraction, left = _fraction(rs, d), to_add - added
            proportion = min(fraction, left) if to_add > 0 else max(fraction, left)
        sizes[rs["metadata"]["name"]] = replicas(rs) + proportion
        added += proportion
    if to_add != 0 and ordered:
        first = ordered[0]["metadata"]["name"]
        sizes[first] = max(0, sizes[first] + to_add - added)
    return sizes


def _newest_key(rs: Obj) -> tuple[Any, ...]:
    created = rs["metadata"].get("creationTimestamp", "")
    return (tuple(-ord(c) for c in created), rs["metadata"]["name"])


def _oldest_key(rs: Obj) -> tuple[Any, ...]:
    return (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"])


# -- status --------------------------------------------------------------------------------


def condition(status: Obj, kind: str) -> Obj | None:
    for found in status.get("conditions") or []:
        if found.get("type") == kind:
            return found  # type: ignore[no-any-return]
    return None


def new_condition(kind: str, state: str, reason: str, message: str) -> Obj:
    now = naming.timestamp()
    return {
        "type": kind,
        "status": state,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def set_condition(status: Obj, new: Obj) -> bool:
    """``SetDeploymentCondition``: unchanged if status and reason are; the transition time
    kept if only the reason changes. The condition goes last, as Kubernetes appends it."""
    current = condition(status, new["type"])
    if (
        current is not None
        and current["status"] == new["status"]
        and current.get("reason") == new["reason"]
    ):
        return False
    if current is not None and current["status"] == new["status"]:
        new = {**new, "lastTransitionTime": current["lastTransitionTime"]}
    remove_condition(status, new["type"])
    status.setdefault("conditions", []).append(new)
    return True


def remove_condition(status: Obj, kind: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
    available = total(all_rss, "availableReplicas")
    counts = {
        "replicas": total(all_rss, "replicas"),
        "updatedReplicas": status_of(new_rs, "replicas") if new_rs else 0,
        "readyReplicas": total(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total(all_rss) - available),
    }
    status: Obj = {"observedGeneration": d["metadata"].get("generation", 1)}
    # Zero counts are left out, as the Go struct's omitempty does.
    status.update({k: v for k, v in counts.items() if v})
    old = d.get("status") or {}
    if old.get("collisionCount"):
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= replicas(d) - max_unavailable(d):
        wanted = new_condition(
            "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability."
        )
    else:
        wanted = new_condition(
            "Available", "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability."
        )
    set_condition(status, wanted)
    return status


def complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return bool(
        status.get("updatedReplicas", 0) == want
        and status.get("replicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
    )


def progressing(d: Obj, new: Obj) -> bool:
    old = d.get("status") or {}
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = new.get("replicas", 0) - new.get("updatedReplicas", 0)
    return bool(
        new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or new_old < old_old
        or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or new.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )
