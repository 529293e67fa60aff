"""The router-model rollout decision: pure, from what the gateway's Deployment reports.

The pod template records the router models it carries (`routeiq.io/models`). Once the Deployment
has rolled out, those become the gateway's stable models (`status.models`). When the rollout
exceeds its progress deadline while the template carries digests that are not the stable ones,
those digests are rejected (`status.rejectedModels`): the pass renders the stable set instead, so
the pods go back at once, and the digest is never rolled out again (a later digest is tried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeiq_operator.gateway.models import template_models

__all__ = ["Rollout", "RolloutDecision", "decide", "observe", "stable_models"]


@dataclass(frozen=True, slots=True)
class Rollout:
    """Where a Deployment's rollout stands."""

    ready: int
    updated: int
    current: bool  # the Deployment controller has seen the current template
    stalled: bool  # Progressing: ProgressDeadlineExceeded
    rolled_out: bool


def observe(deployment: Mapping[str, Any] | None, wanted_replicas: int) -> Rollout:
    status = (deployment or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    observed = status.get("observedGeneration")
    current = deployment is not None and observed == (deployment.get("metadata") or {}).get("generation")
    deployment_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    stalled = deployment_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    rolled_out = current and updated >= wanted_replicas and replicas == updated and ready >= wanted_replicas
    return Rollout(ready, updated, current, stalled, rolled_out)


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    rollout: Rollout
    # the digests whose rollout failed: {artifact: digest}, to be rendered no more
    failed: dict[str, str]
    # the part of `failed` that status.rejectedModels does not hold yet
    newly_rejected: dict[str, str]
    # status.rejectedModels after this pass
    rejected: dict[str, str]


def decide(
    deployment: Mapping[str, Any] | None,
    wanted_replicas: int,
    stable: Mapping[str, Mapping[str, str]],
    rejected: Mapping[str, str],
) -> RolloutDecision:
    """Which template digests failed to roll out (`stable`: status.models; `rejected`:
    status.rejectedModels). Only a stalled rollout of the current template rejects anything."""
    rollout = observe(deployment, wanted_replicas)
    new = {
        artifact: entry["digest"]
        for artifact, entry in template_models(deployment).items()
        if (stable.get(artifact) or {}).get("digest") != entry["digest"]
    }
    failed = new if rollout.current and rollout.stalled and not rollout.rolled_out else {}
    newly = {artifact: digest for artifact, digest in failed.items() if rejected.get(artifact) != digest}
    return RolloutDecision(rollout, failed, newly, {**rejected, **failed})


def stable_models(
    deployment: Mapping[str, Any] | None, wanted_replicas: int, stable: Mapping[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """status.models after the pass: what a rolled-out Deployment carries, else what was stable."""
    if observe(deployment, wanted_replicas).rolled_out:
        return template_models(deployment)
    return dict(stable)
