"""A gateway's status from what one pass observed: pure.

Conditions follow the Kubernetes shape: `Ready`, `Progressing`, `Degraded`, plus `ResolvedRefs`
and one condition per cluster feature the spec asks for and the cluster lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeiq_operator.conditions import condition, merge_conditions
from routeiq_operator.gateway.children import Problem
from routeiq_operator.gateway.deployment import GATEWAY_PORT
from routeiq_operator.gateway.rollout import observe
from routeiq_operator.naming import child_name

__all__ = ["ModelPlan", "conditions_from", "gateway_status", "refused_conditions", "status_patch"]


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """The router models of one pass: the gateway's model status it was made from, and the
    rollbacks in force."""

    stable: dict[str, dict[str, str]] = field(default_factory=dict)  # status.models
    rejected: dict[str, str] = field(default_factory=dict)  # status.rejectedModels
    failures: list[str] = field(default_factory=list)  # messages for Degraded=ModelRolloutFailed


def conditions_from(
    deployment: Mapping[str, Any] | None,
    problems: list[Problem],
    missing_secrets: list[str],
    generation: int | None,
    wanted_replicas: int,
    model_failures: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded (+ the checks behind them) from what the cluster reports.

    `model_failures`: router model rollbacks in force (Degraded, reason ModelRolloutFailed)."""
    rollout = observe(deployment, wanted_replicas)
    ready, updated, stalled, rolled_out = rollout.ready, rollout.updated, rollout.stalled, rollout.rolled_out
    conditions = [
        condition(
            "ResolvedRefs",
            not missing_secrets,
            "SecretsFound" if not missing_secrets else "SecretNotFound",
            "every referenced Secret exists"
            if not missing_secrets
            else f"referenced Secret(s) not found: {', '.join(missing_secrets)}",
            generation,
        )
    ]
    conditions += [condition(p.condition, False, p.reason, p.message, generation) for p in problems]
    degraded_reasons = (["ModelRolloutFailed"] if model_failures else []) + [p.reason for p in problems]
    degraded_reasons += ["SecretNotFound"] if missing_secrets else []
    if stalled:
        degraded_reasons.append("ProgressDeadlineExceeded")
    conditions.append(
        condition(
            "Degraded",
            bool(degraded_reasons),
            degraded_reasons[0] if degraded_reasons else "AsExpected",
            "; ".join([*model_failures, *(c["message"] for c in conditions if c["status"] == "False")])
            or ("the rollout exceeded its progress deadline" if stalled else "nothing is wrong"),
            generation,
        )
    )
    conditions.append(
        condition(
            "Progressing",
            not rolled_out and not stalled,
            "RolloutComplete" if rolled_out else ("RolloutStalled" if stalled else "RollingOut"),
            f"{ready}/{wanted_replicas} replicas ready, {updated} updated",
            generation,
        )
    )
    conditions.append(
        condition(
            "Ready",
            rolled_out,
            "GatewayReady" if rolled_out else ("RolloutStalled" if stalled else "WaitingForReplicas"),
            f"{ready}/{wanted_replicas} replicas ready",
            generation,
        )
    )
    return conditions


def refused_conditions(
    previous: list[dict[str, Any]], reason: str, message: str, generation: int | None
) -> list[dict[str, Any]]:
    """A gateway the operator will not apply (e.g. reason ImageNotAllowed): Ready and Progressing
    False, Degraded True, each with the reason; the children stay as they were."""
    return merge_conditions(
        previous,
        [
            condition("Ready", False, reason, message, generation),
            condition("Degraded", True, reason, message, generation),
            condition("Progressing", False, reason, "nothing is applied until this is resolved", generation),
        ],
    )


def gateway_status(
    body: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    problems: list[Problem],
    missing_secrets: list[str],
    wanted_replicas: int,
    models: ModelPlan,
    stable: Mapping[str, dict[str, str]],
) -> dict[str, Any]:
    """The whole status (`stable`: the router models the pods have rolled out)."""
    meta = body["metadata"]
    generation = meta.get("generation")
    spec = body.get("spec") or {}
    observed = (deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "tier": spec.get("tier", "standard"),
        "replicas": int(observed.get("replicas") or 0),
        "readyReplicas": int(observed.get("readyReplicas") or 0),
        "endpoint": f"http://{child_name(meta['name'])}.{meta['namespace']}.svc:"
        f"{spec.get('service', {}).get('port', GATEWAY_PORT)}",
        "conditions": merge_conditions(
            ((body.get("status") or {}).get("conditions")) or [],
            conditions_from(
                deployment, problems, missing_secrets, generation, wanted_replicas, models.failures
            ),
        ),
    }
    if stable:
        status["models"] = dict(stable)
    if models.rejected:
        status["rejectedModels"] = models.rejected
    return status


def status_patch(
    status: Mapping[str, Any], previous_models: Mapping[str, Any], stable: Mapping[str, Any]
) -> dict[str, Any]:
    """The merge patch that turns the stored status into `status`: a model no longer loaded is
    removed with null."""
    dropped = {artifact: None for artifact in previous_models if artifact not in stable}
    if dropped or stable:
        return {**status, "models": {**dropped, **stable} if stable else None}
    return dict(status)
