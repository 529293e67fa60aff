"""Schemas: the upstream schemas of built-in kinds (from kubernetes-validate), and CRD schemas.

A CRD's `openAPIV3Schema` is converted for `OAS30Validator`; unknown fields are pruned by it and
its defaults applied, as the API server does.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import kubernetes_validate.utils  # type: ignore[import-untyped,unused-ignore]
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource

from tests.k8s.emulator.objects import Obj, join_path

DEFAULT_KUBE_VERSION: Final = "1.33"
OBJECT_META_REF: Final = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

# --------------------------------------------------------------------------------------------------
# Upstream schemas of built-in kinds
# --------------------------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


@functools.cache
def schema_dir(kube_version: str) -> str:
    wanted = _version_tuple(kube_version)
    versions: list[str] = [str(v) for v in kubernetes_validate.utils.all_versions()]
    eligible = sorted({v for v in versions if _version_tuple(v) <= wanted}, key=_version_tuple)
    if not eligible:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kube_version}")
    return f"kubernetes-json-schema/v{eligible[-1]}-local-strict"


def _schema_file(kube_version: str, filename: str) -> Obj:
    return cast(
        Obj,
        kubernetes_validate.utils.schema_contents(f"{schema_dir(kube_version)}/{filename}", kube_version),
    )


@functools.cache
def _definitions(kube_version: str) -> Obj:
    return _schema_file(kube_version, "_definitions.json")


@functools.cache
def _registry(kube_version: str) -> Registry[Any]:
    return Resource.from_contents(_definitions(kube_version)) @ Registry()


@functools.cache
def kind_schema(kube_version: str, api_version: str, kind: str) -> Obj | None:
    # The same file naming as kubernetes_validate.validate(): rbac.authorization.k8s.io/v1 -> rbac-v1.
    name = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        return _schema_file(kube_version, f"{kind.lower()}-{name}.json")
    except FileNotFoundError:
        return None


@functools.cache
def kind_validator(kube_version: str, api_version: str, kind: str) -> Any:
    """The validator `kubernetes_validate.validate(..., strict=True)` builds, cached and yielding all errors."""
    schema = kind_schema(kube_version, api_version, kind)
    if schema is None:
        return None
    registry = Resource.from_contents(schema) @ _registry(kube_version)
    return Draft202012Validator(schema, registry=registry)


@functools.cache
def object_meta_validator(kube_version: str) -> Any:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"metadata": {"$ref": OBJECT_META_REF}},
    }
    return Draft202012Validator(schema, registry=_registry(kube_version))


def zero_status(kube_version: str, api_version: str, kind: str) -> Obj:
    """A new object's status as a Go server writes it: the required (non-omitempty) fields at zero values."""
    resolve = resolver(kube_version)
    status = child_schema(kind_schema(kube_version, api_version, kind), "status", resolve)
    zeros: Obj = {}
    for name in status.get("required") or []:
        declared = child_schema(status, str(name), resolve).get("type", "object")
        types = [t for t in ([declared] if isinstance(declared, str) else declared) if t != "null"]
        zero: Any = {"integer": 0, "number": 0, "string": "", "boolean": False, "array": []}.get(
            types[0] if types else "", {}
        )
        zeros[str(name)] = zero
    return zeros


def resolver(kube_version: str) -> Callable[[Any], Obj]:
    defs: Obj = _definitions(kube_version)["$defs"]

    def resolve(node: Any) -> Obj:
        while isinstance(node, dict) and "$ref" in node:
            node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
        return node if isinstance(node, dict) else {}

    return resolve


def child_schema(schema: Any, key: str, resolve: Callable[[Any], Obj]) -> Obj:
    node = resolve(schema)
    props = node.get("properties")
    if isinstance(props, dict) and key in props:
        return resolve(props[key])
    extra = node.get("additionalProperties")
    return resolve(extra) if isinstance(extra, dict) else {}


def items_schema(schema: Any, resolve: Callable[[Any], Obj]) -> Obj:
    return resolve(resolve(schema).get("items"))


def props_of(schema: Mapping[str, Any]) -> Obj:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


# --------------------------------------------------------------------------------------------------
# Custom resource schemas: OAS 3.0 conversion, pruning, defaulting
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


def prune(value: Any, schema: Any, path: str, unknown: list[str], *, root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = props_of(schema)
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
                unknown.append(join_path(path, key))
                del value[key]
            elif not (root and key == "metadata"):
                prune(value[key], sub, join_path(path, key), unknown)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            prune(item, schema["items"], join_path(path, index), unknown)


def apply_defaults(value: Any, schema: Any) -> None:
    """Set schema `default`s of absent properties wherever the parent object is present."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = props_of(schema)
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


@dataclasses.dataclass(frozen=True, eq=False)
class CustomSchema:
    raw: Obj  # openAPIV3Schema as written in the CRD
    validator: Any  # OAS30Validator on the converted schema


def custom_schema(raw: Obj) -> CustomSchema:
    converted = cast(Obj, to_oas30(raw))
    converted.setdefault("type", "object")
    props = converted.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return CustomSchema(raw=raw, validator=OAS30Validator(converted, format_checker=oas30_format_checker))
