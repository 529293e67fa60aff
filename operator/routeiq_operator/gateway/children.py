"""The manifests a `RouteIQGateway` turns into: a pure function, no I/O.

The same function backs the operator's reconciliation, `routeiq render` and the tests. This module
is the composition (which children, in which order, and what the cluster cannot provide); each
child is rendered by its own module: deployment, models, network, scaling, secrets.

    >>> desired = desired_children(gateway, ClusterFacts())
    >>> [f"{m['kind']}/{m['metadata']['name']}" for m in desired.children]
    ['ServiceAccount/gw-gateway', 'ConfigMap/gw-gateway-config', 'Deployment/gw-gateway', ...]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from routeiq_operator.gateway.alerts import prometheus_rule
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.deployment import (
    config_map,
    deployment,
    gateway_env,
    litellm_config,
    service_account,
)
from routeiq_operator.gateway.images import GatewayImages, effective_image
from routeiq_operator.gateway.meta import content_digest
from routeiq_operator.gateway.models import ResolvedModel, router_models
from routeiq_operator.gateway.network import network_policy, service, service_monitor
from routeiq_operator.gateway.scaling import hpa, pod_disruption_budget
from routeiq_operator.gateway.secrets import external_secret, secrets_checksum
from routeiq_operator.gateway.tiers import ResolvedGateway, resolve

__all__ = [
    "ClusterFacts",
    "DesiredState",
    "Problem",
    "desired_children",
    "needs_apply",
]

DESIRED_DIGEST = "routeiq.io/desired-digest"


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """What the builder may not look up itself: optional CRDs present, referenced Secrets' versions,
    the router models resolved from ModelArtifacts."""

    external_secrets: bool = True
    service_monitors: bool = True
    prometheus_rules: bool = True
    # "<secret name>" -> resourceVersion (or a digest of its data); rolls the pods when one changes
    secret_versions: Mapping[str, str] = field(default_factory=dict)
    # "<artifact name>" -> the model to render (the routing model and the variants' models)
    models: Mapping[str, ResolvedModel] = field(default_factory=dict)
    # the artifact names the gateway's experiments want loaded (ROUTEIQ_VARIANT_MODELS keys)
    variant_models: frozenset[str] = frozenset()
    # "<artifact name>" -> why it has no model to render ("Failed", "not found", ...)
    unresolved_models: Mapping[str, str] = field(default_factory=dict)
    # what the gateway runs when spec.image.repository is unset (the operator's settings)
    images: GatewayImages = field(default_factory=GatewayImages)


@dataclass(frozen=True, slots=True)
class Problem:
    """A requested feature the cluster cannot provide; becomes a False condition."""

    condition: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DesiredState:
    children: list[dict[str, Any]]
    problems: list[Problem]
    resolved: ResolvedGateway
    config_checksum: str


def desired_children(gateway: RouteIQGateway, facts: ClusterFacts) -> DesiredState:
    """Every child the gateway should have, in apply order, and what it asks for but cannot get."""
    spec = gateway.spec
    resolved = resolve(spec)
    problems: list[Problem] = []
    config = litellm_config(gateway)
    config_text = yaml.safe_dump(config, sort_keys=False) if config is not None else ""
    config_checksum = content_digest(
        {
            "config": config_text,
            "configMapRef": spec.litellm.config_map_ref and spec.litellm.config_map_ref.model_dump(),
        }
    )
    children: list[dict[str, Any]] = [service_account(gateway)]
    if config is not None:
        children.append(config_map(gateway, config_text))
    external = external_secret(gateway)
    if external is not None and facts.external_secrets:
        children.append(external)
    elif external is not None:
        problems.append(
            Problem(
                "SecretsSynced",
                "ExternalSecretsNotInstalled",
                "spec.secrets.externalSecret is set but the cluster has no ExternalSecret CRD "
                "(externalsecrets.external-secrets.io); install the External Secrets Operator",
            )
        )
    base_env = {item["name"] for item in gateway_env(gateway, resolved)}
    models = router_models(
        gateway,
        models=facts.models,
        variant_models=facts.variant_models,
        unresolved_models=facts.unresolved_models,
        taken=base_env,
    )
    if models.problems:  # one condition, the first reason, every message
        problems.append(
            Problem(
                "ModelsResolved",
                models.problems[0][0],
                "; ".join(message for _, message in models.problems),
            )
        )
    image = effective_image(gateway, facts.variant_models, facts.images)
    if isinstance(image, str):  # callers refuse such a gateway first (gateway.images.image_refusal)
        raise ValueError(image)
    children.append(
        deployment(
            gateway,
            resolved,
            image=image,
            config_checksum=config_checksum,
            secrets_checksum=secrets_checksum(gateway, facts.models, facts.secret_versions),
            models=models,
        )
    )
    children.append(service(gateway))
    for optional in (
        hpa(gateway, resolved),
        network_policy(gateway, resolved),
        pod_disruption_budget(gateway, resolved),
    ):
        if optional is not None:
            children.append(optional)
    monitoring: list[tuple[str, str]] = []  # what the Prometheus Operator's absence leaves out
    monitor = service_monitor(gateway)
    if monitor is not None and facts.service_monitors:
        children.append(monitor)
    elif monitor is not None:
        monitoring.append(
            (
                "ServiceMonitorsNotInstalled",
                "spec.observability.serviceMonitor.enabled is true but the cluster has no ServiceMonitor "
                "CRD (servicemonitors.monitoring.coreos.com); install the Prometheus Operator",
            )
        )
    rule = prometheus_rule(gateway)
    if rule is not None and facts.prometheus_rules:
        children.append(rule)
    elif rule is not None:
        monitoring.append(
            (
                "PrometheusRulesNotInstalled",
                "spec.observability.prometheusRule.enabled is true but the cluster has no PrometheusRule "
                "CRD (prometheusrules.monitoring.coreos.com); install the Prometheus Operator",
            )
        )
    if monitoring:  # one condition, the first reason, every message
        problems.append(
            Problem("MonitoringConfigured", monitoring[0][0], "; ".join(message for _, message in monitoring))
        )
    for child in children:
        # lets the controller skip a child whose live copy already matches (see needs_apply)
        child["metadata"].setdefault("annotations", {})[DESIRED_DIGEST] = content_digest(child)
    return DesiredState(
        children=children, problems=problems, resolved=resolved, config_checksum=config_checksum
    )


def _contains(live: Any, desired: Any) -> bool:
    """Every field of `desired` is in `live` with the same value (the server may add others)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and _contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(_contains(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether `desired` must be (re)applied: missing, rendered differently since the last apply
    (the digest annotation; this catches removed fields), or edited by someone else."""
    if live is None:
        return True
    digest = desired["metadata"]["annotations"][DESIRED_DIGEST]
    if ((live.get("metadata") or {}).get("annotations") or {}).get(DESIRED_DIGEST) != digest:
        return True
    return not _contains(live, desired)
