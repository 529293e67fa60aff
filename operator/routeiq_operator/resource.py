"""Pieces every RouteIQ custom resource shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "DNS_LABEL",
    "GROUP",
    "VERSION",
    "ApiModel",
    "Condition",
    "CrdInfo",
    "LocalObjectReference",
    "ObjectMeta",
    "PrinterColumn",
    "SecretKeyReference",
    "cel",
]

GROUP = "routeiq.io"
VERSION = "v1alpha1"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """`x-kubernetes-validations` for a schema node: (rule, message) pairs in standard CEL."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (the CRD prunes nothing)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class LocalObjectReference(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Name of the object in the same namespace.")


class SecretKeyReference(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret in the same namespace.")
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret."
    )


class Condition(ApiModel):
    """A status condition in the Kubernetes shape (`kubectl wait --for=condition=Ready` reads it)."""

    type: str = Field(description="Ready, Progressing, Degraded, ResolvedRefs, ...")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class PrinterColumn(BaseModel):
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0


class CrdInfo(BaseModel):
    """How a kind is served: names, scope, columns."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    categories: list[str] = ["routeiq"]
    printer_columns: list[PrinterColumn] = []
    # a CR's name becomes part of child names (`<name>-gateway` ...); keep room for suffixes
    max_name_length: ClassVar[int] = 40
