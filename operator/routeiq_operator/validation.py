"""Offline validation of custom resources against their CRDs, as the API server would do it, and
`load(Model, body)`: the one way a controller turns an object into its typed model.

Defaults are applied first, then the OpenAPI v3 schema is checked (openapi-schema-validator,
OAS 3.0), then every CEL rule (`x-kubernetes-validations`) is evaluated where it stands in the
schema, with `self` bound to the value there. Standard CEL only: the rules RouteIQ writes use
no Kubernetes extension functions, and a rule that fails to evaluate is reported, not skipped.
Then the typed model's own validators run (rules CEL cannot express, such as no literal
credential anywhere in the LiteLLM settings).

Every message names the path and the rule, never the value: a value that broke a rule may be
a credential (a `masterKey` written as a string, a URL with a password), and these messages end
up in status conditions, Events, the operator's log and CI logs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from pydantic import BaseModel, ValidationError

from routeiq_operator.schema import custom_resource_definition

__all__ = [
    "NESTED_VIOLATIONS",
    "InvalidSpec",
    "Violation",
    "apply_defaults",
    "check",
    "load",
    "model_violations",
    "openapi_schema",
    "validate_custom_resource",
]


# the error type a model validator raises (pydantic_core.PydanticCustomError) to report several
# violations at once: its context holds "violations", (path relative to the model, rule) pairs
NESTED_VIOLATIONS = "routeiq_nested_violations"


@dataclass(frozen=True, slots=True)
class Violation:
    path: str  # e.g. spec.autoscaling.minReplicas
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


def openapi_schema(crd: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's served version (the storage one when not named)."""
    versions = crd["spec"]["versions"]
    chosen = next((v for v in versions if v["name"] == version), None) if version else None
    chosen = chosen or next(v for v in versions if v.get("storage"))
    schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """A copy of `value` with the schema's defaults filled in, as the API server does on write."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                _default(value[name], child)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default(item, schema["items"])


def _for_openapi(schema: Any) -> Any:
    """The schema as plain OpenAPI 3.0: no x-kubernetes-* keys, int-or-string as anyOf."""
    if isinstance(schema, list):
        return [_for_openapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-kubernetes-int-or-string"):
        rest = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        return {**_for_openapi(rest), "anyOf": [{"type": "integer"}, {"type": "string"}]}
    return {key: _for_openapi(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}


@lru_cache(maxsize=256)
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _dotted(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def _rule_message(rule: Mapping[str, Any]) -> str:
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


def _schema_message(error: Any) -> str:
    """A schema error as its rule, without the value (jsonschema's own messages quote it)."""
    rule, expected = error.validator, error.validator_value
    if rule == "type":
        return f"must be of type {expected}"
    if rule == "required":
        missing = [
            name for name in expected if isinstance(error.instance, dict) and name not in error.instance
        ]
        return f"{', '.join(missing) or 'a field'} is required"
    if rule == "enum":
        return f"must be one of {', '.join(str(item) for item in expected)}"
    if rule == "pattern":
        return f"must match the pattern {expected}"
    texts = {
        "minLength": f"must be at least {expected} character(s) long",
        "maxLength": f"must be at most {expected} character(s) long",
        "minimum": f"must be at least {expected}",
        "maximum": f"must be at most {expected}",
        "exclusiveMinimum": f"must be more than {expected}",
        "exclusiveMaximum": f"must be less than {expected}",
        "minItems": f"must have at least {expected} item(s)",
        "maxItems": f"must have at most {expected} item(s)",
        "minProperties": f"must have at least {expected} entr(y/ies)",
        "maxProperties": f"must have at most {expected} entr(y/ies)",
        "uniqueItems": "items must be unique",
        "format": f"must be a valid {expected}",
        "additionalProperties": "unknown field (not in the schema)",
        "nullable": "must not be null",
    }
    return texts.get(str(rule), f"breaks the schema's {rule} rule")


def _cel_violations(value: Any, schema: Mapping[str, Any], path: list[str | int]) -> Iterator[Violation]:
    for rule in schema.get("x-kubernetes-validations") or []:
        expression = rule["rule"]
        if "oldSelf" in expression:
            continue  # transition rules need the stored object; offline there is none
        try:
            result = _program(expression).evaluate({"self": json_to_cel(value)})
        except CELEvalError:
            # the evaluator's text may quote the value; the rule's own message is what the user needs
            yield Violation(_dotted(path), f"{_rule_message(rule)} (the rule could not be evaluated)")
            continue
        if isinstance(result, CELEvalError):
            yield Violation(_dotted(path), f"{_rule_message(rule)} (the rule could not be evaluated)")
        elif not bool(result):
            yield Violation(_dotted(path), _rule_message(rule))
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                yield from _cel_violations(value[name], child, [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _cel_violations(item, schema["items"], [*path, index])


def _unknown_fields(value: Any, schema: Mapping[str, Any], path: list[str | int]) -> Iterator[Violation]:
    """Fields the schema does not declare: the API server would prune them, kubectl's strict
    field validation refuses them; either way they would be silently lost."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            additional = schema.get("additionalProperties")
            if isinstance(additional, Mapping):
                for name, item in value.items():
                    yield from _unknown_fields(item, additional, [*path, name])
            return
        for name, item in value.items():
            if name not in properties:
                yield Violation(_dotted([*path, name]), "unknown field (not in the schema)")
            else:
                yield from _unknown_fields(item, properties[name], [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], [*path, index])


def validate_custom_resource(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> list[Violation]:
    """Every violation of `obj` against `crd` (schema first; CEL only on a schema-valid object)."""
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.partition("/")
    expected_group = crd["spec"]["group"]
    if group != expected_group or version not in {v["name"] for v in crd["spec"]["versions"]}:
        served = ", ".join(f"{expected_group}/{v['name']}" for v in crd["spec"]["versions"])
        return [Violation("apiVersion", f"must be one of {served}")]
    schema = openapi_schema(crd, version)
    defaulted = apply_defaults(obj, schema)
    validator = OAS30Validator(_for_openapi(schema), format_checker=oas30_format_checker)
    schema_errors = sorted(validator.iter_errors(defaulted), key=lambda error: list(error.absolute_path))
    violations = [Violation(_dotted(error.absolute_path), _schema_message(error)) for error in schema_errors]
    violations += _unknown_fields(defaulted, schema, [])
    if schema_errors:  # CEL rules assume the schema's types
        return violations
    return violations + list(_cel_violations(defaulted, schema, []))


class InvalidSpec(ValueError):
    """An object that breaks its CRD (it bypassed admission: stale CRDs, a direct write): every
    violation with its path and rule. Nothing is applied for it; its status says why."""

    def __init__(self, kind: str, violations: Sequence[Violation]) -> None:
        self.kind = kind
        self.violations = tuple(violations)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(str(violation) for violation in self.violations)


ModelT = TypeVar("ModelT", bound=BaseModel)


@lru_cache(maxsize=16)
def _definition(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    crd = custom_resource_definition(model)
    return crd, openapi_schema(crd)


def model_violations(error: ValidationError, nested_only: bool = False) -> list[Violation]:
    """A model's ValidationError as violations: the path (wire names) and pydantic's message,
    which names the rule; the input value pydantic keeps (and prints) is left out. nested_only:
    only the violations the models' own rules report (NESTED_VIOLATIONS)."""
    violations = []
    for item in error.errors(include_url=False, include_input=False):
        path = _dotted(item["loc"])
        context = item.get("ctx") or {}
        if item["type"] == NESTED_VIOLATIONS:
            violations += [
                Violation(f"{path}.{where}" if path else where, rule) for where, rule in context["violations"]
            ]
        elif not nested_only:
            violations.append(Violation(path, item["msg"].removeprefix("Value error, ")))
    return violations


def check(model: type[BaseModel], body: Mapping[str, Any]) -> list[Violation]:
    """Every violation of `body` (its status aside) against `model`'s CRD and the model's own
    validators: what `load` refuses, and why. On an object the CRD refuses, the model's own
    rules are reported too (they name the exact path a CEL rule cannot)."""
    crd, schema = _definition(model)
    document = {key: value for key, value in body.items() if key != "status"}
    violations = validate_custom_resource(document, crd)
    try:
        model.model_validate(apply_defaults(document, schema))
    except ValidationError as error:
        known = set(violations)
        violations += [v for v in model_violations(error, nested_only=bool(violations)) if v not in known]
    except Exception:
        # the models' validators assume the CRD's types; on an object the CRD refused, a validator
        # tripping over a wrong type adds nothing to the violations already found
        if not violations:
            raise
    return violations


def load(model: type[ModelT], body: Mapping[str, Any]) -> ModelT:
    """The object as its typed model, defaults applied as the API server applies them; InvalidSpec
    when it breaks its CRD's schema or CEL rules, or the model's own validators. Its status is
    not read."""
    violations = check(model, body)
    if violations:
        crd, _ = _definition(model)
        raise InvalidSpec(crd["spec"]["names"]["kind"], violations)
    _, schema = _definition(model)
    document = {key: value for key, value in body.items() if key != "status"}
    return model.model_validate(apply_defaults(document, schema))
