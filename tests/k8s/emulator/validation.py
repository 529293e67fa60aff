"""Validation of every written object, answered 422 Invalid with Kubernetes-style causes.

Built-in kinds against the upstream schemas in strict mode; custom resources against their CRD's
schema (pruned and defaulted first), ObjectMeta and the CRD's CEL rules; object names, label and
annotation keys and values for all kinds; CRDs' names, storage version and CEL compilation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from jsonschema.exceptions import ValidationError as SchemaValidationError  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator.cel import cel_program, check_cel, iter_cel_rules
from tests.k8s.emulator.errors import ApiError, cause
from tests.k8s.emulator.objects import Obj, format_path, join_path, meta_of
from tests.k8s.emulator.resources import CRD_KEY, ResourceType
from tests.k8s.emulator.schemas import (
    CustomSchema,
    apply_defaults,
    kind_validator,
    object_meta_validator,
    prune,
)

_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE: Final = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_LABEL_RE: Final = re.compile(_DNS_LABEL)
_DNS1035_LABEL_RE: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME_RE: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def admit(
    rt: ResourceType,
    obj: Obj,
    old: Obj | None,
    warnings: list[str],
    *,
    kube_version: str,
    schema: CustomSchema | None,
    strict_fields: bool,
) -> None:
    """Validate (and for custom resources prune and default) a complete object, or raise 422.

    `schema` is the CRD version's schema of a custom resource (None for a built-in kind); with
    `strict_fields` its unknown fields are refused, else pruned with a warning.
    """
    name = str(meta_of(obj).get("name") or meta_of(obj).get("generateName") or "")
    causes: list[Obj] = []
    if schema is not None:
        unknown: list[str] = []
        prune(obj, schema.raw, "", unknown, root=True)
        if unknown and strict_fields:
            causes += [cause(path, f'unknown field "{path}"') for path in unknown]
        else:
            warnings += [f'unknown field "{path}"' for path in unknown]
        apply_defaults(obj, schema.raw)
        causes += schema_causes(object_meta_validator(kube_version), {"metadata": obj["metadata"]})
        causes += schema_causes(schema.validator, obj, old)
        if not causes:
            check_cel(obj, old, schema.raw, "", causes, has_old=old is not None)
    else:
        validator = kind_validator(kube_version, rt.api_version, rt.kind)
        if validator is None:
            raise ApiError(500, f"no schema for {rt.api_version} {rt.kind} in Kubernetes {kube_version}")
        causes += schema_causes(validator, obj)
    causes += metadata_causes(obj, rt)
    if rt.key == CRD_KEY:
        causes += crd_causes(obj)
    if old is not None and meta_of(old).get("deletionTimestamp"):
        added = [
            f for f in meta_of(obj).get("finalizers") or [] if f not in (meta_of(old).get("finalizers") or [])
        ]
        if added:
            causes.append(
                cause(
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


_MISSING: Final = object()


def _at(obj: Any, path: Sequence[Any]) -> Any:
    for part in path:
        in_dict = isinstance(obj, dict) and part in obj
        in_list = isinstance(obj, list) and isinstance(part, int) and 0 <= part < len(obj)
        if not (in_dict or in_list):
            return _MISSING
        obj = obj[part]
    return obj


def schema_causes(validator: Any, obj: Obj, old: Obj | None = None) -> list[Obj]:
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
        path = format_path(error.absolute_path)
        kind = error.validator
        if kind == "required":
            missing = [
                name
                for name in error.validator_value
                if isinstance(error.instance, dict) and name not in error.instance
            ]
            for name in missing or ["?"]:
                causes.append(cause(join_path(path, name), "Required value", "FieldValueRequired"))
        elif kind == "additionalProperties" and isinstance(error.instance, dict):
            known = set((error.schema.get("properties") or {}).keys())
            for name in error.instance:
                if name not in known:
                    causes.append(cause(join_path(path, name), f'unknown field "{join_path(path, name)}"'))
        elif kind == "enum":
            supported = ", ".join(json.dumps(v) for v in error.validator_value)
            causes.append(
                cause(
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
                cause(
                    path,
                    f"Invalid value: {json.dumps(error.instance)}: {path or 'body'} in body must be of type {wanted}",
                    "FieldValueTypeInvalid",
                )
            )
        elif kind in ("oneOf", "anyOf"):
            causes.append(
                cause(
                    path,
                    f"Invalid value: {json.dumps(error.instance)}: {error.message}",
                    "FieldValueTypeInvalid",
                )
            )
        else:
            causes.append(
                cause(path, f"Invalid value: {json.dumps(error.instance, default=str)}: {error.message}")
            )
    return causes


# --------------------------------------------------------------------------------------------------
# Metadata checks common to all kinds
# --------------------------------------------------------------------------------------------------


def _name_causes(field: str, name: str, rule: str, *, prefix: bool = False) -> list[Obj]:
    shown = json.dumps(name)
    check = name.rstrip("-") if prefix else name
    if rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            return [cause(field, f"Invalid value: {shown}: may not contain '/' or '%' or be '.' or '..'")]
        return []
    limit = 253 if rule == "subdomain" else 63
    if len(check) > limit:
        return [cause(field, f"Invalid value: {shown}: must be no more than {limit} characters")]
    if rule == "subdomain" and not _DNS_SUBDOMAIN_RE.fullmatch(check):
        return [
            cause(
                field,
                f"Invalid value: {shown}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    if rule == "label" and not _DNS_LABEL_RE.fullmatch(check):
        return [
            cause(
                field,
                f"Invalid value: {shown}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
                "characters or '-', and must start and end with an alphanumeric character",
            )
        ]
    if rule == "label1035" and not _DNS1035_LABEL_RE.fullmatch(check):
        return [
            cause(
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
    return [cause(field, f"Invalid value: {json.dumps(key)}: {p}") for p in problems]


def metadata_causes(obj: Obj, rt: ResourceType) -> list[Obj]:
    meta = meta_of(obj)
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
                    cause(
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
                cause("metadata.annotations", "Too long: must have at most 262144 bytes", "FieldValueTooLong")
            )
    return causes


def crd_causes(crd: Obj) -> list[Obj]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Obj] = []
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if meta_of(crd).get("name") != expected:
        causes.append(
            cause(
                "metadata.name",
                f'Invalid value: "{meta_of(crd).get("name")}": must be spec.names.plural+"."+spec.group',
            )
        )
    versions = spec.get("versions") or []
    if sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            cause("spec.versions", "Invalid value: must have exactly one version marked as storage version")
        )
    for index, version in enumerate(versions):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            causes.append(
                cause(
                    f"spec.versions[{index}].schema.openAPIV3Schema",
                    "Required value: schemas are required",
                    "FieldValueRequired",
                )
            )
            continue
        for path, rule in iter_cel_rules(schema):
            try:
                cel_program(rule)
            except Exception as exc:  # celpy's parse errors
                causes.append(
                    cause(
                        f"spec.versions[{index}].schema.{path}",
                        f"Invalid value: compilation failed: {exc}",
                    )
                )
    return causes
