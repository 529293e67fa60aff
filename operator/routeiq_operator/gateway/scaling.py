"""How a gateway scales and survives disruptions: its HorizontalPodAutoscaler (resource and
Pods metrics, scaling behavior) and its PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from routeiq_operator.gateway.api import RouteIQGateway, ScalingRules
from routeiq_operator.gateway.meta import child_metadata
from routeiq_operator.gateway.tiers import ResolvedGateway
from routeiq_operator.naming import child_name, selector_labels

__all__ = ["hpa", "pod_disruption_budget"]


def _scaling_rules(rules: ScalingRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rules.stabilization_window_seconds is not None:
        out["stabilizationWindowSeconds"] = rules.stabilization_window_seconds
    if rules.select_policy is not None:
        out["selectPolicy"] = rules.select_policy
    if rules.policies:
        out["policies"] = [
            {"type": policy.type, "value": policy.value, "periodSeconds": policy.period_seconds}
            for policy in rules.policies
        ]
    return out


def hpa(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
    scaling = resolved.autoscaling
    if scaling is None:
        return None
    metrics: list[dict[str, Any]] = []
    for resource, target in (
        ("cpu", scaling.target_cpu_utilization),
        ("memory", scaling.target_memory_utilization),
    ):
        if target is not None:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {
                        "name": resource,
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            )
    # Pods metrics need a metrics adapter (Prometheus Adapter or KEDA) serving these names
    for metric, value in (
        ("gateway_requests_per_second", scaling.requests_per_second),
        ("gateway_p95_latency_ms", scaling.p95_latency_ms),
    ):
        if value is not None:
            metrics.append(
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": str(value)},
                    },
                }
            )
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": child_name(gateway.metadata.name),
        },
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if scaling.behavior is not None:
        behavior = {}
        if scaling.behavior.scale_up is not None:
            behavior["scaleUp"] = _scaling_rules(scaling.behavior.scale_up)
        if scaling.behavior.scale_down is not None:
            behavior["scaleDown"] = _scaling_rules(scaling.behavior.scale_down)
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(gateway, child_name(gateway.metadata.name)),
        "spec": spec,
    }


def pod_disruption_budget(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
    if resolved.pdb is None:
        return None
    name = gateway.metadata.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(gateway, child_name(name)),
        "spec": {"selector": {"matchLabels": selector_labels(name)}, **resolved.pdb},
    }
