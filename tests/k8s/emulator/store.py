"""The store: objects of every served resource, written as an API server writes them.

Server-set metadata (uid, creationTimestamp, resourceVersion, generation: 1 on create, +1 when
anything outside metadata and status changes), namespace from the URL, generateName, writes that
change nothing are no-ops; stale resourceVersion or uid preconditions are 409 Conflicts; the status
subresource is kept apart; every written object is validated (see `validation`).
"""

from __future__ import annotations

import copy
import secrets
import uuid
from typing import Final

from tests.k8s.emulator import validation
from tests.k8s.emulator.deletion import Deletion
from tests.k8s.emulator.errors import ApiError, cause
from tests.k8s.emulator.objects import Obj, meta_of, timestamp
from tests.k8s.emulator.resources import CRD_KEY, NS_KEY, ResourceType, crd_status
from tests.k8s.emulator.schemas import zero_status

_SYSTEM_META: Final = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)

_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"


class Store(Deletion):
    """Creates, replaces and updates (PUT, PATCH, apply and the sync API all end here), always under `lock`."""

    def _check_kind(self, rt: ResourceType, body: Obj) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        api_version = body.get("apiVersion")
        kind = body.get("kind")
        if api_version not in (None, "", rt.api_version) and not (
            rt.is_custom and isinstance(api_version, str) and api_version.split("/")[0] == rt.group
        ):
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})",
            )
        if kind not in (None, "", rt.kind):
            raise ApiError(400, f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        body["apiVersion"] = rt.api_version
        body["kind"] = rt.kind
        if not isinstance(body.get("metadata", {}), dict):
            raise ApiError(400, "metadata must be an object")
        body.setdefault("metadata", {})

    def _admit(
        self, rt: ResourceType, obj: Obj, old: Obj | None, warnings: list[str], strict_fields: bool
    ) -> None:
        """Validate (and for custom resources prune and default) a complete object, or raise 422."""
        validation.admit(
            rt,
            obj,
            old,
            warnings,
            kube_version=self.kube_version,
            schema=self.schema_for(rt) if rt.is_custom else None,
            strict_fields=strict_fields or self.strict_custom_fields,
        )

    def _namespace_usable(self, rt: ResourceType, namespace: str | None) -> None:
        """New objects of namespaced kinds need their namespace, and not a terminating one."""
        if not rt.namespaced:
            return
        if not namespace:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        ns = self.objects.get(NS_KEY, {}).get(("", namespace))
        if ns is None:
            raise ApiError(
                404, f'namespaces "{namespace}" not found', details={"name": namespace, "kind": "namespaces"}
            )
        if meta_of(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                "Forbidden",
            )

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Obj,
        warnings: list[str],
        *,
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """POST (and apply of a new object): server-set metadata, validation, then ADDED (unless dry_run)."""
        self._check_kind(rt, body)
        meta = body["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or meta.get("namespace")
            self._namespace_usable(rt, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(
                    422,
                    f'{rt.qualified_kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                    "Invalid",
                    {
                        "group": rt.group,
                        "kind": rt.kind,
                        "causes": [
                            cause(
                                "metadata.name",
                                "Required value: name or generateName is required",
                                "FieldValueRequired",
                            )
                        ],
                    },
                )
            store = self.objects.get(rt.key, {})
            while True:
                meta["name"] = str(prefix)[:58] + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
                if self.okey(rt, namespace, meta["name"]) not in store:
                    break
        name = meta["name"]
        if self.okey(rt, namespace, name) in self.objects.get(rt.key, {}):
            raise ApiError(
                409,
                f'{rt.qualified} "{name}" already exists',
                "AlreadyExists",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        for field in (*_SYSTEM_META, "generation", "managedFields"):
            meta.pop(field, None)
        if rt.status_subresource:  # built-in kinds start with a zero status, custom resources with none
            body.pop("status", None)
            if not rt.is_custom:
                body["status"] = zero_status(self.kube_version, rt.api_version, rt.kind)
        if rt.key == NS_KEY:
            body["spec"] = {"finalizers": ["kubernetes"]}
            body["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        self._admit(rt, body, None, warnings, strict_fields)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        meta["generation"] = 1
        if rt.key == CRD_KEY:
            body["status"] = crd_status(body)
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return body
        meta["resourceVersion"] = self.next_rv()
        self.put(rt, body)
        self.emit(rt, "ADDED", body)
        if rt.key == CRD_KEY:
            self.register_crd(body)
        return body

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        subresource: str | None,
        warnings: list[str],
        *,
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """PUT of an object or of its status subresource."""
        old = self.require(rt, namespace, name)
        self._check_kind(rt, body)
        meta = body["metadata"]
        if meta.get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status"))
            if new["status"] is None:
                new.pop("status")
            new_meta = new["metadata"]
            new_meta.pop("resourceVersion", None)
            if meta.get("resourceVersion"):
                new_meta["resourceVersion"] = meta["resourceVersion"]
            return self.update(rt, old, new, "status", warnings, strict_fields=strict_fields, dry_run=dry_run)
        return self.update(rt, old, body, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run)

    def update(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        subresource: str | None,
        warnings: list[str],
        *,
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """The common tail of PUT/PATCH/apply: preconditions, status separation, validation, commit."""
        if subresource not in (None, "status"):
            raise ApiError(404, "the server could not find the requested resource")
        if subresource == "status" and not rt.status_subresource:
            raise ApiError(404, "the server could not find the requested resource")
        self._check_kind(rt, new)
        old_meta = old["metadata"]
        meta = new["metadata"]
        name = old_meta["name"]
        sent_rv = meta.get("resourceVersion")
        if sent_rv and str(sent_rv) != old_meta["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                "Conflict",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition failed: '
                f"UID in precondition: {meta['uid']}, UID in object meta: {old_meta['uid']}",
                "Conflict",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = copy.deepcopy(status)
        elif rt.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        for field in _SYSTEM_META:
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = old_meta["namespace"]
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)
        meta["generation"] = old_meta.get("generation", 1)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if rt.key == NS_KEY:
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        self._admit(rt, new, old, warnings, strict_fields)
        if rt.key == CRD_KEY:
            status = crd_status(new)
            same_names = (old.get("status") or {}).get("acceptedNames") == status["acceptedNames"]
            new["status"] = copy.deepcopy(old["status"]) if same_names else status
        if new == old:
            return old  # a no-op write: no new resourceVersion, no event
        if self._content(rt, new) != self._content(rt, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if dry_run:
            return new
        meta["resourceVersion"] = self.next_rv()
        self.put(rt, new)
        self.emit(rt, "MODIFIED", new, old)
        if rt.key == CRD_KEY:
            self.register_crd(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.finalize(rt, new)
        return new

    @staticmethod
    def _content(rt: ResourceType, obj: Obj) -> Obj:
        skipped = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
        return {k: v for k, v in obj.items() if k not in skipped}
