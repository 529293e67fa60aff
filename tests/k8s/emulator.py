"""A Kubernetes API server emulator for the operator's tests (no real cluster is obtainable here).

`KubeEmulator` subclasses `kmock.KubernetesEmulator` (kmock 0.8), which stays the aiohttp request
handler and request recorder; this class replaces kmock's request parsing (it fails on paths such as
`/api/v1/namespaces`) and its lax object handling with an API-server-like store and router. It serves plain HTTP on 127.0.0.1 (a free port) from its own thread and event loop, so the
official `kubernetes` client, `kubectl` subprocesses, kopf (`KopfRunner` or `kopf run`) and async
tests all use it alike, and a test may block (sync clients, `time.sleep`) without stalling it.

Emulated:
- discovery: `/api`, `/api/v1` (groupVersion "v1"), `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, `/version`,
  `/healthz`; a fixed set of built-in resources (namespaces, pods, services, configmaps, secrets,
  serviceaccounts, events, endpoints, pvcs, deployments, statefulsets, daemonsets, replicasets,
  jobs, cronjobs, hpa (autoscaling/v2), pdb, ingresses, networkpolicies, rbac, leases, events.k8s.io,
  CRDs) plus every served version of every CRD, with `<plural>/status` (and `/scale`) subresources;
- server-set metadata: uid, creationTimestamp, resourceVersion (one global counter, bumped on
  every write, also on delete), generation (1 on create, +1 when anything outside metadata and
  status changes); namespace from the URL; generateName; writes that change nothing are no-ops;
- create (201), get, list (kind/apiVersion/metadata.resourceVersion, `limit`/`continue`), replace
  (PUT), patch (merge, JSON patch, strategic merge guided by the upstream schemas' patch strategy,
  and server-side apply as create-or-update: fieldManager required, force accepted, fields this
  manager applied before and now omits are removed, other managers' fields kept; no managedFields,
  no conflicts), delete and deletecollection, `dryRun=All`;
- errors as `Status` bodies: 404 NotFound, 409 AlreadyExists, 409 Conflict (stale
  `metadata.resourceVersion` or uid precondition), 422 Invalid with `details.causes`, 400, 405, and
  415 (e.g. a strategic merge patch of a custom resource, as a real server answers);
- the status subresource kept apart: writes to `/status` change only `.status`, writes to the main
  object never change `.status`, and status sent on create is dropped (for kinds with the subresource);
- `labelSelector` (=, ==, !=, in, notin, exists, !exists) and `fieldSelector` (any dotted path,
  =, ==, !=) on list, watch and deletecollection;
- watches (`?watch=true`, one namespace or all, by name too): newline-delimited JSON events,
  synthetic ADDED for the current state when no resourceVersion is given, else only events after
  it (410 Expired as an ERROR event once `expire_watch_history()` dropped them), selector
  transitions as ADDED/DELETED, `timeoutSeconds`; no bookmarks;
- finalizers (DELETE sets deletionTimestamp, removal of the last finalizer deletes; no new
  finalizers once deleting), propagationPolicy Background/Foreground/Orphan, synchronous
  cascading garbage collection by ownerReferences uid, namespace termination (contents deleted,
  creation in it refused), CRD deletion deletes its custom resources;
- validation of every written object, answered 422: built-in kinds against the upstream schemas of
  `kubernetes-validate` in strict mode (unknown fields fail) for `kube_version` (default "1.33");
  object names, label and annotation keys/values; custom resources: metadata against ObjectMeta,
  the CRD's `openAPIV3Schema` with `OAS30Validator` + the OAS 3.0 format checker (after dropping
  `x-kubernetes-*` and mapping int-or-string to anyOf), schema defaults applied, unknown fields
  pruned with a `Warning` header (or refused with `fieldValidation=Strict`, as kubectl sends, or
  always with `strict_custom_fields=True`), and `x-kubernetes-validations` CEL rules via cel-python
  (`self` at the node, `oldSelf` on update only); updates of custom resources ratchet (errors and
  rules at values the update left unchanged are ignored, as with CRDValidationRatcheting);
- new objects of built-in kinds with a status subresource get the status a Go server writes (the
  required fields at zero values, e.g. an HPA's `desiredReplicas: 0`);
- test helpers: fault injection, a request log, a synchronous state API that acts like another
  client (watchers see its writes), waiting helpers, and a kubeconfig writer.

Not emulated: authentication/authorisation (any or no token is accepted), admission webhooks and
policies, the OpenAPI endpoints (`kubectl` needs `--validate=false`), protobuf request bodies
beyond Namespace/ConfigMap/Secret/ServiceAccount (the kinds `kubectl create <generator>` makes
that are decoded here; others, and CBOR, are answered 415: use `kubectl apply -f`),
aggregated discovery, Table output (`kubectl get` prints NAME and AGE only), built-in defaulting
(a Deployment keeps exactly what was sent), controllers (no pods, no Deployment status: use
`patch_status`; pods are deleted at once), managedFields and SSA conflicts, CRD conversion (versions
share one store; apiVersion is rewritten), structural-schema checks of CRDs beyond names, storage
version and CEL compilation, watch bookmarks, Kubernetes' CEL extension functions that cel-python
lacks (`lowerAscii`, `isSorted`, `quantity`...), per-kind field selector restrictions, rate limiting.
Built-in kinds always reject unknown fields (a real server prunes them unless fieldValidation=Strict).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import dataclasses
import datetime
import functools
import json
import logging
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import aiohttp.test_utils
import aiohttp.web
import celpy
import celpy.adapter
import celpy.evaluation
import kmock
import kubernetes_validate.utils  # type: ignore[import-untyped,unused-ignore]
import yaml
import yarl
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import ValidationError as SchemaValidationError  # type: ignore[import-untyped,unused-ignore]
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from typing_extensions import override

__all__ = [
    "DEFAULT_KUBE_VERSION",
    "ApiError",
    "Fault",
    "KubeEmulator",
    "RequestRecord",
    "ResourceType",
]

logger = logging.getLogger(__name__)

DEFAULT_KUBE_VERSION: Final = "1.33"

Obj = dict[str, Any]
RKey = tuple[str, str]  # (group, plural): one store per resource, shared by all its versions
OKey = tuple[str, str]  # (namespace or "", name)

_REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_CAUSE_PREFIX: Final[Mapping[str, str]] = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueNotSupported": "Unsupported value",
}
_ALL_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SUB_VERBS: Final = ("get", "patch", "update")
_SYSTEM_META: Final = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)
_OBJECT_META_REF: Final = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE: Final = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_LABEL_RE: Final = re.compile(_DNS_LABEL)
_DNS1035_LABEL_RE: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME_RE: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: Obj | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Obj:
    return {"reason": reason, "message": message, "field": field}


# --------------------------------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ResourceType:
    """One served group/version/resource, built in or defined by a CRD."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    scale_subresource: bool = False
    name_rule: str = "subdomain"  # subdomain | label | label1035 | path
    crd_name: str | None = None  # None for built-in kinds
    schema: Obj | None = None  # the CRD version's openAPIV3Schema
    scale_paths: tuple[str, str, str] = ("spec.replicas", "status.replicas", "status.selector")
    singular_name: str = ""

    @property
    def singular(self) -> str:
        return self.singular_name or self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> RKey:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """e.g. `deployments.apps` or `namespaces`, as in NotFound messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """e.g. `Deployment.apps`, as in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    def discovery(self) -> list[Obj]:
        entry: Obj = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(_SUB_VERBS),
                }
            )
        if self.scale_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(_SUB_VERBS),
                }
            )
        return entries


def _builtin(
    group: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short_names: tuple[str, ...] = (),
    *,
    version: str = "v1",
    all_category: bool = False,
    status: bool = False,
    scale: bool = False,
    name_rule: str = "subdomain",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short_names,
        categories=("all",) if all_category else (),
        status_subresource=status,
        scale_subresource=scale,
        name_rule=name_rule,
    )


BUILTIN_RESOURCES: Final[tuple[ResourceType, ...]] = (
    _builtin("", "namespaces", "Namespace", False, ("ns",), status=True, name_rule="label"),
    _builtin("", "pods", "Pod", True, ("po",), all_category=True, status=True),
    _builtin(
        "", "services", "Service", True, ("svc",), all_category=True, status=True, name_rule="label1035"
    ),
    _builtin("", "configmaps", "ConfigMap", True, ("cm",)),
    _builtin("", "secrets", "Secret"),
    _builtin("", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _builtin("", "events", "Event", True, ("ev",)),
    _builtin("", "endpoints", "Endpoints", True, ("ep",)),
    _builtin("", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), status=True),
    _builtin(
        "apps", "deployments", "Deployment", True, ("deploy",), all_category=True, status=True, scale=True
    ),
    _builtin(
        "apps", "statefulsets", "StatefulSet", True, ("sts",), all_category=True, status=True, scale=True
    ),
    _builtin("apps", "daemonsets", "DaemonSet", True, ("ds",), all_category=True, status=True),
    _builtin("apps", "replicasets", "ReplicaSet", True, ("rs",), all_category=True, status=True, scale=True),
    _builtin("batch", "jobs", "Job", True, all_category=True, status=True),
    _builtin("batch", "cronjobs", "CronJob", True, ("cj",), all_category=True, status=True),
    _builtin(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        ("hpa",),
        version="v2",
        all_category=True,
        status=True,
    ),
    _builtin("policy", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), status=True),
    _builtin("networking.k8s.io", "ingresses", "Ingress", True, ("ing",), status=True),
    _builtin("networking.k8s.io", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _builtin("rbac.authorization.k8s.io", "roles", "Role", name_rule="path"),
    _builtin("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", name_rule="path"),
    _builtin("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False, name_rule="path"),
    _builtin(
        "rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False, name_rule="path"
    ),
    _builtin("coordination.k8s.io", "leases", "Lease"),
    _builtin("events.k8s.io", "events", "Event", True, ("ev",)),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        status=True,
    ),
)
_CRD_KEY: Final[RKey] = ("apiextensions.k8s.io", "customresourcedefinitions")
_NS_KEY: Final[RKey] = ("", "namespaces")


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[match.group(2)]
    return (stability, int(match.group(1)), int(match.group(3) or 0))


# --------------------------------------------------------------------------------------------------
# Upstream schemas of built-in kinds (from kubernetes-validate)
# --------------------------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


@functools.cache
def _schema_dir(kube_version: str) -> str:
    wanted = _version_tuple(kube_version)
    versions: list[str] = [str(v) for v in kubernetes_validate.utils.all_versions()]
    eligible = sorted({v for v in versions if _version_tuple(v) <= wanted}, key=_version_tuple)
    if not eligible:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kube_version}")
    return f"kubernetes-json-schema/v{eligible[-1]}-local-strict"


def _schema_file(kube_version: str, filename: str) -> Obj:
    return cast(
        Obj,
        kubernetes_validate.utils.schema_contents(f"{_schema_dir(kube_version)}/{filename}", kube_version),
    )


@functools.cache
def _definitions(kube_version: str) -> Obj:
    return _schema_file(kube_version, "_definitions.json")


@functools.cache
def _registry(kube_version: str) -> Registry[Any]:
    return Resource.from_contents(_definitions(kube_version)) @ Registry()


@functools.cache
def _kind_schema(kube_version: str, api_version: str, kind: str) -> Obj | None:
    # The same file naming as kubernetes_validate.validate(): rbac.authorization.k8s.io/v1 -> rbac-v1.
    name = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        return _schema_file(kube_version, f"{kind.lower()}-{name}.json")
    except FileNotFoundError:
        return None


@functools.cache
def _kind_validator(kube_version: str, api_version: str, kind: str) -> Any:
    """The validator `kubernetes_validate.validate(..., strict=True)` builds, cached and yielding all errors."""
    schema = _kind_schema(kube_version, api_version, kind)
    if schema is None:
        return None
    registry = Resource.from_contents(schema) @ _registry(kube_version)
    return Draft202012Validator(schema, registry=registry)


@functools.cache
def _object_meta_validator(kube_version: str) -> Any:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"metadata": {"$ref": _OBJECT_META_REF}},
    }
    return Draft202012Validator(schema, registry=_registry(kube_version))


def _zero_status(kube_version: str, api_version: str, kind: str) -> Obj:
    """A new object's status as a Go server writes it: the required (non-omitempty) fields at zero values."""
    resolve = _resolver(kube_version)
    status = _child_schema(_kind_schema(kube_version, api_version, kind), "status", resolve)
    zeros: Obj = {}
    for name in status.get("required") or []:
        declared = _child_schema(status, str(name), resolve).get("type", "object")
        types = [t for t in ([declared] if isinstance(declared, str) else declared) if t != "null"]
        zero: Any = {"integer": 0, "number": 0, "string": "", "boolean": False, "array": []}.get(
            types[0] if types else "", {}
        )
        zeros[str(name)] = zero
    return zeros


def _resolver(kube_version: str) -> Callable[[Any], Obj]:
    defs: Obj = _definitions(kube_version)["$defs"]

    def resolve(node: Any) -> Obj:
        while isinstance(node, dict) and "$ref" in node:
            node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
        return node if isinstance(node, dict) else {}

    return resolve


def _child_schema(schema: Any, key: str, resolve: Callable[[Any], Obj]) -> Obj:
    node = resolve(schema)
    props = node.get("properties")
    if isinstance(props, dict) and key in props:
        return resolve(props[key])
    extra = node.get("additionalProperties")
    return resolve(extra) if isinstance(extra, dict) else {}


def _items_schema(schema: Any, resolve: Callable[[Any], Obj]) -> Obj:
    return resolve(resolve(schema).get("items"))


# --------------------------------------------------------------------------------------------------
# Paths, selectors
# --------------------------------------------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _format_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = _join(path, part)
    return path


def _meta(obj: Mapping[str, Any]) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _props(schema: Mapping[str, Any]) -> Obj:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


@dataclasses.dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = str(labels.get(self.key, ""))
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str) -> list[_Requirement]:
    requirements: list[_Requirement] = []
    for part in _split_top_level(text):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(_Requirement(match.group(1), match.group(2), values))
        elif match := re.fullmatch(r"!\s*([^\s=!(),]+)", part):
            requirements.append(_Requirement(match.group(1), "!"))
        elif match := re.fullmatch(r"([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)", part):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(_Requirement(match.group(1), op, frozenset([match.group(3)])))
        elif re.fullmatch(r"[^\s=!(),]+", part):
            requirements.append(_Requirement(part, "exists"))
        else:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return requirements


def parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    requirements: list[tuple[str, str, str]] = []
    for part in _split_top_level(text):
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{part}'")
        requirements.append((match.group(1), "!=" if match.group(2) == "!=" else "=", match.group(3).strip()))
    return requirements


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class _Filter:
    namespace: str | None = None
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def make(cls, namespace: str | None, label_selector: str | None, field_selector: str | None) -> _Filter:
        return cls(
            namespace=namespace,
            labels=tuple(parse_label_selector(label_selector or "")),
            fields=tuple(parse_field_selector(field_selector or "")),
        )

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = _meta(obj)
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        for path, op, value in self.fields:
            actual = _field_text(_dig(obj, path))
            if (actual == value) != (op == "="):
                return False
        return True


# --------------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [
            _strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")
        ]
    return copy.deepcopy(value)


def _same_keys(a: Any, b: Any, keys: Sequence[str]) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and all(a.get(k) == b.get(k) for k in keys)


def strategic_merge_patch(target: Any, patch: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Strategic merge patch, guided by the upstream schemas' x-kubernetes-patch-strategy/-merge-key."""
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            existing = result.get(field)
            if isinstance(existing, list) and isinstance(value, list):
                result[field] = [item for item in existing if item not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = _child_schema(schema, key, resolve)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, sub, resolve)
        elif isinstance(value, list):
            strategy = str(sub.get("x-kubernetes-patch-strategy", "")).split(",")
            merge_key = sub.get("x-kubernetes-patch-merge-key")
            existing = result.get(key)
            if "merge" not in strategy or not isinstance(existing, list):
                result[key] = _strip_directives(value)
            elif merge_key:
                merged = list(existing)
                item_schema = _items_schema(sub, resolve)
                for item in value:
                    index = next(
                        (i for i, old in enumerate(merged) if _same_keys(old, item, [merge_key])), None
                    )
                    if isinstance(item, dict) and item.get("$patch") == "delete":
                        if index is not None:
                            merged.pop(index)
                    elif index is None:
                        merged.append(_strip_directives(item))
                    else:
                        merged[index] = strategic_merge_patch(merged[index], item, item_schema, resolve)
                result[key] = merged
            else:
                result[key] = list(existing) + [copy.deepcopy(v) for v in value if v not in existing]
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k not in (target or {})}
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer: {path!r}", "Invalid")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _container(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            raise ApiError(422, f"jsonpatch: path not found: /{'/'.join(tokens)}", "Invalid")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)

    def get(path: str) -> Any:
        tokens = _pointer(path)
        return copy.deepcopy(_container(doc, tokens))

    def remove(path: str) -> None:
        tokens = _pointer(path)
        parent = _container(doc, tokens[:-1])
        if isinstance(parent, dict) and tokens[-1] in parent:
            del parent[tokens[-1]]
        elif isinstance(parent, list) and tokens[-1].isdigit() and int(tokens[-1]) < len(parent):
            parent.pop(int(tokens[-1]))
        else:
            raise ApiError(
                422, f"jsonpatch remove operation does not apply: doc is missing path: {path}", "Invalid"
            )

    def add(path: str, value: Any, replace: bool = False) -> None:
        nonlocal doc
        tokens = _pointer(path)
        if not tokens:
            doc = copy.deepcopy(value)
            return
        parent = _container(doc, tokens[:-1])
        last = tokens[-1]
        if isinstance(parent, dict):
            if replace and last not in parent:
                raise ApiError(
                    422, f"jsonpatch replace operation does not apply: doc is missing key: {path}", "Invalid"
                )
            parent[last] = copy.deepcopy(value)
        elif isinstance(parent, list):
            if last == "-" and not replace:
                parent.append(copy.deepcopy(value))
            elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
                if replace:
                    parent[int(last)] = copy.deepcopy(value)
                else:
                    parent.insert(int(last), copy.deepcopy(value))
            else:
                raise ApiError(422, f"jsonpatch: index out of range: {path}", "Invalid")
        else:
            raise ApiError(422, f"jsonpatch: cannot address {path}", "Invalid")

    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise ApiError(400, f"invalid JSON patch operation: {op!r}")
        name, path = op.get("op"), str(op["path"])
        if name == "add":
            add(path, op.get("value"))
        elif name == "replace":
            add(path, op.get("value"), replace=True)
        elif name == "remove":
            remove(path)
        elif name in ("move", "copy"):
            value = get(str(op.get("from", "")))
            if name == "move":
                remove(str(op.get("from", "")))
            add(path, value)
        elif name == "test":
            if get(path) != op.get("value"):
                raise ApiError(422, f"jsonpatch test operation does not apply: is: {get(path)!r}", "Invalid")
        else:
            raise ApiError(400, f"Unexpected kind: {name}")
    return doc


def _list_keys(schema: Obj) -> list[str] | None:
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys")
        if isinstance(keys, list) and keys:
            return [str(k) for k in keys]
    if schema.get("x-kubernetes-patch-strategy") and schema.get("x-kubernetes-patch-merge-key"):
        return [str(schema["x-kubernetes-patch-merge-key"])]
    return None


def _apply_merge(current: Any, applied: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Server-side apply, approximated: maps merge, map-lists merge by keys, sets union, the rest is replaced."""
    if isinstance(applied, dict):
        base: Obj = dict(current) if isinstance(current, dict) else {}
        for key, value in applied.items():
            base[key] = _apply_merge(base.get(key), value, _child_schema(schema, key, resolve), resolve)
        return base
    if isinstance(applied, list) and isinstance(current, list):
        node = resolve(schema)
        keys = _list_keys(node)
        if keys:
            merged = list(current)
            for item in applied:
                index = next((i for i, old in enumerate(merged) if _same_keys(old, item, keys)), None)
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = _apply_merge(merged[index], item, _items_schema(node, resolve), resolve)
            return merged
        if node.get("x-kubernetes-list-type") == "set":
            return list(current) + [copy.deepcopy(v) for v in applied if v not in current]
    return copy.deepcopy(applied)


def _apply_forget(current: Any, before: Any, now: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Remove what a field manager applied before and no longer applies."""
    if isinstance(before, dict) and isinstance(current, dict):
        result = dict(current)
        for key, old in before.items():
            if not isinstance(now, dict) or key not in now:
                result.pop(key, None)
            elif key in result:
                result[key] = _apply_forget(
                    result[key], old, now[key], _child_schema(schema, key, resolve), resolve
                )
        return result
    if isinstance(before, list) and isinstance(current, list) and isinstance(now, list):
        node = resolve(schema)
        keys = _list_keys(node)
        if keys:
            gone = [b for b in before if not any(_same_keys(b, n, keys) for n in now)]
            return [c for c in current if not any(_same_keys(c, g, keys) for g in gone)]
        if node.get("x-kubernetes-list-type") == "set":
            return [c for c in current if c in now or c not in before]
    return current


# --------------------------------------------------------------------------------------------------
# Custom resource schemas: OAS 3.0 conversion, pruning, defaulting, CEL
# --------------------------------------------------------------------------------------------------

_SCHEMA_MAPS: Final = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE: Final = ("items", "additionalProperties", "not")


def to_oas30(node: Any) -> Any:
    """Drop `x-kubernetes-*` keys; `x-kubernetes-int-or-string: true` becomes anyOf integer/string."""
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_oas30(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_oas30(sub) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = to_oas30(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") is True and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _prune(value: Any, schema: Any, path: str, unknown: list[str], *, root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = _props(schema)
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True or extra is True
        embedded = root or schema.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            sub = props.get(key) if props else None
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                if (embedded and key in ("apiVersion", "kind", "metadata")) or preserve:
                    continue
                unknown.append(_join(path, key))
                del value[key]
            elif not (root and key == "metadata"):
                _prune(value[key], sub, _join(path, key), unknown)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(item, schema["items"], _join(path, index), unknown)


def apply_defaults(value: Any, schema: Any) -> None:
    """Set schema `default`s of absent properties wherever the parent object is present."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = _props(schema)
        for key, sub in props.items():
            if not isinstance(sub, dict) or "default" not in sub:
                continue
            if key not in value or (value[key] is None and not sub.get("nullable")):
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            apply_defaults(item, sub)
    elif isinstance(value, list):
        for item in value:
            apply_defaults(item, schema.get("items"))


_CEL_ENV: Final = celpy.Environment()


@functools.lru_cache(maxsize=512)
def _cel_program(rule: str) -> celpy.Runner:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _cel_eval(rule: str, activation: Mapping[str, Any]) -> tuple[Any, str | None]:
    try:
        result = _cel_program(rule).evaluate(cast(Any, dict(activation)))
    except Exception as exc:  # celpy raises CELEvalError and assorted Python errors
        return None, f"{type(exc).__name__}: {exc}"
    if isinstance(result, celpy.evaluation.CELEvalError):
        return None, str(result)
    return result, None


def _iter_cel_rules(schema: Any) -> Iterator[tuple[str, str]]:
    """(path, rule) for every x-kubernetes-validations rule in a schema, for compile checks."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if not isinstance(node, dict):
            return
        for index, rule in enumerate(node.get("x-kubernetes-validations") or []):
            if isinstance(rule, dict):
                yield f"{path}.x-kubernetes-validations[{index}].rule", str(rule.get("rule", ""))
        for name, sub in (node.get("properties") or {}).items():
            yield from walk(sub, f"{path}.properties[{name}]")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{path}.{key}")

    yield from walk(schema, "openAPIV3Schema")


def _check_cel(value: Any, old: Any, schema: Any, path: str, causes: list[Obj], *, has_old: bool) -> None:
    if value is None or not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        if not isinstance(rule, dict) or not rule.get("rule"):
            continue
        text = str(rule["rule"])
        uses_old = re.search(r"\boldSelf\b", text) is not None
        if uses_old and not has_old:
            continue
        if has_old and not uses_old and value == old:
            continue  # ratcheting: a rule is not re-checked on a value the update left unchanged
        activation: Obj = {"self": celpy.adapter.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.adapter.json_to_cel(old)
        result, error = _cel_eval(text, activation)
        field = path
        if rule.get("fieldPath"):
            field = path + ("" if str(rule["fieldPath"]).startswith(".") else ".") + str(rule["fieldPath"])
            field = field.lstrip(".")
        shown = json.dumps(schema.get("type", "object"))
        if error is not None:
            causes.append(
                _cause(field, f"Invalid value: {shown}: rule {text!r} could not be evaluated: {error}")
            )
            continue
        if bool(result):
            continue
        message = str(rule.get("message") or f"failed rule: {text}")
        if rule.get("messageExpression"):
            produced, problem = _cel_eval(str(rule["messageExpression"]), activation)
            if problem is None and str(produced):
                message = str(produced)
        reason = str(rule.get("reason") or "FieldValueInvalid")
        prefix = _CAUSE_PREFIX.get(reason, "Invalid value")
        text_out = (
            f"{prefix}: {shown}: {message}" if reason == "FieldValueInvalid" else f"{prefix}: {message}"
        )
        causes.append(_cause(field, text_out, reason))
    if isinstance(value, dict):
        props = _props(schema)
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                continue
            old_item = old.get(key) if isinstance(old, dict) else None
            _check_cel(
                item,
                old_item,
                sub,
                _join(path, key),
                causes,
                has_old=has_old and isinstance(old, dict) and key in old,
            )
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _check_cel(item, None, schema["items"], _join(path, index), causes, has_old=False)


_MISSING: Final = object()


def _at(obj: Any, path: Sequence[Any]) -> Any:
    for part in path:
        in_dict = isinstance(obj, dict) and part in obj
        in_list = isinstance(obj, list) and isinstance(part, int) and 0 <= part < len(obj)
        if not (in_dict or in_list):
            return _MISSING
        obj = obj[part]
    return obj


def _schema_causes(validator: Any, obj: Obj, old: Obj | None = None) -> list[Obj]:
    """Kubernetes-style causes from jsonschema errors (field path, message, reason).

    With `old` (an update of a custom resource), errors at values left unchanged are ratcheted away,
    as the API server does since CRDValidationRatcheting (on by default from 1.30, GA in 1.33).
    """
    causes: list[Obj] = []
    errors: list[SchemaValidationError] = sorted(
        validator.iter_errors(obj), key=lambda e: list(e.absolute_path)
    )
    for error in errors:
        if old is not None:
            before = _at(old, list(error.absolute_path))
            if before is not _MISSING and before == _at(obj, list(error.absolute_path)):
                continue
        path = _format_path(error.absolute_path)
        kind = error.validator
        if kind == "required":
            missing = [
                name
                for name in error.validator_value
                if isinstance(error.instance, dict) and name not in error.instance
            ]
            for name in missing or ["?"]:
                causes.append(_cause(_join(path, name), "Required value", "FieldValueRequired"))
        elif kind == "additionalProperties" and isinstance(error.instance, dict):
            known = set((error.schema.get("properties") or {}).keys())
            for name in error.instance:
                if name not in known:
                    causes.append(_cause(_join(path, name), f'unknown field "{_join(path, name)}"'))
        elif kind == "enum":
            supported = ", ".join(json.dumps(v) for v in error.validator_value)
            causes.append(
                _cause(
                    path,
                    f"Unsupported value: {json.dumps(error.instance)}: supported values: {supported}",
                    "FieldValueNotSupported",
                )
            )
        elif kind == "type":
            wanted = (
                error.validator_value
                if isinstance(error.validator_value, str)
                else " or ".join(error.validator_value)
            )
            causes.append(
                _cause(
                    path,
                    f"Invalid value: {json.dumps(error.instance)}: {path or 'body'} in body must be of type {wanted}",
                    "FieldValueTypeInvalid",
                )
            )
        elif kind in ("oneOf", "anyOf"):
            causes.append(
                _cause(
                    path,
                    f"Invalid value: {json.dumps(error.instance)}: {error.message}",
                    "FieldValueTypeInvalid",
                )
            )
        else:
            causes.append(
                _cause(path, f"Invalid value: {json.dumps(error.instance, default=str)}: {error.message}")
            )
    return causes


@dataclasses.dataclass(frozen=True, eq=False)
class _CustomSchema:
    raw: Obj  # openAPIV3Schema as written in the CRD
    validator: Any  # OAS30Validator on the converted schema


def _custom_schema(raw: Obj) -> _CustomSchema:
    converted = cast(Obj, to_oas30(raw))
    converted.setdefault("type", "object")
    props = converted.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return _CustomSchema(raw=raw, validator=OAS30Validator(converted, format_checker=oas30_format_checker))


# --------------------------------------------------------------------------------------------------
# Metadata checks common to all kinds
# --------------------------------------------------------------------------------------------------


def _name_causes(field: str, name: str, rule: str, *, prefix: bool = False) -> list[Obj]:
    shown = json.dumps(name)
    check = name.rstrip("-") if prefix else name
    if rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            return [_cause(field, f"Invalid value: {shown}: may not contain '/' or '%' or be '.' or '..'")]
        return []
    limit = 253 if rule == "subdomain" else 63
    if len(check) > limit:
        return [_cause(field, f"Invalid value: {shown}: must be no more than {limit} characters")]
    if rule == "subdomain" and not _DNS_SUBDOMAIN_RE.fullmatch(check):
        return [
            _cause(
                field,
                f"Invalid value: {shown}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    if rule == "label" and not _DNS_LABEL_RE.fullmatch(check):
        return [
            _cause(
                field,
                f"Invalid value: {shown}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character",
            )
        ]
    if rule == "label1035" and not _DNS1035_LABEL_RE.fullmatch(check):
        return [
            _cause(
                field,
                f"Invalid value: {shown}: a DNS-1035 label must consist of lower case alphanumeric characters or "
                "'-', start with an alphabetic character, and end with an alphanumeric character",
            )
        ]
    return []


def _qualified_name_causes(field: str, key: str) -> list[Obj]:
    prefix, _, name = key.rpartition("/")
    problems: list[str] = []
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        problems.append("prefix part must be a lowercase RFC 1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character, at most 63 characters"
        )
    return [_cause(field, f"Invalid value: {json.dumps(key)}: {p}") for p in problems]


def _metadata_causes(obj: Obj, rt: ResourceType) -> list[Obj]:
    meta = _meta(obj)
    causes: list[Obj] = []
    name = meta.get("name")
    if isinstance(name, str):
        causes += _name_causes("metadata.name", name, rt.name_rule)
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            field = "metadata.labels"
            causes += _qualified_name_causes(field, str(key))
            if not isinstance(value, str):
                continue
            if len(value) > 63 or (value and not _QUALIFIED_NAME_RE.fullmatch(value)):
                causes.append(
                    _cause(
                        field,
                        f"Invalid value: {json.dumps(value)}: a valid label must be an empty string or consist of "
                        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                        "character, at most 63 characters",
                    )
                )
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            causes += _qualified_name_causes("metadata.annotations", str(key))
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > 256 * 1024:
            causes.append(
                _cause(
                    "metadata.annotations", "Too long: must have at most 262144 bytes", "FieldValueTooLong"
                )
            )
    return causes


# --------------------------------------------------------------------------------------------------
# Test-facing records
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RequestRecord:
    """One request the emulator received; `status` is set once answered (200 when a watch starts)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str = ""
    status: int | None = None
    fault: bool = False

    @property
    def watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


@dataclasses.dataclass
class Fault:
    """An injected failure: the next `times` matching requests are answered with `status`."""

    status: int
    method: str | None = None
    path_re: re.Pattern[str] | None = None
    times: int | None = 1  # None: until cleared
    watch: bool | None = None  # None: watches and other requests alike
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, record: RequestRecord) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method.upper() != record.method:
            return False
        if self.watch is not None and self.watch != record.watch:
            return False
        return self.path_re is None or self.path_re.search(record.path) is not None


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None  # the previous state for MODIFIED, for selector transitions


@dataclasses.dataclass(eq=False)
class _Watcher:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Event | None]


# --------------------------------------------------------------------------------------------------
# Protobuf request bodies: just the kinds kubectl's typed generators create
# --------------------------------------------------------------------------------------------------

_PROTOBUF: Final = "application/vnd.kubernetes.protobuf"
_PB_MAGIC: Final = b"k8s\x00"
# Field numbers from the upstream generated.proto files; a kind is a scalar name, a message, or
# ("repeated", kind) / ("map", value kind). Server-set ObjectMeta fields are not decoded.
_PbKind = Any
_PB_OWNER_REFERENCE: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_OBJECT_META: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    6: ("resourceVersion", "string"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("repeated", _PB_OWNER_REFERENCE)),
    14: ("finalizers", ("repeated", "string")),
}
_PB_OBJECT_REFERENCE: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("resourceVersion", "string"),
    7: ("fieldPath", "string"),
}
_PB_KINDS: Final[dict[tuple[str, str], dict[int, tuple[str, _PbKind]]]] = {
    ("v1", "Namespace"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("spec", {1: ("finalizers", ("repeated", "string"))}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", ("map", "string")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("stringData", ("map", "string")),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("secrets", ("repeated", _PB_OBJECT_REFERENCE)),
        3: ("imagePullSecrets", ("repeated", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "bool"),
    },
}


def _pb_varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data):
            raise ValueError("truncated varint")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def _pb_fields(data: bytes) -> Iterator[tuple[int, Any]]:
    index = 0
    while index < len(data):
        key, index = _pb_varint(data, index)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _pb_varint(data, index)
            yield number, value
        elif wire == 2:
            length, index = _pb_varint(data, index)
            yield number, data[index : index + length]
            index += length
        elif wire in (1, 5):
            index += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _pb_value(kind: _PbKind, raw: Any) -> Any:
    if kind == "string":
        return bytes(raw).decode()
    if kind == "bytes":
        return base64.b64encode(bytes(raw)).decode()
    if kind == "bool":
        return bool(raw)
    return _pb_message(kind, bytes(raw))


def _pb_message(spec: Mapping[int, tuple[str, _PbKind]], data: bytes) -> Obj:
    out: Obj = {}
    for number, raw in _pb_fields(data):
        if number not in spec:
            continue
        name, kind = spec[number]
        if isinstance(kind, tuple) and kind[0] == "repeated":
            out.setdefault(name, []).append(_pb_value(kind[1], raw))
        elif isinstance(kind, tuple) and kind[0] == "map":
            entry = dict(_pb_fields(bytes(raw)))
            key = bytes(entry.get(1, b"")).decode()
            out.setdefault(name, {})[key] = _pb_value(kind[1], entry.get(2, b""))
        else:
            value = _pb_value(kind, raw)
            if value not in ("", False, {}):  # Go omits empty fields in JSON; protobuf sends them
                out[name] = value
    return out


def decode_protobuf(body: bytes) -> Obj:
    """Decode a Kubernetes protobuf body (`k8s\\0` + runtime.Unknown) for the few kinds kubectl generates."""
    if not body.startswith(_PB_MAGIC):
        raise ApiError(400, "the protobuf body lacks the k8s envelope")
    try:
        envelope = dict(_pb_fields(body[len(_PB_MAGIC) :]))
        type_meta = {n: bytes(v).decode() for n, v in _pb_fields(bytes(envelope.get(1, b"")))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        spec = _PB_KINDS.get((api_version, kind))
        if spec is None:
            raise ApiError(
                415,
                f"the emulator cannot decode protobuf for {api_version} {kind}; send JSON "
                "(e.g. `kubectl apply -f` rather than a typed `kubectl create` generator)",
            )
        obj = _pb_message(spec, bytes(envelope.get(2, b"")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid protobuf body: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_type(raw: aiohttp.web.BaseRequest) -> str:
    return raw.headers.get("Content-Type", "").split(";")[0].strip().lower()


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class KubeEmulator(kmock.KubernetesEmulator):
    """An API-server-like Kubernetes emulator over HTTP; see the module docstring for the scope.

    Use as `with KubeEmulator() as emulator:` (or `start()`/`stop()`), then point clients at
    `emulator.server_url` or a kubeconfig from `write_kubeconfig(path)`.
    """

    def __init__(
        self,
        *,
        kube_version: str = DEFAULT_KUBE_VERSION,
        strict_custom_fields: bool = False,
        namespaces: Sequence[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__()
        _schema_dir(kube_version)  # fail early on an unsupported version
        self.kube_version = kube_version
        self.strict_custom_fields = strict_custom_fields
        self.request_log: list[RequestRecord] = []
        self.warnings: list[str] = []  # every Warning header sent (e.g. pruned unknown fields)
        self.internal_errors: list[str] = []  # tracebacks of emulator bugs (answered with 500)
        self._host = host
        self._wanted_port = port
        self._port: int | None = None
        self._state = threading.RLock()
        self._changed = threading.Condition(self._state)
        self._rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._schemas: dict[tuple[str, str, str], _CustomSchema] = {}
        self._store: dict[RKey, dict[OKey, Obj]] = {}
        self._uids: dict[str, tuple[RKey, OKey]] = {}
        self._history: dict[RKey, list[_Event]] = {}
        self._expired_below: dict[RKey, int] = {}
        self._watchers: dict[RKey, set[_Watcher]] = {}
        self._applied: dict[tuple[RKey, OKey, str, str], Obj] = {}
        self._faults: list[Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._closing = False
        self._startup_error: BaseException | None = None
        for rt in BUILTIN_RESOURCES:
            self._types[(rt.group, rt.version, rt.plural)] = rt
        for namespace in namespaces:
            self.create_object("namespaces", {"metadata": {"name": namespace}})

    # ----------------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on 127.0.0.1 from a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to start()
                self._startup_error = exc
                ready.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("the emulator did not start in 30 s")
        if self._startup_error is not None:
            raise RuntimeError("the emulator failed to start") from self._startup_error

    def stop(self) -> None:
        """Close all watches and the server; call from any thread but the emulator's own."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        async with self:  # kmock's handler context (error accumulation, stream feeder)
            server = aiohttp.test_utils.RawTestServer(self, host=self._host, port=self._wanted_port)
            await server.start_server(access_log=None)  # no aiohttp access lines in the tests' logs
            self._port = server.port
            ready.set()
            try:
                await self._stop_event.wait()
            finally:
                with self._state:
                    self._closing = True
                    for watchers in self._watchers.values():
                        for watcher in watchers:
                            watcher.queue.put_nowait(None)
                await server.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def server_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    @override
    def url(self) -> yarl.URL:
        return yarl.URL(self.server_url)

    def kubeconfig(self, *, namespace: str = "default", token: str = "emulator-token") -> Obj:
        """A kubeconfig document for this emulator (plain HTTP, a dummy bearer token)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.server_url}}],
            "users": [{"name": "emulator", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str = "emulator-token"
    ) -> Path:
        """Write a kubeconfig for `kubectl --kubeconfig` and `kubernetes.config.load_kube_config`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace=namespace, token=token), sort_keys=False))
        return path

    # ----------------------------------------------------------------------------------------------
    # Test API: faults, logs, direct state access
    # ----------------------------------------------------------------------------------------------

    def inject_faults(
        self,
        *,
        method: str | None = None,
        path_re: str | re.Pattern[str] | None = None,
        status: int = 500,
        times: int | None = 1,
        watch: bool | None = None,
        reason: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer the next `times` requests matching method and path regex (re.search) with `status`.

        `times=None` keeps failing until `clear_faults()`; `watch=True/False` restricts to watches or
        non-watches. Returns the `Fault`, whose `hits` counts the requests it failed.
        """
        fault = Fault(
            status=status,
            method=method.upper() if method else None,
            path_re=re.compile(path_re) if isinstance(path_re, str) else path_re,
            times=times,
            watch=watch,
            reason=reason,
            message=message,
            retry_after=retry_after,
        )
        with self._state:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._state:
            self._faults.clear()

    def requests_matching(self, method: str | None = None, path_re: str | None = None) -> list[RequestRecord]:
        with self._state:
            records = list(self.request_log)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (path_re is None or re.search(path_re, r.path))
        ]

    def resolve(self, resource: str) -> ResourceType:
        """Find a served resource by `group/version/plural`, `plural.group`, plural, singular, kind or short name."""
        with self._state:
            types = list(self._types.values())
        by_preference = sorted(
            types, key=lambda t: (t.group != "", t.is_custom, tuple(-n for n in _version_priority(t.version)))
        )
        parts = resource.split("/")
        if len(parts) in (2, 3):
            group, version, plural = (
                ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
            )
            with self._state:
                found = self._types.get((group, version, plural))
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

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """The stored object (a copy), or None."""
        rt = self.resolve(resource)
        with self._state:
            obj = self._store.get(rt.key, {}).get(self._okey(rt, namespace, name))
            return self._present(rt, obj) if obj is not None else None

    def list_objects(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        rt = self.resolve(resource)
        selection = _Filter.make(namespace, label_selector, field_selector)
        with self._state:
            return [
                self._present(rt, o)
                for _, o in sorted(self._store.get(rt.key, {}).items())
                if selection.matches(o)
            ]

    def create_object(self, resource: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Create as a client would (validated, watchers notified); raises ApiError."""
        rt = self.resolve(resource)
        namespace = namespace or _meta(body).get("namespace") or ("default" if rt.namespaced else None)
        with self._state:
            return self._present(rt, self._create(rt, namespace, copy.deepcopy(dict(body)), []))

    def replace_object(
        self,
        resource: str,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        rt = self.resolve(resource)
        with self._state:
            return self._present(
                rt, self._replace(rt, namespace, name, copy.deepcopy(dict(body)), subresource, [])
            )

    def patch_object(
        self,
        resource: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """JSON-merge-patch an object as another client would (validated, watchers notified)."""
        rt = self.resolve(resource)
        with self._state:
            old = self._require(rt, namespace, name)
            new = merge_patch(copy.deepcopy(old), patch)
            return self._present(rt, self._update(rt, old, new, subresource, []))

    def patch_status(
        self, resource: str, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        """Merge-patch `.status` through the status subresource (as a controller would)."""
        rt = self.resolve(resource)
        subresource = "status" if rt.status_subresource else None
        return self.patch_object(resource, name, {"status": dict(status)}, namespace, subresource=subresource)

    def delete_object(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str = "Background",
    ) -> Obj | None:
        """Delete as a client would; returns the object if finalizers keep it, else None."""
        rt = self.resolve(resource)
        with self._state:
            obj = self._require(rt, namespace, name)
            remaining = self._delete(rt, obj, propagation_policy)
            return self._present(rt, remaining) if remaining is not None else None

    def wait_for(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,
    ) -> Obj | None:
        """Block until `condition(object or None)` holds; raises TimeoutError. Not for the emulator's thread."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                obj = self.get_object(resource, name, namespace)
                if condition(obj):
                    return obj
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{resource} {namespace}/{name} never met the condition; last: {obj!r}"
                    )
                self._changed.wait(timeout=min(remaining, 0.5))

    async def wait_for_async(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as wait_for()
    ) -> Obj | None:
        """`wait_for` for async tests: polls with asyncio.sleep, never blocks the test's loop."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get_object(resource, name, namespace)
            if condition(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource} {namespace}/{name} never met the condition; last: {obj!r}")
            await asyncio.sleep(0.05)

    def expire_watch_history(self) -> None:
        """Forget past events: watches resuming from an older resourceVersion get a 410 Expired ERROR."""
        with self._state:
            for key in self._history:
                self._expired_below[key] = self._rv + 1
                self._history[key] = []

    @property
    def resource_version(self) -> int:
        with self._state:
            return self._rv

    # ----------------------------------------------------------------------------------------------
    # Store internals (always under self._state)
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _okey(rt: ResourceType, namespace: str | None, name: str) -> OKey:
        return ((namespace or "") if rt.namespaced else "", name)

    def _present(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._store.get(rt.key, {}).get(self._okey(rt, namespace, name))
        if obj is None:
            raise ApiError(
                404,
                f'{rt.qualified} "{name}" not found',
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        return obj

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None = None) -> None:
        event = _Event(rv=int(_meta(obj)["resourceVersion"]), type=kind, obj=obj, old=old)
        self._history.setdefault(rt.key, []).append(event)
        for watcher in list(self._watchers.get(rt.key, ())):
            with contextlib.suppress(RuntimeError):  # the emulator's loop is closed
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)
        self._changed.notify_all()

    def _store_obj(self, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        okey = (meta.get("namespace", ""), meta["name"])
        self._store.setdefault(rt.key, {})[okey] = obj
        self._uids[meta["uid"]] = (rt.key, okey)

    def _type_for_key(self, key: RKey) -> ResourceType:
        candidates = [t for t in self._types.values() if t.key == key]
        return max(candidates, key=lambda t: _version_priority(t.version))

    def _schema_for(self, rt: ResourceType) -> _CustomSchema:
        gvr = (rt.group, rt.version, rt.plural)
        schema = self._schemas.get(gvr)
        if schema is None:
            schema = _custom_schema(
                rt.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            )
            self._schemas[gvr] = schema
        return schema

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
        name = str(_meta(obj).get("name") or _meta(obj).get("generateName") or "")
        causes: list[Obj] = []
        if rt.is_custom:
            schema = self._schema_for(rt)
            unknown: list[str] = []
            _prune(obj, schema.raw, "", unknown, root=True)
            if unknown and (strict_fields or self.strict_custom_fields):
                causes += [_cause(path, f'unknown field "{path}"') for path in unknown]
            else:
                warnings += [f'unknown field "{path}"' for path in unknown]
            apply_defaults(obj, schema.raw)
            causes += _schema_causes(_object_meta_validator(self.kube_version), {"metadata": obj["metadata"]})
            causes += _schema_causes(schema.validator, obj, old)
            if not causes:
                _check_cel(obj, old, schema.raw, "", causes, has_old=old is not None)
        else:
            validator = _kind_validator(self.kube_version, rt.api_version, rt.kind)
            if validator is None:
                raise ApiError(
                    500, f"no schema for {rt.api_version} {rt.kind} in Kubernetes {self.kube_version}"
                )
            causes += _schema_causes(validator, obj)
        causes += _metadata_causes(obj, rt)
        if rt.key == _CRD_KEY:
            causes += self._crd_causes(obj)
        if old is not None and _meta(old).get("deletionTimestamp"):
            added = [
                f for f in _meta(obj).get("finalizers") or [] if f not in (_meta(old).get("finalizers") or [])
            ]
            if added:
                causes.append(
                    _cause(
                        "metadata.finalizers",
                        f"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added}",
                        "FieldValueForbidden",
                    )
                )
        if causes:
            unique = list({json.dumps(c, sort_keys=True): c for c in causes}.values())
            texts = [f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in unique]
            summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
            raise ApiError(
                422,
                f'{rt.qualified_kind} "{name}" is invalid: {summary}',
                "Invalid",
                {"name": name, "group": rt.group, "kind": rt.kind, "causes": unique},
            )

    def _crd_causes(self, crd: Obj) -> list[Obj]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes: list[Obj] = []
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if _meta(crd).get("name") != expected:
            causes.append(
                _cause(
                    "metadata.name",
                    f'Invalid value: "{_meta(crd).get("name")}": must be spec.names.plural+"."+spec.group',
                )
            )
        versions = spec.get("versions") or []
        if sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                _cause(
                    "spec.versions", "Invalid value: must have exactly one version marked as storage version"
                )
            )
        for index, version in enumerate(versions):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                causes.append(
                    _cause(
                        f"spec.versions[{index}].schema.openAPIV3Schema",
                        "Required value: schemas are required",
                        "FieldValueRequired",
                    )
                )
                continue
            for path, rule in _iter_cel_rules(schema):
                try:
                    _cel_program(rule)
                except Exception as exc:  # celpy's parse errors
                    causes.append(
                        _cause(
                            f"spec.versions[{index}].schema.{path}",
                            f"Invalid value: compilation failed: {exc}",
                        )
                    )
        return causes

    def _namespace_usable(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        ns = self._store.get(_NS_KEY, {}).get(("", namespace))
        if ns is None:
            raise ApiError(
                404, f'namespaces "{namespace}" not found', details={"name": namespace, "kind": "namespaces"}
            )
        if _meta(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                "Forbidden",
            )

    def _create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Obj,
        warnings: list[str],
        *,
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> Obj:
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
                            _cause(
                                "metadata.name",
                                "Required value: name or generateName is required",
                                "FieldValueRequired",
                            )
                        ],
                    },
                )
            store = self._store.get(rt.key, {})
            while True:
                meta["name"] = str(prefix)[:58] + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
                if self._okey(rt, namespace, meta["name"]) not in store:
                    break
        name = meta["name"]
        if self._okey(rt, namespace, name) in self._store.get(rt.key, {}):
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
                body["status"] = _zero_status(self.kube_version, rt.api_version, rt.kind)
        if rt.key == _NS_KEY:
            body["spec"] = {"finalizers": ["kubernetes"]}
            body["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        self._admit(rt, body, None, warnings, strict_fields)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if rt.key == _CRD_KEY:
            body["status"] = self._crd_status(body)
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return body
        meta["resourceVersion"] = self._next_rv()
        self._store_obj(rt, body)
        self._emit(rt, "ADDED", body)
        if rt.key == _CRD_KEY:
            self._register_crd(body)
        return body

    def _replace(
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
        old = self._require(rt, namespace, name)
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
            return self._update(
                rt, old, new, "status", warnings, strict_fields=strict_fields, dry_run=dry_run
            )
        return self._update(
            rt, old, body, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run
        )

    def _update(
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
        if rt.key == _NS_KEY:
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        self._admit(rt, new, old, warnings, strict_fields)
        if rt.key == _CRD_KEY:
            status = self._crd_status(new)
            same_names = (old.get("status") or {}).get("acceptedNames") == status["acceptedNames"]
            new["status"] = copy.deepcopy(old["status"]) if same_names else status
        if new == old:
            return old  # a no-op write: no new resourceVersion, no event
        if self._content(rt, new) != self._content(rt, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        self._store_obj(rt, new)
        self._emit(rt, "MODIFIED", new, old)
        if rt.key == _CRD_KEY:
            self._register_crd(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._finalize(rt, new)
        return new

    @staticmethod
    def _content(rt: ResourceType, obj: Obj) -> Obj:
        skipped = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
        return {k: v for k, v in obj.items() if k not in skipped}

    def _delete(
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
                refs = [r for r in _meta(dep).get("ownerReferences", []) if r.get("uid") != meta["uid"]]
                self._system_update(dep_rt, dep, {"ownerReferences": refs})
        elif propagation == "Foreground":
            for dep_rt, dep in self._dependents(meta["uid"]):
                current = self._current(dep_rt, dep)
                if current is not None:
                    self._delete(dep_rt, current, "Foreground")
        if rt.key == _NS_KEY and meta.get("deletionTimestamp"):
            return obj
        if rt.key == _NS_KEY:
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["status"] = {"phase": "Terminating"}
            marked["metadata"]["resourceVersion"] = self._next_rv()
            self._store_obj(rt, marked)
            self._emit(rt, "MODIFIED", marked, obj)
            name = meta["name"]
            for key, objects in list(self._store.items()):
                kind = self._type_for_key(key)
                if kind.namespaced:
                    for (namespace, _), item in list(objects.items()):
                        current = self._current(kind, item)
                        if (
                            namespace == name
                            and current is not None
                            and not _meta(current).get("deletionTimestamp")
                        ):
                            self._delete(kind, current)
            self._maybe_finish_namespace(name)
            return self._store.get(rt.key, {}).get(("", name))
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["resourceVersion"] = self._next_rv()
            self._store_obj(rt, marked)
            self._emit(rt, "MODIFIED", marked, obj)
            return marked
        self._finalize(rt, obj)
        return None

    def _system_update(self, rt: ResourceType, obj: Obj, meta_changes: Obj) -> None:
        """A metadata change made by the emulator itself (garbage collector), without validation."""
        new = copy.deepcopy(obj)
        new["metadata"].update(meta_changes)
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._store_obj(rt, new)
        self._emit(rt, "MODIFIED", new, obj)

    def _current(self, rt: ResourceType, obj: Obj) -> Obj | None:
        return self._store.get(rt.key, {}).get((_meta(obj).get("namespace", ""), _meta(obj)["name"]))

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found: list[tuple[ResourceType, Obj]] = []
        for key, objects in self._store.items():
            for obj in objects.values():
                if any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences") or []):
                    found.append((self._type_for_key(key), obj))
        return found

    def _finalize(self, rt: ResourceType, obj: Obj) -> None:
        """Remove an object for good, then collect its dependents and finish its namespace."""
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        if okey not in self._store.get(rt.key, {}):
            return
        current = self._store[rt.key].pop(okey)
        self._uids.pop(meta["uid"], None)
        for applied_key in [k for k in self._applied if k[0] == rt.key and k[1] == okey]:
            del self._applied[applied_key]
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(rt, "DELETED", gone)
        if rt.key == _CRD_KEY:
            self._unregister_crd(current)
        for dep_rt, dep in self._dependents(meta["uid"]):
            dep_now = self._current(dep_rt, dep)
            if dep_now is None:
                continue
            refs = _meta(dep_now).get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != meta["uid"] and r.get("uid") in self._uids]
            if alive:
                self._system_update(
                    dep_rt, dep_now, {"ownerReferences": [r for r in refs if r.get("uid") != meta["uid"]]}
                )
            else:
                self._delete(dep_rt, dep_now)
        if rt.namespaced:
            self._maybe_finish_namespace(meta.get("namespace", ""))

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns = self._store.get(_NS_KEY, {}).get(("", namespace))
        if ns is None or not _meta(ns).get("deletionTimestamp") or _meta(ns).get("finalizers"):
            return
        for key, objects in self._store.items():
            if key != _NS_KEY and any(ns_name == namespace for ns_name, _ in objects):
                return
        self._finalize(self._type_for_key(_NS_KEY), ns)

    # ----------------------------------------------------------------------------------------------
    # CRDs
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _crd_status(crd: Obj) -> Obj:
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        now = _now()
        storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
        return {
            "acceptedNames": names,
            "storedVersions": storage,
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
        }

    def _register_crd(self, crd: Obj) -> None:
        crd_name = _meta(crd)["name"]
        for gvr in [g for g, t in self._types.items() if t.crd_name == crd_name]:
            del self._types[gvr]
            self._schemas.pop(gvr, None)
        spec = crd["spec"]
        names = spec["names"]
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            subresources = version.get("subresources") or {}
            scale = subresources.get("scale") or {}
            rt = ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale_subresource="scale" in subresources,
                crd_name=crd_name,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                scale_paths=(
                    str(scale.get("specReplicasPath", ".spec.replicas")).lstrip("."),
                    str(scale.get("statusReplicasPath", ".status.replicas")).lstrip("."),
                    str(scale.get("labelSelectorPath", ".status.selector")).lstrip("."),
                ),
                singular_name=str(names.get("singular") or ""),
            )
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def _unregister_crd(self, crd: Obj) -> None:
        crd_name = _meta(crd)["name"]
        keys = {t.key for t in self._types.values() if t.crd_name == crd_name}
        for key in keys:
            rt = self._type_for_key(key)
            for obj in list(self._store.get(key, {}).values()):
                self._finalize(rt, obj)
        for gvr in [g for g, t in self._types.items() if t.crd_name == crd_name]:
            del self._types[gvr]
            self._schemas.pop(gvr, None)

    # ----------------------------------------------------------------------------------------------
    # HTTP
    # ----------------------------------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own Request._parse() fails on some valid Kubernetes paths (e.g. `/api/v1/namespaces`),
        # so record the request without its Kubernetes-specific parsing; routing is done in _route().
        body = await raw_request.read()
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode(errors="replace"),
        )
        self._requests.append(request)
        return await self._handle(request)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None  # always set for requests arriving over HTTP
        record = RequestRecord(
            method=raw.method.upper(), path=raw.path, query=dict(raw.query), content_type=_content_type(raw)
        )
        with self._state:
            self.request_log.append(record)
            fault = next((f for f in self._faults if f.matches(record)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None:
                record.fault = True
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                raise ApiError(
                    fault.status,
                    fault.message or f"injected fault ({fault.status})",
                    fault.reason,
                    headers=headers,
                )
            response = await self._route(raw, request.body, record)
        except ApiError as exc:
            response = aiohttp.web.json_response(exc.status(), status=exc.code, headers=exc.headers)
        except Exception as exc:
            trace = traceback.format_exc()
            logger.error("emulator failure on %s %s: %s", record.method, record.path, trace)
            with self._state:
                self.internal_errors.append(trace)
            response = aiohttp.web.json_response(
                ApiError(500, f"emulator failure: {exc!r}").status(), status=500
            )
        if record.status is None:
            record.status = response.status
        return response

    def _json(self, body: Any, status: int = 200, warnings: Sequence[str] = ()) -> aiohttp.web.Response:
        response = aiohttp.web.json_response(body, status=status)
        for warning in warnings:
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        if warnings:
            with self._state:
                self.warnings.extend(warnings)
        return response

    async def _route(
        self, raw: aiohttp.web.BaseRequest, body: bytes, record: RequestRecord
    ) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        method = record.method
        segments = [s for s in path.split("/") if s]
        if method == "GET":
            if path == "/":
                return self._json({"paths": self._root_paths()})
            if path == "/version":
                return self._json(self._version_info())
            if path in ("/healthz", "/livez", "/readyz"):
                return aiohttp.web.Response(text="ok")
        if not segments or segments[0] not in ("api", "apis"):
            raise ApiError(404, "the server could not find the requested resource")
        if segments[0] == "api":
            if len(segments) == 1:
                return self._json(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self._host}:{self.port}"}
                        ],
                    }
                )
            group, version, rest = "", segments[1], segments[2:]
        else:
            if len(segments) == 1:
                return self._json(self._api_group_list())
            group = segments[1]
            if len(segments) == 2:
                return self._json(self._api_group(group))
            version, rest = segments[2], segments[3:]
        if not rest:
            return self._json(self._api_resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        with self._state:
            rt = self._types.get((group, version, rest[0]))
        if rt is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource not in (None, "status", "scale") or (
            subresource == "scale" and not rt.scale_subresource
        ):
            raise ApiError(404, "the server could not find the requested resource")
        if subresource == "status" and not rt.status_subresource:
            raise ApiError(404, "the server could not find the requested resource")
        if name is not None and rt.namespaced and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        query = record.query
        dry_run = query.get("dryRun") == "All"
        strict_fields = query.get("fieldValidation") == "Strict"
        warnings: list[str] = []

        if method == "GET" and query.get("watch") in ("true", "1"):
            field_selector = query.get("fieldSelector")
            if name is not None:
                field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
            selection = _Filter.make(namespace, query.get("labelSelector"), field_selector)
            return await self._serve_watch_stream(raw, rt, selection, query, record)
        if method == "GET":
            if name is None:
                selection = _Filter.make(namespace, query.get("labelSelector"), query.get("fieldSelector"))
                return self._json(self._list(rt, selection, query))
            with self._state:
                obj = self._require(rt, namespace, name)
                if subresource == "scale":
                    return self._json(self._scale_of(rt, obj))
                return self._json(self._present(rt, obj))
        if method == "POST":
            if name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            data = self._parse_json(body, record.content_type)
            with self._state:
                created = self._create(
                    rt, namespace, data, warnings, strict_fields=strict_fields, dry_run=dry_run
                )
                return self._json(self._present(rt, created), 201, warnings)
        if method == "PUT" and name is not None:
            data = self._parse_json(body, record.content_type)
            with self._state:
                if subresource == "scale":
                    return self._json(self._write_scale(rt, namespace, name, data, None))
                updated = self._replace(
                    rt,
                    namespace,
                    name,
                    data,
                    subresource,
                    warnings,
                    strict_fields=strict_fields,
                    dry_run=dry_run,
                )
                return self._json(self._present(rt, updated), 200, warnings)
        if method == "PATCH" and name is not None:
            return self._patch(raw, body, rt, namespace, name, subresource, query, warnings)
        if method == "DELETE":
            options = self._delete_options(body, query)
            with self._state:
                if name is None:
                    selection = _Filter.make(
                        namespace, query.get("labelSelector"), query.get("fieldSelector")
                    )
                    return self._json(self._delete_collection(rt, selection, options, dry_run))
                obj = self._require(rt, namespace, name)
                self._check_preconditions(rt, obj, options)
                remaining = self._delete(
                    rt, obj, str(options.get("propagationPolicy") or "Background"), dry_run=dry_run
                )
                if remaining is not None:
                    return self._json(self._present(rt, remaining))
                return self._json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    }
                )
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _parse_json(body: bytes, content_type: str) -> Obj:
        if content_type == _PROTOBUF:  # kubectl's typed generators (`kubectl create namespace x`) send it
            return decode_protobuf(body)
        if content_type not in ("", "application/json", "application/yaml", "*/*"):
            raise ApiError(
                415,
                f"the body of the request was in an unknown format ({content_type}) - accepted media types include: "
                "application/json, application/yaml",
            )
        try:
            data = (
                yaml.safe_load(body or b"null")
                if content_type == "application/yaml"
                else json.loads(body or b"null")
            )
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        return data

    def _patch(
        self,
        raw: aiohttp.web.BaseRequest,
        body: bytes,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        query: Mapping[str, str],
        warnings: list[str],
    ) -> aiohttp.web.StreamResponse:
        content_type = _content_type(raw)
        dry_run = query.get("dryRun") == "All"
        strict_fields = query.get("fieldValidation") == "Strict"
        if content_type == "application/apply-patch+yaml":
            try:
                data = yaml.safe_load(body.decode() or "null")
            except yaml.YAMLError as exc:
                raise ApiError(400, f"error decoding YAML: {exc}") from exc
            if not isinstance(data, dict):
                raise ApiError(400, "the apply configuration must be an object")
            manager = query.get("fieldManager")
            if not manager:
                raise ApiError(400, "PATCH, application/apply-patch+yaml requests must supply fieldManager")
            with self._state:
                return self._server_side_apply(
                    rt,
                    namespace,
                    name,
                    subresource,
                    data,
                    manager,
                    warnings,
                    strict_fields=strict_fields,
                    dry_run=dry_run,
                )
        if content_type not in (
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/strategic-merge-patch+json",
        ) or (content_type == "application/strategic-merge-patch+json" and rt.is_custom):
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                f"{'' if rt.is_custom else ', application/strategic-merge-patch+json'}",
            )
        try:
            patch = json.loads(body or b"null")
        except ValueError as exc:
            raise ApiError(400, f"error decoding patch: {exc}") from exc
        with self._state:
            old = self._require(rt, namespace, name)
            if subresource == "scale":
                return self._json(self._write_scale(rt, namespace, name, None, (content_type, patch)))
            base = copy.deepcopy(old)
            if content_type == "application/json-patch+json":
                new = json_patch(base, patch)
            elif content_type == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    raise ApiError(400, "a merge patch must be a JSON object")
                new = merge_patch(base, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "a strategic merge patch must be a JSON object")
                resolve = _resolver(self.kube_version)
                new = strategic_merge_patch(
                    base, patch, _kind_schema(self.kube_version, rt.api_version, rt.kind), resolve
                )
            if not isinstance(new, dict):
                raise ApiError(422, "the patch did not produce an object", "Invalid")
            updated = self._update(
                rt, old, new, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run
            )
            return self._json(self._present(rt, updated), 200, warnings)

    def _server_side_apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        data: Obj,
        manager: str,
        warnings: list[str],
        *,
        strict_fields: bool,
        dry_run: bool,
    ) -> aiohttp.web.StreamResponse:
        if not data.get("apiVersion") or not data.get("kind"):
            raise ApiError(400, "apiVersion and kind must be set in an apply configuration")
        if _meta(data).get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL")
        okey = self._okey(rt, namespace, name)
        applied_key = (rt.key, okey, manager, subresource or "")
        old = self._store.get(rt.key, {}).get(okey)
        if old is None:
            if subresource is not None:
                raise ApiError(
                    404,
                    f'{rt.qualified} "{name}" not found',
                    details={"name": name, "group": rt.group, "kind": rt.plural},
                )
            body = copy.deepcopy(data)
            body.setdefault("metadata", {})["name"] = name
            created = self._create(
                rt, namespace, body, warnings, strict_fields=strict_fields, dry_run=dry_run
            )
            if not dry_run:
                self._applied[applied_key] = copy.deepcopy(data)
            return self._json(self._present(rt, created), 201, warnings)
        if rt.is_custom:
            schema: Any = dict(rt.schema or {})
            schema["properties"] = {
                **(schema.get("properties") or {}),
                "metadata": {"$ref": _OBJECT_META_REF},
            }
        else:
            schema = _kind_schema(self.kube_version, rt.api_version, rt.kind)
        resolve = _resolver(self.kube_version)
        current = copy.deepcopy(old)
        before = self._applied.get(applied_key)
        if before is not None:
            current = _apply_forget(current, before, data, schema, resolve)
        new = _apply_merge(current, data, schema, resolve)
        updated = self._update(
            rt, old, new, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run
        )
        if not dry_run:
            self._applied[applied_key] = copy.deepcopy(data)
        return self._json(self._present(rt, updated), 200, warnings)

    def _scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        spec_path, status_path, selector_path = rt.scale_paths
        meta = obj["metadata"]
        selector = _dig(obj, selector_path)
        if selector is None and not rt.is_custom:
            match = _dig(obj, "spec.selector.matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": _dig(obj, spec_path) or 0},
            "status": {"replicas": _dig(obj, status_path) or 0, "selector": selector or ""},
        }

    def _write_scale(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj | None,
        patch: tuple[str, Any] | None,
    ) -> Obj:
        old = self._require(rt, namespace, name)
        scale = self._scale_of(rt, old)
        if patch is not None:
            content_type, document = patch
            scale = (
                json_patch(scale, document)
                if content_type == "application/json-patch+json"
                else merge_patch(scale, document)
            )
        elif body is not None:
            scale = body
        replicas = _dig(scale, "spec.replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}',
                "Invalid",
            )
        new = copy.deepcopy(old)
        node = new
        *parents, last = rt.scale_paths[0].split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = replicas
        sent_rv = _meta(scale).get("resourceVersion")
        if sent_rv:
            new["metadata"]["resourceVersion"] = sent_rv
        return self._scale_of(rt, self._update(rt, old, new, None, []))

    @staticmethod
    def _delete_options(body: bytes, query: Mapping[str, str]) -> Obj:
        options: Obj = {}
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                raise ApiError(400, f"invalid DeleteOptions: {exc}") from exc
            if isinstance(parsed, dict):
                options.update(parsed)
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if options.get("orphanDependents") is True:
            options.setdefault("propagationPolicy", "Orphan")
        return options

    def _check_preconditions(self, rt: ResourceType, obj: Obj, options: Obj) -> None:
        pre = options.get("preconditions") or {}
        meta = obj["metadata"]
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field) and str(pre[field]) != str(meta[field]):
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on {rt.qualified} "{meta["name"]}": Precondition failed: '
                    f"{label} in precondition: {pre[field]}, {label} in object meta: {meta[field]}",
                    "Conflict",
                    {"name": meta["name"], "group": rt.group, "kind": rt.plural},
                )

    def _delete_collection(self, rt: ResourceType, selection: _Filter, options: Obj, dry_run: bool) -> Obj:
        deleted: list[Obj] = []
        for _, obj in sorted(self._store.get(rt.key, {}).items()):
            if selection.matches(obj):
                deleted.append(self._present(rt, obj))
                current = self._store.get(rt.key, {}).get(
                    (_meta(obj).get("namespace", ""), _meta(obj)["name"])
                )
                if current is not None:
                    self._delete(
                        rt, current, str(options.get("propagationPolicy") or "Background"), dry_run=dry_run
                    )
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": deleted,
        }

    def _list(self, rt: ResourceType, selection: _Filter, query: Mapping[str, str]) -> Obj:
        with self._state:
            items = [(k, o) for k, o in sorted(self._store.get(rt.key, {}).items()) if selection.matches(o)]
            rv = str(self._rv)
        start_after: list[str] | None = None
        if query.get("continue"):
            try:
                start_after = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
            except (ValueError, binascii.Error) as exc:
                raise ApiError(400, "continue key is not valid") from exc
            items = [(k, o) for k, o in items if list(k) > list(start_after or [])]
        meta: Obj = {"resourceVersion": rv}
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(list(items[-1][0])).encode()).decode()
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": [self._present(rt, o) for _, o in items],
        }

    async def _serve_watch_stream(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        selection: _Filter,
        query: Mapping[str, str],
        record: RequestRecord,
    ) -> aiohttp.web.StreamResponse:
        loop = asyncio.get_running_loop()
        watcher = _Watcher(loop=loop, queue=asyncio.Queue())
        since = query.get("resourceVersion") or ""
        backlog: list[_Event] = []
        expired: str | None = None
        with self._state:
            if self._closing:
                raise ApiError(503, "the emulator is shutting down")
            if since and since != "0":
                try:
                    since_rv = int(since)
                except ValueError as exc:
                    raise ApiError(400, f"invalid resource version: {since!r}") from exc
                if since_rv < self._expired_below.get(rt.key, 0) - 1:
                    expired = f"too old resource version: {since_rv} ({self._expired_below[rt.key] - 1})"
                else:
                    backlog = [e for e in self._history.get(rt.key, []) if e.rv > since_rv]
            else:
                backlog = [
                    _Event(rv=int(_meta(o)["resourceVersion"]), type="ADDED", obj=o, old=None)
                    for _, o in sorted(self._store.get(rt.key, {}).items())
                ]
            if expired is None:
                self._watchers.setdefault(rt.key, set()).add(watcher)
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            record.status = 200
            if expired is not None:
                error = ApiError(410, expired, "Expired").status()
                await response.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                await response.write_eof()
                return response
            timeout = float(query.get("timeoutSeconds") or 0)
            deadline = time.monotonic() + timeout if timeout > 0 else None
            for event in backlog:
                await self._write_event(response, rt, selection, event)
            while True:
                wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    next_event = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    if raw.transport is None or raw.transport.is_closing():
                        break
                    continue
                if next_event is None:
                    break
                await self._write_event(response, rt, selection, next_event)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            with self._state:
                self._watchers.get(rt.key, set()).discard(watcher)
        return response

    async def _write_event(
        self, response: aiohttp.web.StreamResponse, rt: ResourceType, selection: _Filter, event: _Event
    ) -> None:
        now_matches = selection.matches(event.obj)
        kind = event.type
        if kind == "MODIFIED" and event.old is not None:
            was_matching = selection.matches(event.old)
            if now_matches and not was_matching:
                kind = "ADDED"
            elif was_matching and not now_matches:
                kind = "DELETED"
            elif not now_matches:
                return
        elif not now_matches:
            return
        line = json.dumps({"type": kind, "object": self._present(rt, event.obj)})
        await response.write(line.encode() + b"\n")

    # ----------------------------------------------------------------------------------------------
    # Discovery
    # ----------------------------------------------------------------------------------------------

    def _version_info(self) -> Obj:
        major, minor = [*self.kube_version.split("."), "0"][:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{major}.{minor}.0-emulator",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _group_versions(self) -> dict[str, list[str]]:
        with self._state:
            groups: dict[str, set[str]] = {}
            for rt in self._types.values():
                groups.setdefault(rt.group, set()).add(rt.version)
        return {g: sorted(vs, key=_version_priority, reverse=True) for g, vs in groups.items()}

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz"}
        for group, versions in self._group_versions().items():
            if group:
                paths.add(f"/apis/{group}")
                paths.update(f"/apis/{group}/{v}" for v in versions)
        return sorted(paths)

    @staticmethod
    def _group_entry(group: str, versions: list[str]) -> Obj:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def _api_group_list(self) -> Obj:
        groups = [self._group_entry(g, vs) for g, vs in sorted(self._group_versions().items()) if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _api_group(self, group: str) -> Obj:
        versions = self._group_versions().get(group) if group else None
        if not versions:
            raise ApiError(404, "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group, versions)}

    def _api_resource_list(self, group: str, version: str) -> Obj:
        with self._state:
            types = [t for t in self._types.values() if t.group == group and t.version == version]
        if not types:
            raise ApiError(404, "the server could not find the requested resource")
        resources = [entry for rt in sorted(types, key=lambda t: t.plural) for entry in rt.discovery()]
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }
