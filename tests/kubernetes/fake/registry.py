"""What the apiserver does with a request once it is decoded: the registry strategies of each
kind (server-set metadata, status kept apart from spec, generation, defaults, validation,
preconditions, graceful pod deletion, garbage-collection policies) over the store.

The HTTP layer and the in-process controllers both go through here, so a controller's write
is validated and produces the same watch events as a client's.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from . import checks, defaults, errors, naming, patching, schemas, selectors
from .resources import ALL as ALL_RESOURCES
from .resources import HPAS, NAMESPACES, PODS, REPLICASETS, SERVICES, STATEFULSETS, ResourceType
from .store import Store

Obj = dict[str, Any]
Mutation = Callable[[Obj], None]

# A new object's status, as the Go zero value serialises (fields without omitempty stay).
_INITIAL_STATUS: dict[ResourceType, Obj] = {
    PODS: {"phase": "Pending", "qosClass": "BestEffort"},
    SERVICES: {"loadBalancer": {}},
    NAMESPACES: {"phase": "Active"},
    REPLICASETS: {"replicas": 0},
    STATEFULSETS: {"replicas": 0, "availableReplicas": 0},
    HPAS: {"desiredReplicas": 0},
}
# Kinds whose DELETE answers with the deleted object; the others answer a Status.
_RETURNS_DELETED = (PODS, SERVICES, NAMESPACES)


class Registry:
    def __init__(
        self,
        store: Store,
        *,
        strict_validation: bool = True,
        allocate_service_ip: Callable[[], str] | None = None,
    ) -> None:
        self.store = store
        self.strict_validation = strict_validation
        self._allocate_service_ip = allocate_service_ip
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES, None, {"metadata": {"name": name}})

    # -- reading ---------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        found = self.store.get(rt, namespace or "", name)
        if found is None:
            raise errors.not_found(rt, name)
        return found

    def select(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: selectors.Selector = (),
        fields: selectors.FieldSelector = (),
    ) -> list[Obj]:
        return [
            o
            for o in self.store.list(rt, namespace)
            if selectors.matches(labels, o["metadata"].get("labels"))
            and selectors.fields_match(fields, o)
        ]

    # -- creating --------------------------------------------------------------------------

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> Obj:
        obj = self._decode(rt, body, namespace)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            self._require_namespace(meta["namespace"])
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generated_name(rt, meta)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = naming.timestamp()
        if rt.tracks_generation:
            meta["generation"] = 1
        if rt.subresources and "status" in rt.subresources:
            obj["status"] = copy.deepcopy(_INITIAL_STATUS.get(rt, {}))
        defaults.apply(rt, obj)
        if rt is SERVICES:
            self._assign_cluster_ip(obj)
        self._validate(rt, obj, meta.get("name") or "")
        if self.store.get(rt, meta.get("namespace", ""), meta["name"]) is not None:
            raise errors.already_exists(rt, meta["name"])
        if dry_run:
            return obj
        return self.store.put(rt, obj)

    def _generated_name(self, rt: ResourceType, meta: Obj) -> str:
        for _ in range(8):
            name = f"{meta['generateName']}{naming.random_suffix()}"
            if self.store.get(rt, meta.get("namespace", ""), name) is None:
                return name
        raise errors.already_exists(rt, meta["generateName"])

    def _assign_cluster_ip(self, obj: Obj) -> None:
        spec = obj["spec"]
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            return
        if not spec.get("clusterIP") and self._allocate_service_ip is not None:
            spec["clusterIP"] = self._allocate_service_ip()
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]

    # -- updating --------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        old = self.get(rt, namespace, name)
        new = self._decode(rt, body, namespace)
        meta = new["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        wanted = meta.get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt, name)
        merged = self._merge_server_fields(rt, old, new, subresource)
        return self._commit(rt, old, merged, subresource=subresource, dry_run=dry_run)

    def _merge_server_fields(
        self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None
    ) -> Obj:
        """Keep what the client may not set through this endpoint, as the strategies do."""
        if subresource == "status":
            kept = copy.deepcopy(old)
            kept["status"] = new.get("status", {})
            if "annotations" in new["metadata"]:
                kept["metadata"]["annotations"] = new["metadata"]["annotations"]
            return kept
        meta, old_meta = new["metadata"], old["metadata"]
        for key in (
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.setdefault("uid", old_meta["uid"])
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if "status" in rt.subresources:
            new["status"] = copy.deepcopy(old.get("status", {}))
        if rt is SERVICES:
            spec = new.setdefault("spec", {})
            if not spec.get("clusterIPs") and spec.get("clusterIP") == old["spec"].get("clusterIP"):
                spec["clusterIPs"] = old["spec"].get("clusterIPs")
        return new

    def _commit(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        defaults.apply(rt, new)
        name = new["metadata"]["name"]
        # Writes to /status never move the generation: it counts changes of what is wanted.
        if rt.tracks_generation and subresource is None:
            changed = old.get("spec") != new.get("spec")
            if rt.annotations_bump_generation:
                changed |= old["metadata"].get("annotations") != new["metadata"].get("annotations")
            if changed and new["metadata"].get("generation") == old["metadata"].get("generation"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        problems = self._validate(rt, new, name, raise_now=False)
        checks.on_update(rt, old, new, problems)
        problems.raise_if_any(rt, name)
        if new == old:
            return old  # a no-op write neither bumps the resourceVersion nor notifies watches
        if dry_run:
            return new
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rt, meta.get("namespace", ""), name)
        return self.store.put(rt, new)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        if content_type == patching.APPLY:
            if not field_manager:
                raise errors.bad_request("PATCH apply requires fieldManager to be set")
            if self.store.get(rt, namespace or "", name) is None and subresource is None:
                # Server-side apply of an absent object creates it.
                body = {**patch, "metadata": {**(patch.get("metadata") or {}), "name": name}}
                return self.create(rt, namespace, body, dry_run=dry_run)
        old = self.get(rt, namespace, name)
        patched = patching.apply(content_type, rt.api_version, rt.kind, old, patch)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch did not produce an object")
        return self.update(rt, namespace, name, patched, subresource=subresource, dry_run=dry_run)

    def mutate(
        self, rt: ResourceType, namespace: str, name: str, change: Mutation, *, status: bool = False
    ) -> Obj | None:
        """For controllers: change the latest version of an object (None if it is gone)."""
        current = self.store.get(rt, namespace, name)
        if current is None:
            return None
        new = copy.deepcopy(current)
        change(new)
        if new == current:
            return current
        return self.update(rt, namespace, name, new, subresource="status" if status else None)

    def bind(self, namespace: str, name: str, node: str) -> Obj | None:
        """The scheduler's ``pods/binding``: the one way ``spec.nodeName`` gets set."""
        current = self.store.get(PODS, namespace, name)
        if current is None or current["spec"].get("nodeName"):
            return current
        new = copy.deepcopy(current)
        new["spec"]["nodeName"] = node
        return self.store.put(PODS, new)

    # -- scale subresource -----------------------------------------------------------------

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        replicas = obj["spec"].get("replicas", 0)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": replicas} if replicas else {},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selectors.selector_string(obj["spec"].get("selector")),
            },
        }

    def update_scale(self, rt: ResourceType, namespace: str | None, name: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body must be a Scale object")
        scale = defaults.drop_nulls(body)
        if self.strict_validation:
            schemas.validate(_SCALE, scale, name)
        old = self.get(rt, namespace, name)
        wanted = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt, name)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            problems = checks.Problems()
            problems.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
            problems.raise_if_any(_SCALE, name)
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        self._commit(rt, old, new)
        return self.get_scale(rt, namespace, name)

    def patch_scale(
        self, rt: ResourceType, namespace: str | None, name: str, content_type: str, patch: Any
    ) -> Obj:
        current = self.get_scale(rt, namespace, name)
        patched = patching.apply(content_type, "autoscaling/v1", "Scale", current, patch)
        return self.update_scale(rt, namespace, name, patched)

    # -- deleting --------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
        propagation: str | None = None,
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete, or start deleting: the answer, and whether the object is gone already."""
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(key)
            if wanted and wanted != meta.get(key):
                raise errors.ApiStatusError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition '
                    f"failed: {key.upper() if key == 'uid' else key} in precondition: {wanted}, "
                    f"{key.upper() if key == 'uid' else key} in object meta: {meta.get(key)}",
                    {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural},
                )
        if dry_run:
            return obj, False
        ns = meta.get("namespace", "")
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"], ns)
        elif propagation == "Foreground":
            for dep_rt, dep in self.dependents(meta["uid"], ns):
                self.delete(
                    dep_rt, ns, dep["metadata"]["name"], grace_seconds=0, propagation="Foreground"
                )
        if rt is NAMESPACES:
            return self._delete_namespace(name), True
        if rt is PODS and self._graceful(obj, grace_seconds):
            return self._start_termination(obj, grace_seconds), False
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = naming.timestamp()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                obj = self.store.put(rt, new)
            return obj, False
        gone = self._remove(rt, ns, name)
        return gone, True

    def deleted_answer(self, rt: ResourceType, obj: Obj) -> Obj:
        """What DELETE returns: the object for pods and services, a Status for the others."""
        if rt in _RETURNS_DELETED:
            return obj
        meta = obj["metadata"]
        details: Obj = {"name": meta["name"]}
        if rt.group:
            details["group"] = rt.group
        details.update({"kind": rt.plural, "uid": meta["uid"]})
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    @staticmethod
    def _graceful(pod: Obj, grace_seconds: int | None) -> bool:
        if grace_seconds == 0 or not pod["spec"].get("nodeName"):
            return False  # an unscheduled pod has no kubelet to stop it: it goes at once
        return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def _start_termination(self, pod: Obj, grace_seconds: int | None) -> Obj:
        meta = pod["metadata"]
        grace = (
            grace_seconds
            if grace_seconds is not None
            else pod["spec"].get("terminationGracePeriodSeconds", 30)
        )
        current = meta.get("deletionGracePeriodSeconds")
        if current is not None and current <= grace:
            return pod  # already terminating, at least as fast
        new = copy.deepcopy(pod)
        new["metadata"]["deletionTimestamp"] = naming.after(grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        return self.store.put(PODS, new)

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        gone = self.store.remove(rt, namespace, name)
        if gone is None:
            raise errors.not_found(rt, name)
        return gone

    def _delete_namespace(self, name: str) -> Obj:
        # A real namespace goes Terminating and its controller empties it in the background;
        # here the emptying is immediate.
        for rt in ALL_RESOURCES:
            if rt.namespaced:
                for obj in list(self.store.list(rt, name)):
                    self.store.remove(rt, name, obj["metadata"]["name"])
        return self._remove(NAMESPACES, "", name)

    def dependents(self, owner_uid: str, namespace: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for rt in ALL_RESOURCES:
            if not rt.namespaced:
                continue
            for obj in self.store.list(rt, namespace):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    found.append((rt, obj))
        return found

    def _orphan_dependents(self, owner_uid: str, namespace: str) -> None:
        for rt, obj in self.dependents(owner_uid, namespace):
            new = copy.deepcopy(obj)
            refs = [r for r in new["metadata"]["ownerReferences"] if r.get("uid") != owner_uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                del new["metadata"]["ownerReferences"]
            self.store.put(rt, new)

    # -- shared ----------------------------------------------------------------------------

    def _decode(self, rt: ResourceType, body: Any, namespace: str | None) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request could not be decoded as a {rt.kind}")
        obj: Obj = defaults.drop_nulls(copy.deepcopy(body))
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != rt.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _require_namespace(self, namespace: str) -> None:
        if self.store.get(NAMESPACES, "", namespace) is None:
            raise errors.not_found(NAMESPACES, namespace)

    def _validate(
        self, rt: ResourceType, obj: Obj, name: str, *, raise_now: bool = True
    ) -> checks.Problems:
        if self.strict_validation:
            schemas.validate(rt, obj, name)
        problems = checks.on_write(rt, obj)
        if raise_now:
            problems.raise_if_any(rt, name)
        return problems


_SCALE = ResourceType("autoscaling", "v1", "scale", "Scale")
