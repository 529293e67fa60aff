"""Status conditions in the Kubernetes shape, shared by the controllers.

A condition is `{type, status, reason, message, observedGeneration, lastTransitionTime}`;
`merge_conditions` keeps a condition's lastTransitionTime while its status stays the same, as
Kubernetes' own controllers do, so `kubectl wait --for=condition=Ready` and Argo CD see real
transitions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["condition", "invalid_spec_conditions", "merge_conditions", "now"]


def now() -> str:
    """The current time as an RFC 3339 timestamp in UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, status: bool | None, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """One condition (without lastTransitionTime: `merge_conditions` sets it); None is Unknown."""
    return {
        "type": kind,
        "status": "Unknown" if status is None else "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime unless the status flipped, as Kubernetes conditions do."""
    old = {item.get("type"): item for item in previous}
    merged = []
    for item in new:
        before = old.get(item["type"])
        same = before is not None and before.get("status") == item["status"]
        stamp = before.get("lastTransitionTime") if same and before else None
        merged.append({**item, "lastTransitionTime": stamp or now()})
    return merged


def invalid_spec_conditions(
    previous: list[dict[str, Any]], message: str, generation: int | None, types: Sequence[str]
) -> list[dict[str, Any]]:
    """The one report of a spec that breaks its CRD, for the condition `types` a kind has: every one
    False with reason InvalidSpec, except Degraded, which is True."""
    messages = {"Progressing": "nothing is applied until the spec is valid"}
    return merge_conditions(
        previous,
        [
            condition(kind, kind == "Degraded", "InvalidSpec", messages.get(kind, message), generation)
            for kind in types
        ],
    )
