"""A CustomResourceDefinition generated from a typed API model (pure; no kind is named here).

Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema: `$ref`s
inlined, optional fields unwrapped from `anyOf [X, null]`, titles and `null` defaults dropped,
`exclusiveMinimum` in its OpenAPI 3.0 form, free-form maps marked
`x-kubernetes-preserve-unknown-fields`, and the models' CEL rules kept as
`x-kubernetes-validations`.

    >>> crd = custom_resource_definition(RouteIQGateway)
    >>> crd["spec"]["names"]["shortNames"]
    ['rqgw']
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from routeiq_operator.resource import GROUP, VERSION, CrdInfo

__all__ = ["NAME_PATTERN", "crd_file_name", "custom_resource_definition", "structural_schema"]

NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _info(model: type[BaseModel]) -> CrdInfo:
    info = getattr(model, "crd", None)
    if not isinstance(info, CrdInfo):
        raise TypeError(f"{model.__name__} has no CrdInfo")
    return info


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
        if len(branches) == 1:  # Optional[X]: an absent field, not a nullable one
            outer = {key: value for key, value in node.items() if key != "anyOf"}
            node = {**branches[0], **outer}
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    for key in ("title", "$defs"):
        node.pop(key, None)
    if "default" in node and node["default"] is None:
        del node["default"]
    if node.get("x-kubernetes-preserve-unknown-fields") or node.get("properties") is not None:
        # structural schemas forbid additionalProperties beside properties or preserve-unknown-fields
        node.pop("additionalProperties", None)
    elif node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if isinstance(node.get("exclusiveMinimum"), int | float):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if isinstance(node.get("exclusiveMaximum"), int | float):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    return {key: _structural(value) for key, value in node.items()}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of a kind: the model's schema made structural."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(_inline(raw, definitions))
    properties = schema["properties"]
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    schema["required"] = [name for name in schema.get("required", []) if name not in {"metadata"}]
    info = _info(model)
    schema["description"] = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else info.kind
    schema["x-kubernetes-validations"] = [
        {
            # child names are `<name>-<suffix>`; Services need a DNS-1035 label
            "rule": f"self.metadata.name.size() <= {info.max_name_length} && "
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            "message": f"metadata.name must be a DNS-1035 label of at most {info.max_name_length} characters "
            "(lower-case letters, digits and '-', starting with a letter)",
        }
    ]
    return schema


def custom_resource_definition(model: type[BaseModel]) -> dict[str, Any]:
    info = _info(model)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/part-of": "routeiq",
                "app.kubernetes.io/managed-by": "routeiq-crds",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": info.categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": column.name,
                            "type": column.type,
                            "jsonPath": column.json_path,
                            **({"description": column.description} if column.description else {}),
                            **({"priority": column.priority} if column.priority else {}),
                        }
                        for column in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": structural_schema(model)},
                }
            ],
        },
    }


def crd_file_name(model: type[BaseModel]) -> str:
    return f"{GROUP}_{_info(model).plural}.yaml"
