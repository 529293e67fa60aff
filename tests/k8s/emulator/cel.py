"""`x-kubernetes-validations` rules of CRD schemas, evaluated with cel-python.

`self` is the value at the rule's node; `oldSelf` is bound on update only (transition rules are
skipped on create), and rules are not re-checked on values an update left unchanged (ratcheting).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, cast

import celpy
import celpy.adapter
import celpy.evaluation

from tests.k8s.emulator.errors import CAUSE_PREFIX, cause
from tests.k8s.emulator.objects import Obj, join_path
from tests.k8s.emulator.schemas import props_of

_CEL_ENV: Final = celpy.Environment()


@functools.lru_cache(maxsize=512)
def cel_program(rule: str) -> celpy.Runner:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _cel_eval(rule: str, activation: Mapping[str, Any]) -> tuple[Any, str | None]:
    try:
        result = cel_program(rule).evaluate(cast(Any, dict(activation)))
    except Exception as exc:  # celpy raises CELEvalError and assorted Python errors
        return None, f"{type(exc).__name__}: {exc}"
    if isinstance(result, celpy.evaluation.CELEvalError):
        return None, str(result)
    return result, None


def iter_cel_rules(schema: Any) -> Iterator[tuple[str, str]]:
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


def check_cel(value: Any, old: Any, schema: Any, path: str, causes: list[Obj], *, has_old: bool) -> None:
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
                cause(field, f"Invalid value: {shown}: rule {text!r} could not be evaluated: {error}")
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
        prefix = CAUSE_PREFIX.get(reason, "Invalid value")
        text_out = (
            f"{prefix}: {shown}: {message}" if reason == "FieldValueInvalid" else f"{prefix}: {message}"
        )
        causes.append(cause(field, text_out, reason))
    if isinstance(value, dict):
        props = props_of(schema)
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                continue
            old_item = old.get(key) if isinstance(old, dict) else None
            check_cel(
                item,
                old_item,
                sub,
                join_path(path, key),
                causes,
                has_old=has_old and isinstance(old, dict) and key in old,
            )
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            check_cel(item, None, schema["items"], join_path(path, index), causes, has_old=False)
