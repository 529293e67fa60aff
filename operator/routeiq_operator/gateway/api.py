"""`RouteIQGateway`: a fleet of LiteLLM gateway pods routed by RouteIQ.

Fields a tier preset can fill are optional and carry no schema default, so the operator can
tell "not set" (the tier decides) from "set" (the field wins); see `tiers.resolve`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue, model_validator
from pydantic_core import PydanticCustomError

from routeiq_operator.gateway.litellm_checks import (
    CEL_URL_PASSWORD,
    ENV_PREFIX,
    credential_keys,
    credential_problems,
    shape_problems,
)
from routeiq_operator.resource import (
    ApiModel,
    Condition,
    CrdInfo,
    LocalObjectReference,
    ObjectMeta,
    PrinterColumn,
    SecretKeyReference,
    cel,
)
from routeiq_operator.validation import NESTED_VIOLATIONS
from routeiq_router.strategies.catalog import STRATEGY_NAMES, TRAINED_STRATEGIES

__all__ = [
    "IMAGE_DIGEST",
    "IMAGE_REPOSITORY",
    "ML_STRATEGIES",
    "TRAINED_STRATEGY_RULE",
    "Autoscaling",
    "ExternalSecretSpec",
    "GatewayImage",
    "LiteLLMSpec",
    "LoadedModel",
    "RouteIQGateway",
    "RouteIQGatewaySpec",
    "RouteIQGatewayStatus",
    "Strategy",
    "Tier",
]

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
# the credential keys of litellm_params and router_settings that admission checks by name (the
# general rule is the operator's, see LiteLLMSpec)
SECRET_PARAMS = tuple(sorted(credential_keys("litellm_params")))
ROUTER_SECRET_PARAMS = tuple(sorted(credential_keys("router_settings")))
FREE_FORM: dict[str, JsonValue] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


class Tier(StrEnum):
    """RouteIQ's self-hosting tiers, as presets of this resource's fields."""

    MINIMAL = "minimal"
    STANDARD = "standard"
    PRODUCTION = "production"
    ENTERPRISE = "enterprise"


# The strategy names come from the router's catalog (routeiq_router.strategies.catalog), so the
# CRDs accept exactly the strategies the gateway registers: ROUND_ROBIN = "round-robin", ...
# mypy cannot enumerate the members of an enum built from a tuple; it still types Strategy as one.
Strategy = StrEnum(  # type: ignore[misc]
    "Strategy", [(name.upper().replace("-", "_"), name) for name in STRATEGY_NAMES], module=__name__
)

# the strategies that route with a trained ModelArtifact
ML_STRATEGIES = TRAINED_STRATEGIES

# CEL: a trained strategy needs its ModelArtifact (on spec.routing, and on an experiment's variant)
_TRAINED_LIST = ", ".join(f"'{name}'" for name in TRAINED_STRATEGIES)  # a CEL list of strings
TRAINED_STRATEGY_RULE = (
    f"!(self.strategy in [{_TRAINED_LIST}]) || has(self.modelArtifactRef)",
    f"trained strategies ({', '.join(TRAINED_STRATEGIES)}) need modelArtifactRef",
)


# an image repository without tag or digest: registry host (optional port) and path
IMAGE_REPOSITORY = r"^[a-zA-Z0-9]+([._-][a-zA-Z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$"
IMAGE_DIGEST = r"^sha256:[a-f0-9]{64}$"


class GatewayImage(ApiModel):
    repository: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=IMAGE_REPOSITORY,
        description="Registry host (optional port) and path, without tag or digest. Unset: the operator "
        "runs its standard gateway image (ROUTEIQ_GATEWAY_IMAGE), or its ML image "
        "(ROUTEIQ_GATEWAY_ML_IMAGE) when the strategy or an experiment variant needs a trained router. "
        "The operator may admit only some repositories (ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES).",
    )
    tag: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[\w][\w.-]{0,127}$",
        description="Unset: the tag of the operator's gateway image (this release's version).",
    )
    digest: str | None = Field(
        default=None,
        pattern=IMAGE_DIGEST,
        description="sha256:<64 hex digits>: pull by digest. The image is repository:tag@digest; the "
        "digest decides what runs, the tag stays for people reading the pod.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class Routing(ApiModel):
    model_config = ApiModel.model_config | {"json_schema_extra": cel(TRAINED_STRATEGY_RULE)}

    strategy: Strategy = Field(
        default=Strategy("round-robin"), description="Routing strategy (ROUTEIQ_STRATEGY)."
    )
    model_artifact_ref: LocalObjectReference | None = Field(
        default=None, description="ModelArtifact holding the trained router of an ML strategy."
    )


# Declared with a bound so that CEL can reach them (CEL reaches declared fields only) and the API
# server's cost estimate of the rules stays within its budget.
_CREDENTIAL: dict[str, JsonValue] = {"type": "string", "maxLength": 4096}
_URL: dict[str, JsonValue] = {"type": "string", "maxLength": 4096}
MAX_DEPLOYMENTS = 500
_LITERAL_RULE = "must be os.environ/<VARIABLE> references (set the variable from secrets.providerKeys)"


def _credentials_cel(value: str, keys: tuple[str, ...], url_key: str) -> str:
    """CEL: each credential key of `value` holds an os.environ/ reference, its URL no password."""
    references = [f"(!has({value}.{key}) || {value}.{key}.startsWith('{ENV_PREFIX}'))" for key in keys]
    url = f"(!has({value}.{url_key}) || !{value}.{url_key}.matches('{CEL_URL_PASSWORD}'))"
    return " && ".join([*references, url])


# A modelList entry, as LiteLLM's Deployment. Only what admission checks is declared (the credential
# keys LiteLLM names, api_base); every other key is kept for the operator's checks (LiteLLM's config
# shape, the general credential rule), which report it with its path. The rules stand on
# spec.litellm, not on the entries: Kubernetes re-checks rules under list items on every write
# (status included), so an object stored before a rule existed could no longer get its status.
MODEL_ENTRY: dict[str, JsonValue] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "model_name": {"type": "string"},
        "litellm_params": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"api_base": _URL, **dict.fromkeys(SECRET_PARAMS, _CREDENTIAL)},
        },
        "model_info": FREE_FORM,
    },
}
ROUTER_SETTINGS: dict[str, JsonValue] = {
    **FREE_FORM,
    "properties": {"redis_url": _URL, **dict.fromkeys(ROUTER_SECRET_PARAMS, _CREDENTIAL)},
}


class LiteLLMSpec(ApiModel):
    # Admission checks the credential keys LiteLLM knows by name (SECRET_PARAMS, ROUTER_SECRET_PARAMS)
    # and the URL keys, declared in the schema; the general rule (any credential-like key, nested,
    # any URL with a password) and LiteLLM's config shape are checked by the model validator below,
    # in the operator and in `routeiq validate`/`render`: CEL reaches declared fields only.
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            ("has(self.modelList) != has(self.configMapRef)", "set exactly one of modelList or configMapRef"),
            (
                "!has(self.modelList) || self.modelList.all(d, has(d.model_name) && has(d.litellm_params))",
                "every modelList entry needs model_name and litellm_params (LiteLLM's config shape)",
            ),
            (
                "!has(self.modelList) || self.modelList.all(d, !has(d.litellm_params) || ("
                + _credentials_cel("d.litellm_params", SECRET_PARAMS, "api_base")
                + "))",
                f"credentials in modelList {_LITERAL_RULE}, and api_base must hold no password: a literal "
                "would land in a ConfigMap",
            ),
            (
                "!has(self.routerSettings) || ("
                + _credentials_cel("self.routerSettings", ROUTER_SECRET_PARAMS, "redis_url")
                + ")",
                f"credentials in routerSettings {_LITERAL_RULE}, and redis_url must hold no password: a "
                "literal would land in a ConfigMap",
            ),
        )
    }

    model_list: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DEPLOYMENTS,
        description="LiteLLM deployments (model_name, litellm_params, model_info), as in LiteLLM's config.",
        json_schema_extra={"items": MODEL_ENTRY},
    )
    config_map_ref: SecretKeyReference | None = Field(
        default=None, description="ConfigMap key holding a whole LiteLLM config.yaml (name, key)."
    )
    router_settings: dict[str, Any] | None = Field(
        default=None,
        description="LiteLLM router_settings (fallbacks, retries, cooldowns).",
        json_schema_extra=ROUTER_SETTINGS,
    )

    @model_validator(mode="after")
    def _as_strict_as_the_pod(self) -> LiteLLMSpec:
        """No literal credential or URL with a password anywhere, and LiteLLM's config shape; every
        problem reported with its path (relative to spec.litellm) and rule, never the value."""
        problems = list(shape_problems(self.model_list, self.router_settings))
        if self.model_list is not None:
            problems += credential_problems(self.model_list, "modelList")
        if self.router_settings is not None:
            problems += credential_problems(self.router_settings, "routerSettings")
        if problems:
            raise PydanticCustomError(
                NESTED_VIOLATIONS,
                "{count} problem(s) in the LiteLLM settings",
                {"count": len(problems), "violations": tuple(problems)},
            )
        return self


class ResourceList(ApiModel):
    cpu: str | None = Field(default=None, pattern=QUANTITY)
    memory: str | None = Field(default=None, pattern=QUANTITY)


_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity of the QUANTITY pattern as a number: "500m" -> 0.5, "1Gi" -> 1073741824."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", text)
    if match is None or match[2] not in _QUANTITY_SUFFIXES:
        raise ValueError("not a quantity of the form 500m, 2, 512Mi or 1Gi")
    return Decimal(match[1]) * _QUANTITY_SUFFIXES[match[2]]


class Resources(ApiModel):
    requests: ResourceList | None = None
    limits: ResourceList | None = None

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        """The API server refuses a Deployment whose container requests more than its limit; refuse
        the gateway instead (routeiq validate, the operator), naming the field."""
        problems = [
            (
                f"requests.{name}",
                f"must not exceed limits.{name}: the API server refuses a container whose request is "
                "above its limit",
            )
            for name in ("cpu", "memory")
            if (request := getattr(self.requests, name, None)) is not None
            and (limit := getattr(self.limits, name, None)) is not None
            and quantity(request) > quantity(limit)
        ]
        if problems:
            raise PydanticCustomError(
                NESTED_VIOLATIONS,
                "{count} request(s) above their limit",
                {"count": len(problems), "violations": tuple(problems)},
            )
        return self


class Probe(ApiModel):
    initial_delay_seconds: int | None = Field(default=None, ge=0, le=3600)
    period_seconds: int | None = Field(default=None, ge=1, le=300)
    timeout_seconds: int | None = Field(default=None, ge=1, le=300)
    failure_threshold: int | None = Field(default=None, ge=1, le=360)


class Probes(ApiModel):
    startup: Probe | None = Field(default=None, description="Sized for model loading: period x failures.")
    readiness: Probe | None = None
    liveness: Probe | None = None


class ScalingPolicy(ApiModel):
    type: Literal["Percent", "Pods"]
    value: int = Field(ge=1)
    period_seconds: int = Field(ge=1, le=1800)


class ScalingRules(ApiModel):
    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[ScalingPolicy] | None = Field(default=None, min_length=1, max_length=10)


class ScalingBehavior(ApiModel):
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


class Autoscaling(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
            )
        )
    }

    enabled: bool | None = None
    min_replicas: int | None = Field(default=None, ge=1, le=1000)
    max_replicas: int | None = Field(default=None, ge=1, le=1000)
    target_cpu_utilization: int | None = Field(default=None, ge=1, le=100, description="Percent of requests.")
    target_memory_utilization: int | None = Field(
        default=None, ge=1, le=100, description="Percent of requests."
    )
    requests_per_second: int | None = Field(
        default=None,
        ge=1,
        description="Pods metric gateway_requests_per_second target (needs a metrics adapter).",
    )
    p95_latency_ms: int | None = Field(
        default=None, ge=1, description="Pods metric gateway_p95_latency_ms target (needs a metrics adapter)."
    )
    behavior: ScalingBehavior | None = None


class PodDisruptionBudget(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "!(has(self.minAvailable) && has(self.maxUnavailable))",
                "set minAvailable or maxUnavailable, not both",
            )
        )
    }

    enabled: bool | None = None
    min_available: int | None = Field(default=None, ge=0)
    max_unavailable: int | None = Field(default=None, ge=1)


class TopologySpread(ApiModel):
    enabled: bool | None = None
    topology_key: str | None = Field(default=None, min_length=1)
    max_skew: int | None = Field(default=None, ge=1)
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] | None = None


class AntiAffinity(ApiModel):
    type: Literal["none", "soft", "hard"] | None = None
    topology_key: str | None = Field(default=None, min_length=1)


class Scheduling(ApiModel):
    topology_spread: TopologySpread | None = None
    anti_affinity: AntiAffinity | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = Field(default=None, json_schema_extra={"items": FREE_FORM})


class LabelSelector(ApiModel):
    match_labels: dict[str, str] = Field(min_length=1)


class IngressSource(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "has(self.namespaceSelector) || has(self.podSelector)",
                "set namespaceSelector, podSelector or both",
            )
        )
    }

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None


class BackingService(ApiModel):
    """Where a backing service (Redis, PostgreSQL) runs, for egress rules."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            ("has(self.podSelector) != has(self.cidr)", "set exactly one of podSelector or cidr")
        )
    }

    port: int = Field(ge=1, le=65535)
    pod_selector: LabelSelector | None = None
    cidr: str | None = Field(default=None, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")


class Egress(ApiModel):
    dns: bool = Field(default=True, description="Allow DNS (UDP and TCP 53) to any namespace.")
    https: bool = Field(default=True, description="Allow TCP 443 anywhere (LLM providers).")
    redis: BackingService | None = None
    postgres: BackingService | None = None


class NetworkPolicySpec(ApiModel):
    enabled: bool | None = None
    ingress_from: list[IngressSource] | None = Field(
        default=None, description="Sources allowed to reach port 4000; unset: any pod in the namespace."
    )
    scrape_from: list[IngressSource] | None = Field(
        default=None,
        description="Sources allowed to scrape the metrics port 9464 (e.g. Prometheus' namespace); "
        "unset: any pod of any namespace (the port serves metrics only).",
    )
    egress: Egress | None = None


class ProviderKey(ApiModel):
    env: str = Field(pattern=ENV_NAME, description="Variable LiteLLM reads, e.g. OPENAI_API_KEY.")
    secret_key_ref: SecretKeyReference


class SecretStoreRef(ApiModel):
    name: str = Field(min_length=1)
    kind: Literal["SecretStore", "ClusterSecretStore"] = "SecretStore"


class RemoteRef(ApiModel):
    key: str = Field(min_length=1)
    property: str | None = None


class ExternalSecretData(ApiModel):
    secret_key: str = Field(pattern=ENV_NAME, description="Environment variable it becomes.")
    remote_ref: RemoteRef


class ExternalSecretSpec(ApiModel):
    secret_store_ref: SecretStoreRef
    refresh_interval: str = Field(default="1h", pattern=r"^([0-9]+(s|m|h))+$")
    data: list[ExternalSecretData] = Field(min_length=1)


class Secrets(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "has(self.masterKey) || (has(self.externalSecret) && "
                "self.externalSecret.data.exists(d, d.secretKey == 'LITELLM_MASTER_KEY'))",
                "a master key is required: set masterKey, or map LITELLM_MASTER_KEY in externalSecret.data",
            )
        )
    }

    master_key: SecretKeyReference | None = Field(default=None, description="LITELLM_MASTER_KEY.")
    provider_keys: list[ProviderKey] | None = None
    redis_url: SecretKeyReference | None = Field(
        default=None, description="REDIS_URL (shared routing state)."
    )
    database_url: SecretKeyReference | None = Field(
        default=None, description="DATABASE_URL (LiteLLM keys, teams)."
    )
    external_secret: ExternalSecretSpec | None = Field(
        default=None,
        description="An external-secrets.io ExternalSecret whose keys become environment variables.",
    )


class OpenTelemetry(ApiModel):
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^/@\s]+(/\S*)?$",
        description="OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT); no user or password in it, "
        "as it lands in the pod spec.",
    )
    service_name: str | None = Field(default=None, min_length=1)
    sampler: (
        Literal[
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ]
        | None
    ) = None
    sampler_arg: str | None = Field(default=None, pattern=r"^(0(\.[0-9]+)?|1(\.0+)?)$")


class ServiceMonitorSpec(ApiModel):
    enabled: bool = False
    interval: str = Field(default="30s", pattern=r"^[0-9]+(s|m)$")


class PrometheusRuleSpec(ApiModel):
    enabled: bool = Field(
        default=False,
        description="Render a PrometheusRule <name>-gateway holding RouteIQ's gateway alerts, each "
        "expression scoped to this gateway's series (needs the Prometheus Operator's CRD).",
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description="Labels added to the PrometheusRule, e.g. for the Prometheus' ruleSelector "
        "(release: prometheus).",
    )


class Observability(ApiModel):
    open_telemetry: OpenTelemetry | None = None
    service_monitor: ServiceMonitorSpec | None = None
    prometheus_rule: PrometheusRuleSpec | None = None


class Features(ApiModel):
    policy: bool | None = Field(default=None, description="ROUTEIQ_POLICY_ENABLED")
    ab_testing: bool | None = Field(default=None, description="ROUTEIQ_AB_TESTING_ENABLED")
    cache: bool | None = Field(default=None, description="ROUTEIQ_CACHE_ENABLED")


class ServiceSpec(ApiModel):
    type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    port: int = Field(default=4000, ge=1, le=65535)


class RouteIQGatewaySpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.replicas) || !has(self.autoscaling) || !has(self.autoscaling.enabled) "
                "|| !self.autoscaling.enabled",
                "replicas cannot be set while autoscaling is enabled; set autoscaling.minReplicas instead",
            )
        )
    }

    tier: Tier = Field(default=Tier.STANDARD, description="Preset for every field left unset.")
    image: GatewayImage = Field(default_factory=GatewayImage)
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Fixed replica count (no autoscaling)."
    )
    workers: int | None = Field(
        default=None, ge=1, le=64, description="uvicorn workers per pod (ROUTEIQ_WORKERS)."
    )
    routing: Routing = Field(default_factory=Routing)
    litellm: LiteLLMSpec
    resources: Resources | None = None
    probes: Probes | None = None
    autoscaling: Autoscaling | None = None
    pod_disruption_budget: PodDisruptionBudget | None = None
    scheduling: Scheduling | None = None
    network_policy: NetworkPolicySpec | None = None
    secrets: Secrets
    observability: Observability | None = None
    features: Features | None = None
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    drain_timeout_seconds: int | None = Field(
        default=None, ge=1, le=3600, description="ROUTEIQ_DRAIN_TIMEOUT_SECONDS; the grace period adds 15 s."
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=60,
        le=3600,
        description="The Deployment's progressDeadlineSeconds: a rollout (a new router model too) that "
        "makes no progress for this long has failed; a new model's digest is then rolled back.",
    )


class LoadedModel(ApiModel):
    """A router model (a ModelArtifact's verified digest) the gateway's pods have rolled out."""

    digest: str = Field(pattern=r"^[a-f0-9]{64}$", description="sha256 of the artifact's manifest.json.")
    uri: str = Field(
        min_length=1, description="Its verified location: s3://, gs://, file:/// or pvc://<claim>/<path>."
    )
    role: Literal["routing", "variant"] = Field(
        description="routing: spec.routing.modelArtifactRef; variant: an A/B experiment variant's model."
    )


class RouteIQGatewayStatus(ApiModel):
    observed_generation: int | None = None
    tier: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    endpoint: str | None = Field(default=None, description="In-cluster URL of the gateway Service.")
    models: dict[str, LoadedModel] | None = Field(
        default=None,
        description="The router models the pods have rolled out successfully, by ModelArtifact name: "
        "the stable set a failed model rollout returns to.",
    )
    rejected_models: dict[str, str] | None = Field(
        default=None,
        description="ModelArtifact name -> the digest whose rollout failed (progress deadline exceeded); "
        "it is not tried again, a newer digest is.",
    )
    conditions: list[Condition] | None = None


class RouteIQGateway(ApiModel):
    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="RouteIQGateway",
        plural="routeiqgateways",
        singular="routeiqgateway",
        short_names=["rqgw"],
        printer_columns=[
            PrinterColumn(name="Tier", type="string", json_path=".spec.tier"),
            PrinterColumn(name="Strategy", type="string", json_path=".spec.routing.strategy"),
            PrinterColumn(
                name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'
            ),
            PrinterColumn(name="Replicas", type="integer", json_path=".status.replicas"),
            PrinterColumn(name="Available", type="integer", json_path=".status.readyReplicas"),
            PrinterColumn(name="Endpoint", type="string", json_path=".status.endpoint", priority=1),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
    )

    api_version: Literal["routeiq.io/v1alpha1"] = "routeiq.io/v1alpha1"
    kind: Literal["RouteIQGateway"] = "RouteIQGateway"
    metadata: ObjectMeta
    spec: RouteIQGatewaySpec
    status: RouteIQGatewayStatus | None = None
