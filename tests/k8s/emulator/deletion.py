"""Deletion: finalizers, propagation policies, garbage collection, namespace termination, CRD deletion.

DELETE sets deletionTimestamp while finalizers remain (and no new ones may be added then); removing
the last one deletes. Dependents are collected synchronously and in cascade by ownerReferences uid
(Background and Foreground alike; Orphan removes the references instead). A deleted namespace
deletes its contents and refuses new ones until it is gone; a deleted CRD deletes its custom resources.
"""

from __future__ import annotations

import copy

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj, meta_of, timestamp
from tests.k8s.emulator.resources import CRD_KEY, NS_KEY, ResourceType
from tests.k8s.emulator.state import StoreState


class Deletion(StoreState):
    """The store's deletions and garbage collection (always under `lock`)."""

    def delete(
        self, rt: ResourceType, obj: Obj, propagation: str = "Background", *, dry_run: bool = False
    ) -> Obj | None:
        """Delete or mark for deletion; returns the remaining object, or None if it is gone."""
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise ApiError(400, f"Unsupported propagationPolicy: {propagation!r}")
        meta = obj["metadata"]
        if dry_run:
            return obj
        if propagation == "Orphan":
            for dep_rt, dep in self._dependents(meta["uid"]):
                refs = [r for r in meta_of(dep).get("ownerReferences", []) if r.get("uid") != meta["uid"]]
                self._system_update(dep_rt, dep, {"ownerReferences": refs})
        elif propagation == "Foreground":
            for dep_rt, dep in self._dependents(meta["uid"]):
                current = self.current(dep_rt, dep)
                if current is not None:
                    self.delete(dep_rt, current, "Foreground")
        if rt.key == NS_KEY and meta.get("deletionTimestamp"):
            return obj
        if rt.key == NS_KEY:
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = timestamp()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["status"] = {"phase": "Terminating"}
            marked["metadata"]["resourceVersion"] = self.next_rv()
            self.put(rt, marked)
            self.emit(rt, "MODIFIED", marked, obj)
            name = meta["name"]
            for key, objects in list(self.objects.items()):
                kind = self.type_for_key(key)
                if kind.namespaced:
                    for (namespace, _), item in list(objects.items()):
                        current = self.current(kind, item)
                        if (
                            namespace == name
                            and current is not None
                            and not meta_of(current).get("deletionTimestamp")
                        ):
                            self.delete(kind, current)
            self._maybe_finish_namespace(name)
            return self.objects.get(rt.key, {}).get(("", name))
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = timestamp()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["resourceVersion"] = self.next_rv()
            self.put(rt, marked)
            self.emit(rt, "MODIFIED", marked, obj)
            return marked
        self.finalize(rt, obj)
        return None

    def _system_update(self, rt: ResourceType, obj: Obj, meta_changes: Obj) -> None:
        """A metadata change made by the emulator itself (garbage collector), without validation."""
        new = copy.deepcopy(obj)
        new["metadata"].update(meta_changes)
        new["metadata"]["resourceVersion"] = self.next_rv()
        self.put(rt, new)
        self.emit(rt, "MODIFIED", new, obj)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found: list[tuple[ResourceType, Obj]] = []
        for key, objects in self.objects.items():
            for obj in objects.values():
                if any(ref.get("uid") == uid for ref in meta_of(obj).get("ownerReferences") or []):
                    found.append((self.type_for_key(key), obj))
        return found

    def finalize(self, rt: ResourceType, obj: Obj) -> None:
        """Remove an object for good, then collect its dependents and finish its namespace."""
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        if okey not in self.objects.get(rt.key, {}):
            return
        current = self.objects[rt.key].pop(okey)
        self.uids.pop(meta["uid"], None)
        for applied_key in [k for k in self.applied if k[0] == rt.key and k[1] == okey]:
            del self.applied[applied_key]
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self.next_rv()
        self.emit(rt, "DELETED", gone)
        if rt.key == CRD_KEY:
            self._unregister_crd(current)
        for dep_rt, dep in self._dependents(meta["uid"]):
            dep_now = self.current(dep_rt, dep)
            if dep_now is None:
                continue
            refs = meta_of(dep_now).get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != meta["uid"] and r.get("uid") in self.uids]
            if alive:
                self._system_update(
                    dep_rt, dep_now, {"ownerReferences": [r for r in refs if r.get("uid") != meta["uid"]]}
                )
            else:
                self.delete(dep_rt, dep_now)
        if rt.namespaced:
            self._maybe_finish_namespace(meta.get("namespace", ""))

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns = self.objects.get(NS_KEY, {}).get(("", namespace))
        if ns is None or not meta_of(ns).get("deletionTimestamp") or meta_of(ns).get("finalizers"):
            return
        for key, objects in self.objects.items():
            if key != NS_KEY and any(ns_name == namespace for ns_name, _ in objects):
                return
        self.finalize(self.type_for_key(NS_KEY), ns)

    def _unregister_crd(self, crd: Obj) -> None:
        """A deleted CRD: its custom resources are deleted and its types no longer served."""
        crd_name = meta_of(crd)["name"]
        keys = {t.key for t in self.types.values() if t.crd_name == crd_name}
        for key in keys:
            rt = self.type_for_key(key)
            for obj in list(self.objects.get(key, {}).values()):
                self.finalize(rt, obj)
        self.unregister_types(crd_name)
