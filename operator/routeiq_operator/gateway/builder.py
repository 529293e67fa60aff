"""The manifests a `RouteIQGateway` turns into: a pure function, no I/O.

The same function backs the operator's reconciliation, `routeiq render` and the tests.

    >>> desired = desired_children(gateway, ClusterFacts())
    >>> [f"{m['kind']}/{m['metadata']['name']}" for m in desired.children]
    ['ServiceAccount/gw-gateway', 'ConfigMap/gw-gateway-config', 'Deployment/gw-gateway', ...]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from routeiq_operator.gateway.api import ML_STRATEGIES, RouteIQGateway, ScalingRules, Strategy
from routeiq_operator.gateway.tiers import ResolvedGateway, ResolvedProbe, resolve
from routeiq_operator.naming import child_name, labels, selector_labels
from routeiq_operator.resource import GROUP, VERSION

__all__ = [
    "CONFIG_KEY",
    "GATEWAY_PORT",
    "GCS_CREDENTIALS_PATH",
    "MODELS_ANNOTATION",
    "MODELS_DIR",
    "ClusterFacts",
    "DesiredState",
    "Problem",
    "ResolvedModel",
    "desired_children",
    "needs_apply",
    "template_models",
]

GATEWAY_PORT = 4000
CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/app/config"
RUN_AS = 10001
GRACE_AFTER_DRAIN_SECONDS = 15
DESIRED_DIGEST = "routeiq.io/desired-digest"
# the pod template's router models, {"<artifact>": {"digest", "role", "uri"}}: what a rollout carries
MODELS_ANNOTATION = "routeiq.io/models"
MODELS_DIR = "/var/lib/routeiq/models"  # a PVC artifact is mounted at <MODELS_DIR>/<artifact name>
GCS_CREDENTIALS_DIR = "/var/run/secrets/routeiq/gcs"
GCS_CREDENTIALS_KEY = "credentials.json"
GCS_CREDENTIALS_PATH = f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A router model to render: one ModelArtifact at one verified digest, and how pods reach it.

    Exactly one of `uri` (s3://, gs://, file:///) and `pvc` (claim, path inside it) is set.
    """

    name: str  # the ModelArtifact's name: a variant's model key
    digest: str  # sha256 of its manifest.json, 64 lowercase hex
    uri: str | None = None
    pvc: tuple[str, str] | None = None
    public_key: str | None = None  # the signature's ed25519 public key (PEM or base64), not secret
    credentials_secret: str | None = None  # spec.source.credentialsSecretRef.name
    s3_endpoint: str | None = None
    s3_region: str | None = None

    @property
    def scheme(self) -> Literal["s3", "gs", "file", "pvc"]:
        if self.uri is None:
            return "pvc"
        if self.uri.startswith("s3://"):
            return "s3"
        return "gs" if self.uri.startswith("gs://") else "file"

    @property
    def source(self) -> str:
        """Where it comes from, as status.models records it (`pvc://<claim>/<path>` for a claim)."""
        if self.pvc is not None:
            return f"pvc://{self.pvc[0]}/{self.pvc[1]}"
        return self.uri or ""

    @property
    def location(self) -> str:
        """What the pod loads: the URI, or the file path of the mounted claim."""
        if self.pvc is not None:
            return f"{MODELS_DIR}/{self.name}/{self.pvc[1].strip('/')}"
        return self.uri or ""

    def identity(self) -> tuple[str | None, ...] | None:
        """The pod-wide credentials it needs (a pod has one AWS identity, one GCS key), or None."""
        if self.scheme == "s3":
            return (self.credentials_secret, self.s3_endpoint, self.s3_region)
        if self.scheme == "gs":
            return (self.credentials_secret,)
        return None


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """What the builder may not look up itself: optional CRDs present, referenced Secrets' versions,
    the router models resolved from ModelArtifacts."""

    external_secrets: bool = True
    service_monitors: bool = True
    # "<secret name>" -> resourceVersion (or a digest of its data); rolls the pods when one changes
    secret_versions: Mapping[str, str] = field(default_factory=dict)
    # "<artifact name>" -> the model to render (the routing model and the variants' models)
    models: Mapping[str, ResolvedModel] = field(default_factory=dict)
    # the artifact names the gateway's experiments want loaded (ROUTEIQ_VARIANT_MODELS keys)
    variant_models: frozenset[str] = frozenset()
    # "<artifact name>" -> why it has no model to render ("Failed", "not found", ...)
    unresolved_models: Mapping[str, str] = field(default_factory=dict)


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


def _metadata(gateway: RouteIQGateway, name: str) -> dict[str, Any]:
    meta = gateway.metadata
    metadata: dict[str, Any] = {"name": name, "namespace": meta.namespace, "labels": labels(meta.name)}
    if meta.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "RouteIQGateway",
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return metadata


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def litellm_config(gateway: RouteIQGateway) -> dict[str, Any] | None:
    """The LiteLLM config.yaml rendered from an inline model list (None: a referenced ConfigMap)."""
    litellm = gateway.spec.litellm
    if litellm.model_list is None:
        return None
    config: dict[str, Any] = {"model_list": litellm.model_list}
    if litellm.router_settings:
        config["router_settings"] = litellm.router_settings
    return config


def _secret_env(name: str, ref: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _env(gateway: RouteIQGateway, resolved: ResolvedGateway) -> list[dict[str, Any]]:
    spec = gateway.spec
    env: list[dict[str, Any]] = [
        {"name": "LITELLM_CONFIG_PATH", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": "ROUTEIQ_GATEWAY", "value": f"{gateway.metadata.namespace}/{gateway.metadata.name}"},
        {"name": "ROUTEIQ_STRATEGY", "value": spec.routing.strategy.value},
        {"name": "ROUTEIQ_WORKERS", "value": str(resolved.workers)},
        {"name": "ROUTEIQ_PORT", "value": str(GATEWAY_PORT)},
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
    secrets = spec.secrets
    # secrets only ever as references: nothing secret is rendered into a manifest
    if secrets.master_key is not None:
        env.append(_secret_env("LITELLM_MASTER_KEY", secrets.master_key))
    if secrets.redis_url is not None:
        env.append(_secret_env("REDIS_URL", secrets.redis_url))
    if secrets.database_url is not None:
        env.append(_secret_env("DATABASE_URL", secrets.database_url))
    for provider in secrets.provider_keys or []:
        env.append(_secret_env(provider.env, provider.secret_key_ref))
    return env


@dataclass(slots=True)
class _Models:
    """The router models' part of the pod: env, volumes, mounts, and what it loads."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    # "<artifact>" -> {"digest", "role", "uri"}: the MODELS_ANNOTATION, and status.models once rolled out
    loaded: dict[str, dict[str, str]] = field(default_factory=dict)
    # (reason, message) for the ModelsResolved condition
    problems: list[tuple[str, str]] = field(default_factory=list)


def _names(models: list[ResolvedModel]) -> str:
    return ", ".join(model.name for model in models)


def _credentials_env(model: ResolvedModel) -> list[dict[str, Any]]:
    """The variables boto3 / google-cloud-storage read, for the credentials one model needs."""
    env: list[dict[str, Any]] = []
    secret = model.credentials_secret
    if model.scheme == "s3":
        if secret is not None:
            for key, optional in (
                ("AWS_ACCESS_KEY_ID", False),
                ("AWS_SECRET_ACCESS_KEY", False),
                ("AWS_SESSION_TOKEN", True),
            ):
                ref: dict[str, Any] = {"name": secret, "key": key} | ({"optional": True} if optional else {})
                env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        if model.s3_region is not None:  # spec.source.s3.region wins over the Secret's AWS_REGION
            env.append({"name": "AWS_REGION", "value": model.s3_region})
        elif secret is not None:
            ref = {"name": secret, "key": "AWS_REGION", "optional": True}
            env.append({"name": "AWS_REGION", "valueFrom": {"secretKeyRef": ref}})
        if model.s3_endpoint is not None:
            env.append({"name": "AWS_ENDPOINT_URL_S3", "value": model.s3_endpoint})
    elif model.scheme == "gs" and secret is not None:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": GCS_CREDENTIALS_PATH})
    return env


def _router_models(gateway: RouteIQGateway, facts: ClusterFacts, taken: set[str]) -> _Models:
    """ROUTEIQ_MODEL_* for the routing model, ROUTEIQ_VARIANT_MODELS for the variants' models, and
    the credentials they need. `taken`: variable names the gateway's other env already sets."""
    out = _Models()
    routing = gateway.spec.routing
    routing_name = routing.model_artifact_ref.name if routing.model_artifact_ref else None
    routing_model = facts.models.get(routing_name) if routing_name else None
    if routing_name is not None and routing_model is None and routing.strategy.value in ML_STRATEGIES:
        why = facts.unresolved_models.get(routing_name, "not resolved")
        out.problems.append(
            (
                "ModelArtifactNotReady",
                f"ModelArtifact {routing_name} (spec.routing.modelArtifactRef) is {why}: the "
                f"{routing.strategy.value} strategy needs it, so the pods cannot become ready; "
                "everything else is applied",
            )
        )
    # the routing model first: a variant's model that needs other credentials gives way
    candidates = [routing_model] if routing_model is not None else []
    reserved = {strategy.value for strategy in Strategy}
    refused: list[ResolvedModel] = []
    for name in sorted(facts.variant_models):
        model = facts.models.get(name)
        if model is None:
            continue
        if name in reserved:  # the worker holds each strategy's own model under its name
            refused.append(model)
        elif model is not routing_model:
            candidates.append(model)
    if refused:
        out.problems.append(
            (
                "ModelKeyReserved",
                f"ModelArtifact(s) {_names(refused)}: a variant's model key cannot be a strategy's name; "
                "rename the ModelArtifact; not loaded for the variants",
            )
        )
    rendered: list[ResolvedModel] = []
    identities: dict[str, tuple[tuple[str | None, ...], ResolvedModel]] = {}
    conflicts: list[tuple[ResolvedModel, ResolvedModel]] = []
    for model in candidates:
        identity = model.identity()
        if identity is not None:
            first = identities.setdefault(model.scheme, (identity, model))
            if first[0] != identity:
                conflicts.append((model, first[1]))
                continue
        rendered.append(model)
    if conflicts:
        out.problems.append(
            (
                "ArtifactCredentialsConflict",
                "; ".join(
                    f"ModelArtifact {model.name} needs other {model.scheme}:// credentials or endpoint "
                    f"(spec.source.credentialsSecretRef, spec.source.s3) than {first.name}, and a pod has "
                    "one identity: not loaded"
                    for model, first in conflicts
                ),
            )
        )
    for model in rendered:
        if model.pvc is not None:
            volume = f"model-{model.name}"
            out.volumes.append(
                {"name": volume, "persistentVolumeClaim": {"claimName": model.pvc[0], "readOnly": True}}
            )
            out.mounts.append({"name": volume, "mountPath": f"{MODELS_DIR}/{model.name}", "readOnly": True})
    if routing_model is not None:
        remote = routing_model.scheme in ("s3", "gs")
        out.env.append(
            {
                "name": "ROUTEIQ_MODEL_S3_URI" if remote else "ROUTEIQ_MODELS_PATH",
                "value": routing_model.location,
            }
        )
        out.env.append({"name": "ROUTEIQ_MODEL_DIGEST", "value": routing_model.digest})
        if routing_model.public_key is not None:
            out.env.append({"name": "ROUTEIQ_MODEL_PUBLIC_KEY", "value": routing_model.public_key})
    variants = {
        model.name: {"uri": model.location, "digest": model.digest}
        | ({"publicKey": model.public_key} if model.public_key is not None else {})
        for model in rendered
        if model.name in facts.variant_models and model.name not in reserved
    }
    if variants:
        out.env.append(
            {
                "name": "ROUTEIQ_VARIANT_MODELS",
                "value": json.dumps(variants, sort_keys=True, separators=(",", ":")),
            }
        )
    clashes: list[str] = []
    for model in rendered:
        for variable in _credentials_env(model):
            if variable["name"] in taken:
                clashes.append(f"{variable['name']} (ModelArtifact {model.name})")
            elif all(variable["name"] != item["name"] for item in out.env):
                out.env.append(variable)
        gcs_mounted = any(volume["name"] == "model-gcs-credentials" for volume in out.volumes)
        if model.scheme == "gs" and model.credentials_secret is not None and not gcs_mounted:
            out.volumes.append(
                {
                    "name": "model-gcs-credentials",
                    "secret": {
                        "secretName": model.credentials_secret,
                        "items": [{"key": GCS_CREDENTIALS_KEY, "path": GCS_CREDENTIALS_KEY}],
                    },
                }
            )
            out.mounts.append(
                {"name": "model-gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
            )
    if clashes:
        out.problems.append(
            (
                "ArtifactCredentialsConflict",
                f"the gateway's own environment (spec.secrets, spec.observability) already sets "
                f"{', '.join(clashes)}: the models are fetched with that value",
            )
        )
    out.loaded = {
        model.name: {
            "digest": model.digest,
            "role": "routing" if model is routing_model else "variant",
            "uri": model.source,
        }
        for model in rendered
    }
    return out


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


def _referenced_secrets(gateway: RouteIQGateway, facts: ClusterFacts) -> list[str]:
    secrets = gateway.spec.secrets
    refs = [secrets.master_key, secrets.redis_url, secrets.database_url]
    refs += [provider.secret_key_ref for provider in secrets.provider_keys or []]
    names = {ref.name for ref in refs if ref is not None}
    if secrets.external_secret is not None:
        names.add(child_name(gateway.metadata.name, "secrets"))
    # the models' credentials are read when a pod starts: a rotated one rolls the pods
    names |= {model.credentials_secret for model in facts.models.values() if model.credentials_secret}
    return sorted(names)


def _deployment(
    gateway: RouteIQGateway,
    resolved: ResolvedGateway,
    config_checksum: str,
    facts: ClusterFacts,
    models: _Models,
) -> dict[str, Any]:
    spec = gateway.spec
    name = gateway.metadata.name
    secrets_checksum = _digest(
        {secret: facts.secret_versions.get(secret, "") for secret in _referenced_secrets(gateway, facts)}
    )
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
        "image": f"{spec.image.repository}:{spec.image.tag}",
        "imagePullPolicy": spec.image.pull_policy,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": _env(gateway, resolved) + models.env,
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
        "metadata": _metadata(gateway, child_name(name)),
        "spec": deployment_spec,
    }


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


def _hpa(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
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
        "metadata": _metadata(gateway, child_name(gateway.metadata.name)),
        "spec": spec,
    }


def _network_policy(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
    if not resolved.network_policy:
        return None
    spec = gateway.spec.network_policy
    sources = (spec.ingress_from if spec else None) or []
    peers: list[dict[str, Any]] = []
    for source in sources:
        peer: dict[str, Any] = {}
        if source.namespace_selector is not None:
            peer["namespaceSelector"] = {"matchLabels": source.namespace_selector.match_labels}
        if source.pod_selector is not None:
            peer["podSelector"] = {"matchLabels": source.pod_selector.match_labels}
        peers.append(peer)
    if not peers:
        peers = [{"podSelector": {}}]  # any pod of this namespace
    egress_spec = spec.egress if spec and spec.egress else None
    egress: list[dict[str, Any]] = []
    if egress_spec is None or egress_spec.dns:
        egress.append(
            {
                "to": [{"namespaceSelector": {}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    if egress_spec is None or egress_spec.https:
        egress.append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
        )
    for service in (egress_spec.redis, egress_spec.postgres) if egress_spec else ():
        if service is None:
            continue
        target = (
            {"podSelector": {"matchLabels": service.pod_selector.match_labels}}
            if service.pod_selector is not None
            else {"ipBlock": {"cidr": service.cidr}}
        )
        egress.append({"to": [target], "ports": [{"protocol": "TCP", "port": service.port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(gateway, child_name(gateway.metadata.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(gateway.metadata.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}],
            "egress": egress,
        },
    }


def desired_children(gateway: RouteIQGateway, facts: ClusterFacts) -> DesiredState:
    """Every child the gateway should have, in apply order, and what it asks for but cannot get."""
    spec = gateway.spec
    name = gateway.metadata.name
    resolved = resolve(spec)
    problems: list[Problem] = []
    config = litellm_config(gateway)
    config_text = yaml.safe_dump(config, sort_keys=False) if config is not None else ""
    config_checksum = _digest(
        {
            "config": config_text,
            "configMapRef": spec.litellm.config_map_ref and spec.litellm.config_map_ref.model_dump(),
        }
    )
    children: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(gateway, child_name(name)),
            "automountServiceAccountToken": False,
        }
    ]
    if config is not None:
        children.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(gateway, child_name(name, "config")),
                "data": {CONFIG_KEY: config_text},
            }
        )
    external = spec.secrets.external_secret
    if external is not None and facts.external_secrets:
        children.append(
            {
                "apiVersion": "external-secrets.io/v1",
                "kind": "ExternalSecret",
                "metadata": _metadata(gateway, child_name(name, "secrets")),
                "spec": {
                    "refreshInterval": external.refresh_interval,
                    "secretStoreRef": {
                        "name": external.secret_store_ref.name,
                        "kind": external.secret_store_ref.kind,
                    },
                    "target": {"name": child_name(name, "secrets"), "creationPolicy": "Owner"},
                    "data": [
                        {
                            "secretKey": item.secret_key,
                            "remoteRef": {"key": item.remote_ref.key}
                            | ({"property": item.remote_ref.property} if item.remote_ref.property else {}),
                        }
                        for item in external.data
                    ],
                },
            }
        )
    elif external is not None:
        problems.append(
            Problem(
                "SecretsSynced",
                "ExternalSecretsNotInstalled",
                "spec.secrets.externalSecret is set but the cluster has no ExternalSecret CRD "
                "(externalsecrets.external-secrets.io); install the External Secrets Operator",
            )
        )
    base_env = {item["name"] for item in _env(gateway, resolved)}
    models = _router_models(gateway, facts, base_env)
    if models.problems:  # one condition, the first reason, every message
        problems.append(
            Problem(
                "ModelsResolved",
                models.problems[0][0],
                "; ".join(message for _, message in models.problems),
            )
        )
    children.append(_deployment(gateway, resolved, config_checksum, facts, models))
    children.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(gateway, child_name(name)),
            "spec": {
                "type": spec.service.type,
                "selector": selector_labels(name),
                "ports": [
                    {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        }
    )
    for optional in (_hpa(gateway, resolved), _network_policy(gateway, resolved)):
        if optional is not None:
            children.append(optional)
    if resolved.pdb is not None:
        children.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(gateway, child_name(name)),
                "spec": {"selector": {"matchLabels": selector_labels(name)}, **resolved.pdb},
            }
        )
    monitor = spec.observability.service_monitor if spec.observability else None
    if monitor is not None and monitor.enabled:
        if facts.service_monitors:
            children.append(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "ServiceMonitor",
                    "metadata": _metadata(gateway, child_name(name)),
                    "spec": {
                        "selector": {"matchLabels": selector_labels(name)},
                        "endpoints": [{"port": "http", "path": "/metrics", "interval": monitor.interval}],
                    },
                }
            )
        else:
            problems.append(
                Problem(
                    "MonitoringConfigured",
                    "ServiceMonitorsNotInstalled",
                    "spec.observability.serviceMonitor.enabled is true but the cluster has no ServiceMonitor "
                    "CRD (servicemonitors.monitoring.coreos.com); install the Prometheus Operator",
                )
            )
    for child in children:
        # lets the controller skip a child whose live copy already matches (see needs_apply)
        child["metadata"].setdefault("annotations", {})[DESIRED_DIGEST] = _digest(child)
    return DesiredState(
        children=children, problems=problems, resolved=resolved, config_checksum=config_checksum
    )


def template_models(deployment: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """The router models a Deployment's pod template carries (MODELS_ANNOTATION), by artifact name."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    text = ((template.get("metadata") or {}).get("annotations") or {}).get(MODELS_ANNOTATION)
    if not text:
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {
        str(name): {key: str(entry[key]) for key in ("digest", "role", "uri")}
        for name, entry in loaded.items()
        if isinstance(entry, dict)
        and all(isinstance(entry.get(key), str) for key in ("digest", "role", "uri"))
    }


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
