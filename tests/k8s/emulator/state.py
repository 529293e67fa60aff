"""The store's state and primitives: objects per resource, the resourceVersion counter, served types.

Every access holds `lock` (re-entrant; the server thread and tests' threads share it); `changed`
is notified on every write, for `KubeEmulator.wait_for`.
"""

from __future__ import annotations

import copy
import threading

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj, OKey, RKey, meta_of
from tests.k8s.emulator.resources import BUILTIN_RESOURCES, ResourceType, crd_types, version_priority
from tests.k8s.emulator.schemas import CustomSchema, custom_schema
from tests.k8s.emulator.watches import Event, WatchHub


class StoreState:
    """What the emulator stores, and the operations every kind of write builds on."""

    def __init__(self, *, kube_version: str, strict_custom_fields: bool) -> None:
        self.kube_version = kube_version
        self.strict_custom_fields = strict_custom_fields
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0  # one global resourceVersion counter, bumped on every write (also on delete)
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.schemas: dict[tuple[str, str, str], CustomSchema] = {}
        self.objects: dict[RKey, dict[OKey, Obj]] = {}
        self.uids: dict[str, tuple[RKey, OKey]] = {}
        self.applied: dict[tuple[RKey, OKey, str, str], Obj] = {}  # server-side apply, per field manager
        self.watches = WatchHub()
        for rt in BUILTIN_RESOURCES:
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def resolve(self, resource: str) -> ResourceType:
        """Find a served resource by `group/version/plural`, `plural.group`, plural, singular, kind or short name."""
        with self.lock:
            types = list(self.types.values())
        by_preference = sorted(
            types, key=lambda t: (t.group != "", t.is_custom, tuple(-n for n in version_priority(t.version)))
        )
        parts = resource.split("/")
        if len(parts) in (2, 3):
            group, version, plural = (
                ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
            )
            with self.lock:
                found = self.types.get((group, version, plural))
            if found is None:
                raise KeyError(f"resource {resource!r} is not served")
            return found
        lowered = resource.lower()
        for rt in by_preference:
            if lowered in (rt.qualified, f"{rt.singular}.{rt.group}", f"{rt.kind.lower()}.{rt.group}"):
                return rt
        for rt in by_preference:
            if lowered in (rt.plural, rt.singular, rt.kind.lower(), *rt.short_names):
                return rt
        raise KeyError(f"resource {resource!r} is not served")

    @staticmethod
    def okey(rt: ResourceType, namespace: str | None, name: str) -> OKey:
        return ((namespace or "") if rt.namespaced else "", name)

    def present(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.objects.get(rt.key, {}).get(self.okey(rt, namespace, name))
        if obj is None:
            raise ApiError(
                404,
                f'{rt.qualified} "{name}" not found',
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        return obj

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def emit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None = None) -> None:
        event = Event(rv=int(meta_of(obj)["resourceVersion"]), type=kind, obj=obj, old=old)
        self.watches.publish(rt.key, event)
        self.changed.notify_all()

    def current(self, rt: ResourceType, obj: Obj) -> Obj | None:
        return self.objects.get(rt.key, {}).get((meta_of(obj).get("namespace", ""), meta_of(obj)["name"]))

    def put(self, rt: ResourceType, obj: Obj) -> None:
        meta = meta_of(obj)
        okey = (meta.get("namespace", ""), meta["name"])
        self.objects.setdefault(rt.key, {})[okey] = obj
        self.uids[meta["uid"]] = (rt.key, okey)

    def type_for_key(self, key: RKey) -> ResourceType:
        candidates = [t for t in self.types.values() if t.key == key]
        return max(candidates, key=lambda t: version_priority(t.version))

    def schema_for(self, rt: ResourceType) -> CustomSchema:
        gvr = (rt.group, rt.version, rt.plural)
        schema = self.schemas.get(gvr)
        if schema is None:
            schema = custom_schema(
                rt.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            )
            self.schemas[gvr] = schema
        return schema

    def register_crd(self, crd: Obj) -> None:
        """Serve (again) the types of a created or updated CRD; the schemas' validators are rebuilt."""
        crd_name = meta_of(crd)["name"]
        self.unregister_types(crd_name)
        for rt in crd_types(crd):
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def unregister_types(self, crd_name: str) -> None:
        for gvr in [g for g, t in self.types.items() if t.crd_name == crd_name]:
            del self.types[gvr]
            self.schemas.pop(gvr, None)
