"""The gateway's Prometheus instruments, one place for every name and label
(docs/observability.md "Gateway metrics" is the contract).

Each worker writes them with plain prometheus_client calls. Under `routeiq gateway`,
`PROMETHEUS_MULTIPROC_DIR` is set before any worker imports prometheus_client, so every value
lives in a per-process file of that directory and the gateway's parent serves one scrape with
the totals of all workers (`routeiq_router.gateway.telemetry`). Elsewhere (tests, the library
used without the gateway) they are ordinary in-process metrics of the default registry.

Without prometheus_client installed (an install without the `gateway` extra) every instrument
is a no-op, so the state, the trained routers and the CLI import this module freely.

With `OTEL_EXPORTER_OTLP_ENDPOINT`, the gateway also calls `enable_otlp(meter_provider)` in each
worker: the routing instruments below (decision duration, strategy usage, A/B split, model
loads, breaker state) are then recorded a second time on OpenTelemetry instruments of the same
names (`routeiq.routing.decision.duration`, ...) and labels, which the worker pushes over OTLP.

The functions below are the request path's only way in: no locks, no I/O beyond
prometheus_client's own, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BREAKER_STATES",
    "ab_assigned",
    "ab_weights",
    "breaker_state",
    "database_up",
    "draining",
    "embedding_cache",
    "enable_otlp",
    "model_groups",
    "model_load",
    "propagation_lag",
    "redis_up",
    "request_finished",
    "requests_in_flight",
    "routing_decision",
    "routing_outcome",
    "usage",
]

BREAKER_STATES = ("closed", "open", "half_open")


class _Noop:
    """Stands in for every instrument when prometheus_client is not installed."""

    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, amount: float = 1.0) -> None:
        pass

    def dec(self, amount: float = 1.0) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


try:
    from prometheus_client import Counter, Gauge, Histogram
except ImportError:  # pragma: no cover - an install without the gateway extra
    _NOOP = _Noop()

    def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Any:
        return _NOOP

    def _gauge(name: str, documentation: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Any:
        return _NOOP

    def _histogram(
        name: str, documentation: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()
    ) -> Any:
        return _NOOP

else:

    def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Any:
        return Counter(name, documentation, labels)

    def _gauge(name: str, documentation: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Any:
        return Gauge(name, documentation, labels, multiprocess_mode=mode)  # type: ignore[arg-type]

    def _histogram(
        name: str, documentation: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()
    ) -> Any:
        return Histogram(name, documentation, labels, buckets=buckets)


_MODEL = ("gen_ai_request_model", "routeiq_deployment", "gen_ai_provider_name")
# OpenTelemetry GenAI semantic conventions' advisory buckets
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

DECISION_DURATION = _histogram(
    "routeiq_routing_decision_duration_seconds",
    "Time to choose a deployment (routeiq.routing.decision.duration).",
    ("strategy", "model_group"),
    _DECISION_BUCKETS,
)
STRATEGY_USAGE = _counter(
    "routeiq_routing_strategy_usage",
    "Routing decisions by the strategy asked to decide; outcome is routed or fallback_<reason>.",
    ("strategy", "outcome"),
)
AB_SPLIT = _counter(
    "routeiq_ab_traffic_split",
    "Requests assigned to each variant of the A/B split.",
    ("experiment", "variant"),
)
AB_WEIGHT = _gauge(
    "routeiq_ab_target_weight",
    "Each A/B variant's target share, in percent.",
    ("experiment", "variant"),
    "livemostrecent",
)
BREAKER_STATE = _gauge(
    "routeiq_circuit_breaker_state",
    "1 for the circuit breaker's current state, 0 for the others.",
    ("deployment", "model_group", "state"),
    "livemostrecent",
)
MODEL_LOAD_DURATION = _histogram(
    "routeiq_model_load_duration_seconds",
    "Time to load and verify a router model.",
    ("strategy",),
    _LOAD_BUCKETS,
)
MODEL_LOADS = _counter(
    "routeiq_model_loads", "Router model loads, loaded or refused.", ("strategy", "result")
)
REQUEST_DURATION = _histogram(
    "gen_ai_server_request_duration_seconds",
    "GenAI request duration; error_type is empty on success.",
    ("gen_ai_operation_name", *_MODEL, "error_type"),
    _DURATION_BUCKETS,
)
TOKEN_USAGE = _histogram(
    "gen_ai_client_token_usage",
    "Tokens per request, input or output.",
    ("gen_ai_token_type", *_MODEL),
    _TOKEN_BUCKETS,
)
TIME_TO_FIRST_TOKEN = _histogram(
    "gen_ai_server_time_to_first_token_seconds", "Streams: time to the first token.", _MODEL, _TTFT_BUCKETS
)
TIME_PER_OUTPUT_TOKEN = _histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Streams: time per output token after the first.",
    _MODEL,
    _TPOT_BUCKETS,
)
REQUEST_COST = _counter("routeiq_request_cost_usd", "Cost in USD, where LiteLLM computes it.", _MODEL)
IN_FLIGHT = _gauge("routeiq_requests_in_flight", "Requests being served.", (), "livesum")
DRAINING = _gauge("routeiq_draining", "1 while the pod drains after SIGTERM.", (), "livemax")
EMBEDDING_CACHE = _counter(
    "routeiq_embedding_cache_requests", "Embedding cache lookups, hit or miss.", ("result",)
)
PROPAGATION_LAG = _histogram(
    "routeiq_state_propagation_lag_seconds",
    "From a shared-state change in Redis to this worker applying it.",
    (),
    _LAG_BUCKETS,
)


class _Otlp:
    """The OpenTelemetry twins of the routing instruments (see `enable_otlp`)."""

    def __init__(self, meter_provider: Any) -> None:
        meter = meter_provider.get_meter("routeiq_router")
        self.decision_duration = meter.create_histogram(
            "routeiq.routing.decision.duration",
            unit="s",
            description="Time to choose a deployment.",
            explicit_bucket_boundaries_advisory=list(_DECISION_BUCKETS),
        )
        self.strategy_usage = meter.create_counter(
            "routeiq.routing.strategy.usage",
            unit="{decision}",
            description="Routing decisions by the strategy asked to decide; outcome is routed or fallback_<reason>.",
        )
        self.ab_split = meter.create_counter(
            "routeiq.ab.traffic.split", unit="{request}", description="Requests assigned to each A/B variant."
        )
        self.model_load_duration = meter.create_histogram(
            "routeiq.model.load.duration",
            unit="s",
            description="Time to load and verify a router model.",
            explicit_bucket_boundaries_advisory=list(_LOAD_BUCKETS),
        )
        self.model_loads = meter.create_counter(
            "routeiq.model.loads", unit="{load}", description="Router model loads, loaded or refused."
        )
        self.breaker_state = meter.create_gauge(
            "routeiq.circuit_breaker.state",
            description="1 for the circuit breaker's current state, 0 for the others.",
        )


_OTLP: _Otlp | None = None


def enable_otlp(meter_provider: Any) -> None:
    """Record the routing instruments on `meter_provider` too (an OpenTelemetry MeterProvider)."""
    global _OTLP
    _OTLP = _Otlp(meter_provider)


# deployment id -> model group, filled when the strategy is installed and on every decision, so
# that breaker transitions seen in the shared state (which knows deployments only) get their group
_MODEL_GROUPS: dict[str, str] = {}


def model_groups(groups: Mapping[str, str]) -> None:
    """Remember which model group each deployment id serves."""
    _MODEL_GROUPS.update(groups)


def routing_decision(strategy: str, model_group: str, deployment: str, seconds: float, outcome: str) -> None:
    """One decision: its duration and its outcome (`routed` or `fallback_<reason>`)."""
    _MODEL_GROUPS[deployment] = model_group
    DECISION_DURATION.labels(strategy, model_group).observe(seconds)
    STRATEGY_USAGE.labels(strategy, outcome).inc()
    if _OTLP is not None:
        _OTLP.decision_duration.record(seconds, {"strategy": strategy, "model_group": model_group})
        _OTLP.strategy_usage.add(1, {"strategy": strategy, "outcome": outcome})


def routing_outcome(strategy: str, outcome: str) -> None:
    """A decision that chose no deployment (e.g. `fallback_all_breakers_open`)."""
    STRATEGY_USAGE.labels(strategy, outcome).inc()
    if _OTLP is not None:
        _OTLP.strategy_usage.add(1, {"strategy": strategy, "outcome": outcome})


def ab_assigned(experiment: str | None, variant: str) -> None:
    AB_SPLIT.labels(experiment or "", variant).inc()
    if _OTLP is not None:
        _OTLP.ab_split.add(1, {"experiment": experiment or "", "variant": variant})


def ab_weights(weights: Mapping[tuple[str, str], float], previous: Mapping[tuple[str, str], float]) -> None:
    """The split's target weights by (experiment, variant); variants no longer in it drop to 0."""
    for key in previous:
        if key not in weights:
            AB_WEIGHT.labels(*key).set(0.0)
    for (experiment, variant), weight in weights.items():
        AB_WEIGHT.labels(experiment, variant).set(weight)


def breaker_state(deployment: str, state: str, model_group: str | None = None) -> None:
    """The breaker of `deployment` is now in `state` (closed, open or half_open)."""
    group = model_group if model_group is not None else _MODEL_GROUPS.get(deployment, "")
    for candidate in BREAKER_STATES:
        BREAKER_STATE.labels(deployment, group, candidate).set(1.0 if candidate == state else 0.0)
        if _OTLP is not None:
            _OTLP.breaker_state.set(
                1 if candidate == state else 0,
                {"deployment": deployment, "model_group": group, "state": candidate},
            )


def model_load(strategy: str, seconds: float, loaded: bool) -> None:
    MODEL_LOAD_DURATION.labels(strategy).observe(seconds)
    MODEL_LOADS.labels(strategy, "loaded" if loaded else "refused").inc()
    if _OTLP is not None:
        _OTLP.model_load_duration.record(seconds, {"strategy": strategy})
        _OTLP.model_loads.add(1, {"strategy": strategy, "result": "loaded" if loaded else "refused"})


def _seconds(start: object, end: object) -> float | None:
    if start is None or end is None:
        return None
    try:
        delta = end - start  # type: ignore[operator]
        seconds = delta.total_seconds() if hasattr(delta, "total_seconds") else float(delta)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


_OPERATIONS = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "responses": "chat",
    "aresponses": "chat",
}


def request_finished(
    kwargs: Mapping[str, Any], response: object, start_time: object, end_time: object, error: object = None
) -> None:
    """The GenAI metrics of one provider call, from LiteLLM's success/failure callback."""
    logged = kwargs.get("standard_logging_object")
    logged = logged if isinstance(logged, Mapping) else {}
    params = kwargs.get("litellm_params") or {}
    model_info = params.get("model_info") if isinstance(params, Mapping) else None
    deployment = model_info.get("id") if isinstance(model_info, Mapping) else None
    deployment = deployment if deployment is not None else logged.get("model_id")
    model = logged.get("model_group") or kwargs.get("model_group") or kwargs.get("model") or ""
    provider = logged.get("custom_llm_provider") or params.get("custom_llm_provider") or ""
    labels = (str(model), "" if deployment is None else str(deployment), str(provider))
    call_type = str(kwargs.get("call_type") or logged.get("call_type") or "")
    operation = _OPERATIONS.get(call_type, call_type)
    error_type = "" if error is None else type(error).__name__
    seconds = _seconds(start_time, end_time)
    if seconds is not None:
        REQUEST_DURATION.labels(operation, *labels, error_type).observe(seconds)
    if error is not None:
        return
    prompt, completion = usage(kwargs.get("complete_streaming_response") or response)
    TOKEN_USAGE.labels("input", *labels).observe(prompt)
    TOKEN_USAGE.labels("output", *labels).observe(completion)
    cost = kwargs.get("response_cost", logged.get("response_cost"))
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
        REQUEST_COST.labels(*labels).inc(cost)
    if kwargs.get("stream") is True or logged.get("stream") is True:
        first = kwargs.get("completion_start_time")
        to_first = _seconds(start_time, first)
        if to_first is not None:
            TIME_TO_FIRST_TOKEN.labels(*labels).observe(to_first)
            after = _seconds(first, end_time)
            if after is not None and completion > 1:
                TIME_PER_OUTPUT_TOKEN.labels(*labels).observe(after / (completion - 1))


def usage(response: object) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a LiteLLM response (0, 0 when it has none)."""
    found = getattr(response, "usage", None)
    if found is None and isinstance(response, Mapping):
        found = response.get("usage")
    if found is None:
        return 0, 0

    def number(name: str) -> int:
        value = found.get(name) if isinstance(found, Mapping) else getattr(found, name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return number("prompt_tokens"), number("completion_tokens")


# created on first use: a gauge without labels is exported (as 0) from its creation, and these
# two are exported only where there is a Redis or a database to report on
_LAZY: dict[str, Any] = {}


def redis_up(up: bool) -> None:
    gauge = _LAZY.get("redis")
    if gauge is None:
        gauge = _LAZY["redis"] = _gauge(
            "routeiq_redis_up", "1 while the shared state's Redis answers, 0 while degraded.", (), "livemin"
        )
    gauge.set(1.0 if up else 0.0)


def database_up(up: bool) -> None:
    gauge = _LAZY.get("database")
    if gauge is None:
        gauge = _LAZY["database"] = _gauge(
            "routeiq_database_up", "1 while LiteLLM's database answers.", (), "livemin"
        )
    gauge.set(1.0 if up else 0.0)


def requests_in_flight(delta: int) -> None:
    IN_FLIGHT.inc(delta)


def draining(on: bool) -> None:
    DRAINING.set(1.0 if on else 0.0)


def embedding_cache(hits: int, misses: int) -> None:
    if hits:
        EMBEDDING_CACHE.labels("hit").inc(hits)
    if misses:
        EMBEDDING_CACHE.labels("miss").inc(misses)


def propagation_lag(published_ms: object) -> None:
    """A shared-state event published at `published_ms` (Redis time, ms) was applied just now."""
    if isinstance(published_ms, int | float) and not isinstance(published_ms, bool):
        PROPAGATION_LAG.observe(max(0.0, time.time() - published_ms / 1000.0))
