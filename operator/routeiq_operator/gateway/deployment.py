"""A gateway's workload: its ServiceAccount, the LiteLLM config (a ConfigMap rendered from an
inline model list), and the Deployment (env, probes, anti-affinity and topology spread, the
restricted security context, the checksums that roll its pods)."""

from __future__ import annotations

import json
from typing import Any

from routeiq_operator.gateway.api import GatewayImage, RouteIQGateway
from routeiq_operator.gateway.images import image_reference
from routeiq_operator.gateway.meta import child_metadata
from routeiq_operator.gateway.models import MODELS_ANNOTATION, RouterModels
from routeiq_operator.gateway.secrets import secret_env
from routeiq_operator.gateway.tiers import ResolvedGateway, ResolvedProbe
from routeiq_operator.naming import child_name, labels, selector_labels

__all__ = [
    "CONFIG_KEY",
    "GATEWAY_PORT",
    "METRICS_PORT",
    "config_map",
    "deployment",
    "gateway_env",
    "litellm_config",
    "service_account",
]

GATEWAY_PORT = 4000
# the gateway's Prometheus listener (ROUTEIQ_METRICS_PORT): all workers of the pod in one scrape
METRICS_PORT = 9464
CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/app/config"
RUN_AS = 10001
GRACE_AFTER_DRAIN_SECONDS = 15


def service_account(gateway: RouteIQGateway) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(gateway, child_name(gateway.metadata.name)),
        "automountServiceAccountToken": False,
    }


def config_map(gateway: RouteIQGateway, config_text: str) -> dict[str, Any]:
    """The ConfigMap holding the rendered LiteLLM config (see litellm_config)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(gateway, child_name(gateway.metadata.name, "config")),
        "data": {CONFIG_KEY: config_text},
    }


def litellm_config(gateway: RouteIQGateway) -> dict[str, Any] | None:
    """The LiteLLM config.yaml rendered from an inline model list (None: a referenced ConfigMap)."""
    litellm = gateway.spec.litellm
    if litellm.model_list is None:
        return None
    config: dict[str, Any] = {"model_list": litellm.model_list}
    if litellm.router_settings:
        config["router_settings"] = litellm.router_settings
    return config


def gateway_env(gateway: RouteIQGateway, resolved: ResolvedGateway) -> list[dict[str, Any]]:
    """The container env: the gateway's settings, OpenTelemetry, and the references to spec.secrets
    (the router models' env comes after it)."""
    spec = gateway.spec
    env: list[dict[str, Any]] = [
        {"name": "LITELLM_CONFIG_PATH", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": "ROUTEIQ_GATEWAY", "value": f"{gateway.metadata.namespace}/{gateway.metadata.name}"},
        {"name": "ROUTEIQ_STRATEGY", "value": spec.routing.strategy.value},
        {"name": "ROUTEIQ_WORKERS", "value": str(resolved.workers)},
        {"name": "ROUTEIQ_PORT", "value": str(GATEWAY_PORT)},
        {"name": "ROUTEIQ_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "ROUTEIQ_DRAIN_TIMEOUT_SECONDS", "value": str(resolved.drain_timeout_seconds)},
        {"name": "ROUTEIQ_POLICY_ENABLED", "value": str(resolved.features["policy"]).lower()},
        {"name": "ROUTEIQ_AB_TESTING_ENABLED", "value": str(resolved.features["ab_testing"]).lower()},
        {"name": "ROUTEIQ_CACHE_ENABLED", "value": str(resolved.features["cache"]).lower()},
    ]
    otel = spec.observability.open_telemetry if spec.observability else None
    if otel is not None:
        for variable, value in (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otel.endpoint),
            ("OTEL_SERVICE_NAME", otel.service_name),
            ("OTEL_TRACES_SAMPLER", otel.sampler),
            ("OTEL_TRACES_SAMPLER_ARG", otel.sampler_arg),
        ):
            if value is not None:
                env.append({"name": variable, "value": value})
    env += secret_env(gateway)
    return env


def _probe(path: str, probe: ResolvedProbe) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "initialDelaySeconds": probe.initial_delay_seconds,
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
    }


def _affinity(gateway_name: str, resolved: ResolvedGateway) -> dict[str, Any] | None:
    kind, key = resolved.anti_affinity
    term = {"labelSelector": {"matchLabels": selector_labels(gateway_name)}, "topologyKey": key}
    if kind == "hard":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if kind == "soft":
        return {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
            }
        }
    return None


def deployment(
    gateway: RouteIQGateway,
    resolved: ResolvedGateway,
    *,
    image: GatewayImage,
    config_checksum: str,
    secrets_checksum: str,
    models: RouterModels,
) -> dict[str, Any]:
    spec = gateway.spec
    name = gateway.metadata.name
    config_map = (
        {"name": child_name(name, "config"), "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}
        if spec.litellm.config_map_ref is None
        else {
            "name": spec.litellm.config_map_ref.name,
            "items": [{"key": spec.litellm.config_map_ref.key, "path": CONFIG_KEY}],
        }
    )
    container: dict[str, Any] = {
        "name": "gateway",
        "image": image_reference(image),
        "imagePullPolicy": image.pull_policy,
        "ports": [
            {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": gateway_env(gateway, resolved) + models.env,
        "resources": {"requests": resolved.requests, "limits": resolved.limits},
        "startupProbe": _probe("/_health/live", resolved.probes["startup"]),
        "readinessProbe": _probe("/_health/ready", resolved.probes["readiness"]),
        "livenessProbe": _probe("/_health/live", resolved.probes["liveness"]),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *models.mounts,
        ],
    }
    if spec.secrets.external_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": child_name(name, "secrets")}}]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": child_name(name),
        "automountServiceAccountToken": False,
        # no *_SERVICE_HOST/_PORT variables for every Service of the namespace in the environment
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": resolved.drain_timeout_seconds + GRACE_AFTER_DRAIN_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": config_map},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            *models.volumes,
        ],
    }
    affinity = _affinity(name, resolved)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if resolved.spread is not None:
        key, skew, when = resolved.spread
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": skew,
                "topologyKey": key,
                "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": selector_labels(name)},
            }
        ]
    scheduling = spec.scheduling
    if scheduling and scheduling.node_selector:
        pod_spec["nodeSelector"] = scheduling.node_selector
    if scheduling and scheduling.tolerations:
        pod_spec["tolerations"] = scheduling.tolerations
    annotations = {
        "routeiq.io/config-checksum": config_checksum,
        "routeiq.io/secrets-checksum": secrets_checksum,
    }
    if models.loaded:  # absent without models: a gateway without any keeps its pod template
        annotations[MODELS_ANNOTATION] = json.dumps(models.loaded, sort_keys=True, separators=(",", ":"))
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        # past it, a rollout that makes no progress is reported failed: a new model is rolled back
        "progressDeadlineSeconds": spec.progress_deadline_seconds,
        "template": {
            "metadata": {"labels": labels(name), "annotations": annotations},
            "spec": pod_spec,
        },
    }
    if resolved.autoscaling is None:
        deployment_spec["replicas"] = resolved.replicas  # with an HPA, the HPA owns the replica count
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(gateway, child_name(name)),
        "spec": deployment_spec,
    }
