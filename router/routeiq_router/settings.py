"""RouteIQ's configuration: one Pydantic Settings class read from the environment.

Over 500 lines because `RouteIQSettings` keeps every variable's declaration (type, bounds,
default, group, documentation) and validators together in one class of ~400 lines: it is the
single source of truth that start-up validation, `routeiq config` and `docs/configuration.md`
(both rendered by `routeiq_router.configuration`) are derived from.

Also here: reading it from the environment (`load_settings`, errors naming each variable) and
the warnings for variables RouteIQ does not know or does not act on yet.

    >>> settings = load_settings({"LITELLM_MASTER_KEY": "sk-example", "ROUTEIQ_STRATEGY": "least-busy"})
    >>> settings.strategy
    'least-busy'
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from routeiq_router.strategies import registry
from routeiq_router.strategies.base import MODEL_KEY_PATTERN
from routeiq_router.uris import parse_source

__all__ = [
    "ENV_PREFIX",
    "RouteIQSettings",
    "SettingsError",
    "TracesSampler",
    "VariantModel",
    "acted_on",
    "env_name",
    "load_settings",
    "not_yet_acted_on",
    "unknown_variable_warnings",
]

ENV_PREFIX: Final = "ROUTEIQ_"


class SettingsError(ValueError):
    """Raised when the environment holds an invalid value; the message names each variable."""


class TracesSampler(StrEnum):
    """The samplers of the OpenTelemetry specification's `OTEL_TRACES_SAMPLER`."""

    ALWAYS_ON = "always_on"
    ALWAYS_OFF = "always_off"
    TRACEIDRATIO = "traceidratio"
    PARENTBASED_ALWAYS_ON = "parentbased_always_on"
    PARENTBASED_ALWAYS_OFF = "parentbased_always_off"
    PARENTBASED_TRACEIDRATIO = "parentbased_traceidratio"


def _group(name: str, *, acted_on: bool = True) -> dict[str, Any]:
    # acted_on=False: validated and documented now, its feature is not built yet; the gateway
    # warns when such a variable is set, so no setting is ever silently ignored
    return {"group": name, "acted_on": acted_on}


_COMMA_LIST = Annotated[list[str], NoDecode]


class VariantModel(BaseModel):
    """One entry of `ROUTEIQ_VARIANT_MODELS`: a router model artifact an A/B variant routes with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(
        min_length=1,
        description="The artifact: `s3://bucket/key`, `gs://bucket/key`, `file:///path` or a path.",
    )
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The sha256 of its `manifest.json` (64 lowercase hex): any other artifact is refused.",
    )
    public_key: str | None = Field(
        default=None,
        alias="publicKey",
        min_length=1,
        description="ed25519 public key (PEM text or a PEM file's path); unset: ROUTEIQ_MODEL_PUBLIC_KEY.",
    )

    @field_validator("uri")
    @classmethod
    def _supported_uri(cls, value: str) -> str:
        parse_source(value)  # ValueError naming the problem
        return value


_VARIANT_MODELS = Annotated[dict[str, VariantModel], NoDecode]


class RouteIQSettings(BaseSettings):
    """Every environment variable RouteIQ reads, with its type, default and meaning."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # Identity and auth
    master_key: SecretStr | None = Field(
        default=None,
        validation_alias="LITELLM_MASTER_KEY",
        description="LiteLLM admin key; required by `routeiq gateway`. Must start with `sk-`.",
        json_schema_extra=_group("Identity and auth"),
    )
    config_path: Path | None = Field(
        default=None,
        validation_alias="LITELLM_CONFIG_PATH",
        description=(
            "LiteLLM proxy config (model_list, router_settings). Unset: the embedded demo config "
            "with mock deployments. The gateway image sets `/app/config/config.yaml`."
        ),
        json_schema_extra=_group("Identity and auth"),
    )

    # Backing services
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="PostgreSQL connection string for LiteLLM (keys, teams, budgets). Unset in tier 1.",
        json_schema_extra=_group("Backing services"),
    )
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description=(
            "Redis for the routing state every worker and replica shares (`redis://`, `rediss://` "
            "or `unix://`, password in the URL). Unset: each worker keeps its own state in memory."
        ),
        json_schema_extra=_group("Backing services"),
    )

    # Routing
    strategy: str = Field(
        default="round-robin",
        description="Routing strategy every worker installs; see `routeiq strategies`.",
        json_schema_extra=_group("Routing"),
    )
    gateway: str = Field(
        default="default/routeiq",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "This gateway's identity `<namespace>/<name>`: its shared-state keys in Redis are "
            "`routeiq:{<namespace>/<name>}:...`. Every replica of one gateway sets the same value."
        ),
        json_schema_extra=_group("Routing"),
    )
    models_path: str = Field(
        default="/app/models",
        description=(
            "The router model artifact the trained strategies load: its directory, a `.tar.gz`, or "
            "a `file://` URI. `ROUTEIQ_MODEL_S3_URI` takes precedence."
        ),
        json_schema_extra=_group("Routing"),
    )
    model_s3_uri: str | None = Field(
        default=None,
        pattern=r"^(s3|gs)://[^/\s]+(/\S*)?$",
        description="`s3://bucket/key` or `gs://bucket/key` of the router model artifact to sync.",
        json_schema_extra=_group("Routing"),
    )
    model_digest: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "The sha256 of the artifact's `manifest.json` the gateway must load (the operator pins "
            "it); any other artifact is refused. Unset: any artifact that passes the other checks."
        ),
        json_schema_extra=_group("Routing"),
    )
    model_public_key: str | None = Field(
        default=None,
        description=(
            "ed25519 public key (PEM text, or the path of a PEM file) that the artifact's "
            "`manifest.sig` must verify against. Unset: signatures are not required."
        ),
        json_schema_extra=_group("Routing"),
    )
    embedding_model: str | None = Field(
        default=None,
        description=(
            "Sentence-transformer for artifacts trained with the torch embedder: a directory, or a "
            "name under `SENTENCE_TRANSFORMERS_HOME` (never downloaded). Unset: the bundled "
            "all-MiniLM-L6-v2. Artifacts trained with the onnx or static embedder hold it (this may "
            "name that embedder's directory instead)."
        ),
        json_schema_extra=_group("Routing"),
    )
    embedding_cache_size: int = Field(
        default=10000,
        ge=0,
        le=1000000,
        description="Prompt embeddings each worker keeps (LRU); 0: no cache.",
        json_schema_extra=_group("Routing"),
    )
    hot_reload: bool = Field(
        default=False,
        description="Reload the router model when the artifact changes.",
        json_schema_extra=_group("Routing"),
    )
    reload_interval: int = Field(
        default=30,
        ge=5,
        le=300,
        description="Seconds between checks for a changed model artifact (5-300).",
        json_schema_extra=_group("Routing"),
    )

    variant_models: _VARIANT_MODELS = Field(
        default_factory=dict,
        description=(
            "Router models that A/B variants route with, by model key (a variant's `model`): a JSON "
            'object `{"<key>": {"uri": "<s3://, gs://, file:// URI or path>", "digest": "<sha256 of its '
            'manifest.json: required>", "publicKey": "<PEM or its path: optional>"}}`. Each loads like '
            "the main model, pinned to its digest (signed, when it or `ROUTEIQ_MODEL_PUBLIC_KEY` gives a "
            "key; `ROUTEIQ_HOT_RELOAD` applies); a worker is not ready until all are loaded."
        ),
        json_schema_extra=_group("Routing"),
    )

    # Server
    host: str = Field(
        default="0.0.0.0",
        description="Address the gateway binds.",
        json_schema_extra=_group("Server"),
    )
    port: int = Field(
        default=4000,
        ge=1,
        le=65535,
        description="Port the gateway binds.",
        json_schema_extra=_group("Server"),
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description=(
            "Port of the Prometheus `/metrics` listener, one scrape for all workers of the pod "
            "(docs/observability.md); 0: no listener. It binds the gateway's address."
        ),
        json_schema_extra=_group("Server"),
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "uvicorn worker processes. Unset: from the CPU count and the strategy "
            "(simple 2n+1, ELO/MF n+1, MLP/SVM n, KNN max(1, n/2))."
        ),
        json_schema_extra=_group("Server"),
    )
    log_level: str = Field(
        default="INFO",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="Log level of the JSON logs on stdout.",
        json_schema_extra=_group("Server"),
    )

    # Feature flags
    policy_enabled: bool = Field(
        default=False,
        description="Enable the policy engine.",
        json_schema_extra=_group("Feature flags", acted_on=False),
    )
    ab_testing_enabled: bool = Field(
        default=False,
        description=(
            "Split traffic between the variants in the gateway's `ab:weights` (set by a "
            "RoutingExperiment or `routeiq state weights set`). Off: the weights are ignored."
        ),
        json_schema_extra=_group("Feature flags"),
    )
    cache_enabled: bool = Field(
        default=False,
        description=(
            "Share the trained strategies' prompt embeddings between workers and replicas through "
            "Redis (`ROUTEIQ_CACHE_REDIS_URL`, else `REDIS_URL`). Each worker's own LRU is always on."
        ),
        json_schema_extra=_group("Feature flags"),
    )
    cache_redis_url: SecretStr | None = Field(
        default=None,
        description="Redis for the shared embedding cache; unset: `REDIS_URL`.",
        json_schema_extra=_group("Feature flags"),
    )

    # Resilience
    max_concurrent_requests: int = Field(
        default=0,
        ge=0,
        description="Requests one worker serves at once; more get 503. 0: no limit.",
        json_schema_extra=_group("Resilience"),
    )
    drain_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="On SIGTERM, how long requests in flight may take to finish while new ones get 503.",
        json_schema_extra=_group("Resilience"),
    )
    worker_healthcheck_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "How long the multi-worker supervisor waits for a worker's reply to its health ping "
            "before restarting it. Generous by default, so a worker starting on a starved CPU or "
            "loading a trained router is not killed in a loop."
        ),
        json_schema_extra=_group("Resilience"),
    )
    max_request_body_bytes: int = Field(
        default=26214400,
        ge=1024,
        le=1073741824,
        description=(
            "Largest request body the gateway reads on the OpenAI request routes (chat completions, "
            "completions, embeddings, responses); a larger one gets 413 before LiteLLM sees it, "
            "checked against `Content-Length` up front and while the body arrives."
        ),
        json_schema_extra=_group("Resilience"),
    )
    client_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "How long a client may take to send a request's body on the OpenAI request routes, "
            "from the moment its headers arrived; a slower one gets 408 and its connection is "
            "closed. Slow headers are not covered (uvicorn has no header timeout): bound them at the "
            "load balancer or reverse proxy in front."
        ),
        json_schema_extra=_group("Resilience"),
    )
    cb_enabled: bool = Field(
        default=True,
        description=(
            "Circuit breakers per deployment, shared through Redis. On: they replace LiteLLM's "
            "per-process cooldowns (one failure count, one state). Off: LiteLLM's cooldowns apply."
        ),
        json_schema_extra=_group("Resilience"),
    )
    cb_failure_threshold: int = Field(
        default=5,
        ge=1,
        description="Failures of a deployment within `ROUTEIQ_CB_WINDOW_SECONDS` that open its breaker.",
        json_schema_extra=_group("Resilience"),
    )
    cb_window_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="The window in which failures are counted towards the threshold.",
        json_schema_extra=_group("Resilience"),
    )
    cb_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds an open circuit breaker stays open before admitting probes.",
        json_schema_extra=_group("Resilience"),
    )
    cb_half_open_probes: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Requests a half-open breaker admits (across all workers); one success closes it.",
        json_schema_extra=_group("Resilience"),
    )
    affinity_ttl_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=604800,
        description=(
            "How long a conversation (`metadata.conversation_id`) stays on the deployment that served "
            "it, unless that deployment's breaker opens or LiteLLM cools it down. 0: no affinity."
        ),
        json_schema_extra=_group("Routing"),
    )
    ab_sticky_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        le=2592000,
        description="How long a conversation or user keeps the A/B variant it was first assigned.",
        json_schema_extra=_group("Routing"),
    )
    redis_timeout_ms: int = Field(
        default=250,
        ge=10,
        le=10000,
        description=(
            "Timeout of one Redis operation on the request path; past it the request is routed on "
            "the worker's last known state and Redis is reported degraded."
        ),
        json_schema_extra=_group("Backing services"),
    )
    state_resync_seconds: float = Field(
        default=5.0,
        ge=0.5,
        le=300,
        description=(
            "Seconds between full reloads of the shared state, a safety net behind the pub/sub "
            "notifications that normally apply a change within milliseconds."
        ),
        json_schema_extra=_group("Backing services"),
    )

    # SSRF protection for artifact and config downloads
    ssrf_allow_private: bool = Field(
        default=False,
        description="Allow downloads from private, loopback and link-local addresses.",
        json_schema_extra=_group("SSRF protection"),
    )
    ssrf_host_allowlist: _COMMA_LIST = Field(
        default_factory=list,
        description="Comma-separated hosts downloads may reach even when private.",
        json_schema_extra=_group("SSRF protection"),
    )
    ssrf_cidr_allowlist: _COMMA_LIST = Field(
        default_factory=list,
        description="Comma-separated CIDRs downloads may reach even when private.",
        json_schema_extra=_group("SSRF protection"),
    )

    # OpenTelemetry (standard variables)
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        pattern=r"^https?://\S+$",
        description="OTLP/HTTP collector base URL: each worker pushes traces (`/v1/traces`) and metrics (`/v1/metrics`) there; unset: no export.",
        json_schema_extra=_group("OpenTelemetry"),
    )
    otel_service_name: str = Field(
        default="routeiq-gateway",
        min_length=1,
        validation_alias="OTEL_SERVICE_NAME",
        description="Service name on traces and metrics.",
        json_schema_extra=_group("OpenTelemetry"),
    )
    otel_traces_sampler: TracesSampler = Field(
        default=TracesSampler.PARENTBASED_ALWAYS_ON,
        validation_alias="OTEL_TRACES_SAMPLER",
        description="Trace sampler, as in the OpenTelemetry specification.",
        json_schema_extra=_group("OpenTelemetry"),
    )
    otel_traces_sampler_arg: float | None = Field(
        default=None,
        ge=0,
        le=1,
        validation_alias="OTEL_TRACES_SAMPLER_ARG",
        description="Sampling ratio for the `traceidratio` samplers (0-1).",
        json_schema_extra=_group("OpenTelemetry"),
    )

    @field_validator("master_key")
    @classmethod
    def _master_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("sk-"):
            raise ValueError("must start with 'sk-' (LiteLLM refuses other master keys)")
        return value

    @field_validator("redis_url", "cache_redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"redis", "rediss", "unix"}:
                raise ValueError(
                    f"scheme must be redis://, rediss:// or unix://, not {scheme or 'missing'!r}"
                )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"postgresql", "postgres"}:
                raise ValueError(f"scheme must be postgresql://, not {scheme or 'missing'!r}")
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        registry.strategy_class(value)  # raises UnknownStrategyError listing the valid names
        return value

    @field_validator("ssrf_host_allowlist", "ssrf_cidr_allowlist", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("variant_models", mode="before")
    @classmethod
    def _parse_json_object(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"not JSON ({error.msg} at character {error.pos})") from None
            if not isinstance(value, dict):
                raise ValueError('must be a JSON object {"<model key>": {"uri": ..., "digest": ...}}')
        return value

    @field_validator("variant_models")
    @classmethod
    def _model_keys(cls, value: dict[str, VariantModel]) -> dict[str, VariantModel]:
        for key in value:
            if not re.fullmatch(MODEL_KEY_PATTERN, key):
                raise ValueError(
                    f"model key {key!r}: must be 1-253 lowercase letters, digits, '-' or '.', starting "
                    "and ending with a letter or digit (a Kubernetes object name)"
                )
            if registry.is_known(key):
                raise ValueError(
                    f"model key {key!r}: is the name of a routing strategy, under which the worker holds "
                    "that strategy's own model; choose another key"
                )
        return value

    @field_validator("ssrf_cidr_allowlist")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/8") from None
        return value


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    info = RouteIQSettings.model_fields[field_name]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field_name.upper()


def _known_variables() -> dict[str, str]:
    return {env_name(name): name for name in RouteIQSettings.model_fields}


def load_settings(environ: Mapping[str, str] | None = None) -> RouteIQSettings:
    """Read the settings from `environ` (default: the process environment).

    Raises SettingsError with one line per invalid variable, naming it and the problem.
    """
    source = dict(os.environ if environ is None else environ)
    known = _known_variables()
    # case-insensitive lookup, as pydantic-settings does for the process environment
    upper_source = {key.upper(): value for key, value in source.items()}
    values = {field: upper_source[var] for var, field in known.items() if var in upper_source}
    try:
        return RouteIQSettings.model_validate(values)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            var = env_name(field) if field in RouteIQSettings.model_fields else field
            shown = _shown_input(field, problem.get("input"), nested=len(problem["loc"]) > 1)
            message = problem["msg"].removeprefix("Value error, ")
            nested = ".".join(str(part) for part in problem["loc"][1:])  # e.g. a model key and field
            where = f"{nested}: " if nested else ""
            lines.append(f"{var}: {where}{message}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _shown_input(field: str, value: object, *, nested: bool = False) -> str:
    if value is None or isinstance(value, dict) or field not in RouteIQSettings.model_fields:
        return ""
    info = RouteIQSettings.model_fields[field]
    if _is_secret(info) or (not nested and "dict" in str(info.annotation)):
        return ""  # a secret, or a whole JSON object (the message names the problem within it)
    return f" (got {value!r})"


def unknown_variable_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per `ROUTEIQ_*` variable RouteIQ does not read, naming the closest known one."""
    source = os.environ if environ is None else environ
    known = sorted(var for var in _known_variables() if var.startswith(ENV_PREFIX))
    warnings = []
    for var in sorted(source):
        upper = var.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known variables: {', '.join(known)}"
            warnings.append(f"unknown variable {var} is ignored{hint}")
    return warnings


def acted_on(info: FieldInfo) -> bool:
    """Whether RouteIQ acts on the field's variable yet (see `not_yet_acted_on`)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return bool(extra.get("acted_on", True))


def not_yet_acted_on(settings: RouteIQSettings) -> list[str]:
    """Variables set away from their default whose feature this version does not provide yet."""
    return [
        env_name(name)
        for name, info in RouteIQSettings.model_fields.items()
        if not acted_on(info) and name in settings.model_fields_set
    ]


def _is_secret(info: FieldInfo) -> bool:
    return "SecretStr" in str(info.annotation)
