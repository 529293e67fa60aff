"""routeiq_router.metrics, in process (the default registry): the routing outcomes, the breaker
gauge, the A/B split with its experiment, the propagation lag, the GenAI request metrics."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from litellm.router import Router
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from routeiq_router import metrics
from routeiq_router.routing import RouteIQRoutingStrategy
from routeiq_router.state import BreakerPolicy
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.store import RoutingState, StateOptions, VariantSpec
from routeiq_router.state.variants import decode_variants
from routeiq_router.strategies import (
    CpuProfile,
    Deployment,
    RoutingRequest,
    StrategyUnavailableError,
    names,
)
from tests.redis_server import RedisServer

MODEL_LIST = [
    {"model_name": "chat", "litellm_params": {"model": "openai/a", "api_key": "sk-x", "mock_response": "a"},
     "model_info": {"id": "dep-a"}},
    {"model_name": "chat", "litellm_params": {"model": "openai/b", "api_key": "sk-x", "mock_response": "b"},
     "model_info": {"id": "dep-b"}},
]  # fmt: skip


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class ModelNotLoadedError(StrategyUnavailableError):
    """Named as routeiq_router.ml.runtime's, which the routing layer recognises by name."""


class Refusing:
    """A strategy that cannot decide in this worker."""

    cpu_profile = CpuProfile.LIGHT

    def __init__(self, name: str, error: StrategyUnavailableError) -> None:
        self.name = name
        self.error = error

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        raise self.error


class Unmapped:
    """A trained strategy whose decision fell back (no candidate maps to its models)."""

    name = "unmapped"
    cpu_profile = CpuProfile.LIGHT

    class Decision:
        def __init__(self, deployment: Deployment) -> None:
            self.deployment = deployment
            self.fallback = True

    def decide(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Any:
        return self.Decision(candidates[0])

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        return candidates[0]


@pytest.mark.parametrize(
    ("strategy", "outcome"),
    [
        (Refusing("no-model", ModelNotLoadedError("no model")), "fallback_model_not_loaded"),
        (Refusing("broken", StrategyUnavailableError("cannot")), "fallback_strategy_unavailable"),
        (Unmapped(), "fallback_no_model_mapping"),
    ],
)
async def test_each_fallback_has_its_outcome(strategy: Any, outcome: str) -> None:
    custom = RouteIQRoutingStrategy(Router(model_list=MODEL_LIST), strategy)
    before = value("routeiq_routing_strategy_usage_total", strategy=strategy.name, outcome=outcome)
    decisions = value(
        "routeiq_routing_decision_duration_seconds_count", strategy=strategy.name, model_group="chat"
    )
    chosen = await custom.async_get_available_deployment("chat", messages=[{"role": "user", "content": "x"}])
    assert chosen["model_info"]["id"] in {"dep-a", "dep-b"}
    assert (
        value("routeiq_routing_strategy_usage_total", strategy=strategy.name, outcome=outcome) == before + 1
    )
    assert (
        value("routeiq_routing_decision_duration_seconds_count", strategy=strategy.name, model_group="chat")
        == decisions + 1
    )


def breaker(deployment: str) -> dict[str, float]:
    return {
        state: value("routeiq_circuit_breaker_state", deployment=deployment, model_group="chat", state=state)
        for state in metrics.BREAKER_STATES
    }


async def test_the_breaker_gauge_follows_every_transition() -> None:
    now = [1000.0]
    policy = BreakerPolicy(failure_threshold=2, window_seconds=60, open_seconds=30, half_open_probes=1)
    state = RoutingState(StateOptions(breaker_policy=policy), clock=lambda: now[0])
    deployment = f"dep-{uuid.uuid4().hex[:6]}"
    metrics.model_groups({deployment: "chat"})
    await state.record_failure(deployment)
    assert breaker(deployment) == {"closed": 0.0, "open": 0.0, "half_open": 0.0}  # not seen yet
    await state.record_failure(deployment)
    assert breaker(deployment) == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    now[0] += 31
    assert await state.admit_probe(deployment)
    assert breaker(deployment) == {"closed": 0.0, "open": 0.0, "half_open": 1.0}
    await state.record_success(deployment)
    assert breaker(deployment) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


def test_the_experiment_is_stored_only_when_set() -> None:
    plain = VariantSpec("control", "round-robin", 50)
    named = VariantSpec("candidate", "least-busy", 50, experiment="pricing-v2")
    assert "experiment" not in plain.to_json()
    assert '"experiment":"pricing-v2"' in named.to_json()
    raw: dict[bytes | str, bytes | str] = {"control": plain.to_json(), "candidate": named.to_json()}
    assert decode_variants(raw) == (named, plain)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.01)


async def test_split_weights_and_lag_with_the_experiment(redis_server: RedisServer) -> None:
    gateway = f"test/{uuid.uuid4().hex[:10]}"
    known: Callable[[str], bool] = lambda name: name in names()  # noqa: E731
    state = RoutingState(StateOptions(gateway=gateway, redis_url=redis_server.url), strategy_known=known)
    client = Redis.from_url(redis_server.url)
    lag = value("routeiq_state_propagation_lag_seconds_count")
    try:
        await state.start()
        assert value("routeiq_redis_up") == 1.0
        admin = StateAdmin(client, gateway, known)
        experiment = f"exp-{uuid.uuid4().hex[:6]}"
        await admin.set_weights(
            [
                VariantSpec("control", "round-robin", 75, experiment=experiment),
                VariantSpec("candidate", "least-busy", 25, experiment=experiment),
            ]
        )
        await eventually(lambda: len(state.variants) == 2)
        assert value("routeiq_ab_target_weight", experiment=experiment, variant="control") == 75.0
        assert value("routeiq_ab_target_weight", experiment=experiment, variant="candidate") == 25.0
        assert value("routeiq_state_propagation_lag_seconds_count") == lag + 1
        assigned = [await state.assign(f"user-{i}") for i in range(8)]
        counted = sum(
            value("routeiq_ab_traffic_split_total", experiment=experiment, variant=name)
            for name in ("control", "candidate")
        )
        assert counted == 8
        variant = assigned[0].variant
        assert variant is not None
        await state.assign("user-0", keep_variant=variant.name)  # a retry: not counted again
        assert (
            sum(
                value("routeiq_ab_traffic_split_total", experiment=experiment, variant=name)
                for name in ("control", "candidate")
            )
            == 8
        )
        await admin.set_weights([VariantSpec("control", "round-robin", 100, experiment=experiment)])
        await eventually(lambda: len(state.variants) == 1)
        assert value("routeiq_ab_target_weight", experiment=experiment, variant="candidate") == 0.0
    finally:
        await state.close()
        await client.aclose()


def test_genai_metrics_of_a_stream_and_a_failure() -> None:
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    kwargs: dict[str, Any] = {
        "call_type": "acompletion",
        "model_group": "chat-metrics",
        "litellm_params": {"model_info": {"id": "dep-m"}, "custom_llm_provider": "openai"},
        "stream": True,
        "completion_start_time": start + datetime.timedelta(seconds=0.5),
        "response_cost": 0.25,
    }
    labels = {
        "gen_ai_request_model": "chat-metrics",
        "routeiq_deployment": "dep-m",
        "gen_ai_provider_name": "openai",
    }
    response = {"usage": {"prompt_tokens": 10, "completion_tokens": 11}}
    metrics.request_finished(kwargs, response, start, start + datetime.timedelta(seconds=1.5))
    duration = "gen_ai_server_request_duration_seconds"
    assert value(f"{duration}_sum", gen_ai_operation_name="chat", error_type="", **labels) == 1.5
    assert value("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 10
    assert value("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 11
    assert value("gen_ai_server_time_to_first_token_seconds_sum", **labels) == 0.5
    assert value("gen_ai_server_time_per_output_token_seconds_sum", **labels) == pytest.approx(0.1)
    assert value("routeiq_request_cost_usd_total", **labels) == 0.25
    metrics.request_finished(kwargs, None, start, start + datetime.timedelta(seconds=2), error=TimeoutError())
    assert value(f"{duration}_count", gen_ai_operation_name="chat", error_type="TimeoutError", **labels) == 1
    assert value("gen_ai_client_token_usage_count", gen_ai_token_type="input", **labels) == 1  # not again


async def test_database_up_follows_litellms_health_query() -> None:
    from routeiq_router.gateway.app import GatewayApp
    from routeiq_router.settings import load_settings

    class Prisma:
        answers = True

        async def health_check(self) -> None:
            if not self.answers:
                raise ConnectionError("P1001: Can't reach database server")

    prisma = Prisma()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    app = GatewayApp(inner, load_settings({}), lambda: None, lambda: prisma)
    assert await app.check_database()
    assert value("routeiq_database_up") == 1.0
    prisma.answers = False
    assert not await app.check_database()
    assert value("routeiq_database_up") == 0.0


def test_embedding_cache_lookups_are_hits_or_misses() -> None:
    np = pytest.importorskip("numpy")
    from routeiq_router.ml.embeddings import CachedEmbedder

    class Inner:
        model_id = "fake"
        dimension = 4

        def embed(self, texts: Sequence[str]) -> Any:
            return np.ones((len(texts), 4), dtype=np.float32)

    cached = CachedEmbedder(Inner(), 100)
    hits, misses = (
        value("routeiq_embedding_cache_requests_total", result="hit"),
        value("routeiq_embedding_cache_requests_total", result="miss"),
    )
    cached.embed([f"first {uuid.uuid4()}", f"second {uuid.uuid4()}"])
    assert value("routeiq_embedding_cache_requests_total", result="miss") == misses + 2
    prompt = f"again {uuid.uuid4()}"
    cached.embed([prompt])
    cached.embed([prompt])
    assert value("routeiq_embedding_cache_requests_total", result="hit") == hits + 1
    assert value("routeiq_embedding_cache_requests_total", result="miss") == misses + 3


def test_model_loads_loaded_or_refused() -> None:
    from collections import Counter
    from types import SimpleNamespace

    from routeiq_router.gateway.models import RouterModels, _Source
    from routeiq_router.settings import load_settings

    class Slot:
        def __init__(self) -> None:
            self.refusals: Counter[str] = Counter()
            self.current: Any = None
            self.serve = True

        def load(self) -> bool:
            if not self.serve:
                self.refusals["signature"] += 1
                return False
            self.current = SimpleNamespace(
                manifest=SimpleNamespace(strategy="knn"), digest="sha256:x", model=None
            )
            return True

    models = RouterModels(load_settings({}))
    slot = Slot()
    source = _Source(None, "file:///models/knn", None, None, slot)  # type: ignore[arg-type]
    loaded = value("routeiq_model_loads_total", strategy="knn", result="loaded")
    refused = value("routeiq_model_loads_total", strategy="knn", result="refused")
    durations = value("routeiq_model_load_duration_seconds_count", strategy="knn")
    models._load(source, poll=False)
    slot.serve = False
    models._load(source, poll=False)
    assert value("routeiq_model_loads_total", strategy="knn", result="loaded") == loaded + 1
    assert value("routeiq_model_loads_total", strategy="knn", result="refused") == refused + 1
    assert value("routeiq_model_load_duration_seconds_count", strategy="knn") == durations + 2


async def test_in_flight_and_draining() -> None:
    from routeiq_router.gateway.app import GatewayState

    state = GatewayState()
    before = value("routeiq_requests_in_flight")
    state.request_started()
    state.request_started()
    assert value("routeiq_requests_in_flight") == before + 2
    state.request_finished()
    state.request_finished()
    assert value("routeiq_requests_in_flight") == before
    metrics.draining(True)
    assert value("routeiq_draining") == 1.0
    metrics.draining(False)
