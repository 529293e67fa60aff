"""How the three kinds refer to each other, read from the stored objects (pure).

A `RoutingExperiment` names its gateway (`spec.gatewayRef`); a gateway and an experiment's variants
name `ModelArtifact`s. Controllers never call each other: a pass returns the `ObjectRef`s whose
own pass is due because of what it did (an experiment that needs its gateway to load its models,
an artifact with a new digest), and the registration layer runs those passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TERMINAL_PHASES",
    "Kind",
    "ObjectRef",
    "PassResult",
    "admitted_experiment",
    "artifact_users",
    "models_wanted",
]

# an experiment in one of these phases has finished: it no longer holds its gateway
TERMINAL_PHASES = frozenset({"Promoted", "RolledBack", "Inconclusive", "Failed"})

Kind = Literal["RouteIQGateway", "RoutingExperiment", "ModelArtifact"]


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    kind: Kind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one reconcile pass wrote to status, and which other objects need a pass now."""

    status: dict[str, Any]
    follow: tuple[ObjectRef, ...] = field(default=())


def _created(item: Mapping[str, Any]) -> tuple[str, str]:
    meta = item["metadata"]
    return str(meta.get("creationTimestamp") or ""), str(meta["name"])


def _gateway_of(experiment: Mapping[str, Any]) -> str | None:
    name = ((experiment.get("spec") or {}).get("gatewayRef") or {}).get("name")
    return None if name is None else str(name)


def admitted_experiment(experiments: Sequence[Mapping[str, Any]], gateway: str) -> Mapping[str, Any] | None:
    """The one experiment that may run on `gateway`: the oldest that has not finished."""
    live = [
        item
        for item in experiments
        if _gateway_of(item) == gateway
        and not item["metadata"].get("deletionTimestamp")
        and (item.get("status") or {}).get("phase") not in TERMINAL_PHASES
    ]
    return min(live, key=_created, default=None)


def models_wanted(experiments: Sequence[Mapping[str, Any]], gateway: str) -> set[str]:
    """The ModelArtifacts the gateway's pods must load for its experiments: every variant's of the
    admitted one, and the serving variant's of each finished one."""
    wanted: set[str] = set()
    admitted = admitted_experiment(experiments, gateway)
    for item in experiments:
        spec = item.get("spec") or {}
        if _gateway_of(item) != gateway or item["metadata"].get("deletionTimestamp"):
            continue
        serving = (item.get("status") or {}).get("servingVariant")
        for variant in spec.get("variants") or []:
            ref = (variant.get("modelArtifactRef") or {}).get("name")
            if ref and (item is admitted or variant.get("name") == serving):
                wanted.add(str(ref))
    return wanted


def artifact_users(
    gateways: Sequence[Mapping[str, Any]], experiments: Sequence[Mapping[str, Any]], artifact: str
) -> list[ObjectRef]:
    """The gateways that route with the artifact, have it loaded, or load it for an experiment."""
    users = []
    for gateway in gateways:
        meta = gateway["metadata"]
        routing = ((gateway.get("spec") or {}).get("routing") or {}).get("modelArtifactRef") or {}
        uses = (
            routing.get("name") == artifact
            or artifact in ((gateway.get("status") or {}).get("models") or {})
            or artifact in models_wanted(experiments, meta["name"])
        )
        if uses and not meta.get("deletionTimestamp"):
            users.append(ObjectRef("RouteIQGateway", meta["namespace"], meta["name"]))
    return users
