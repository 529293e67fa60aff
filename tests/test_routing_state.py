"""The shared state inside the real LiteLLM Router: breakers, fallbacks, affinity, variants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from litellm import exceptions as llm_errors
from litellm.router import Router
from redis.asyncio import Redis

from routeiq_router import decisions
from routeiq_router.routing import (
    VARIANT_METADATA_KEY,
    AllBreakersOpenError,
    counts_against_deployment,
    install,
    request_keys,
)
from routeiq_router.state import BreakerPolicy, BreakerState
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.store import RoutingState, StateOptions, VariantSpec
from routeiq_router.strategies import StrategyContext, names
from tests.ports import free_port
from tests.redis_server import RedisServer
from tests.test_routing_litellm import MESSAGES, PLAIN_MESSAGES, deployment, served_by

POLICY = BreakerPolicy(failure_threshold=2, window_seconds=60, open_seconds=60, half_open_probes=1)


def refused(ident: str, group: str = "chat") -> dict[str, Any]:
    """A deployment whose provider refuses connections: every call fails with a connection error."""
    return {
        "model_name": group,
        "litellm_params": {
            "model": f"openai/{ident}",
            "api_key": "sk-mock",
            "api_base": f"http://127.0.0.1:{free_port()}/v1",
        },
        "model_info": {"id": ident},
    }


MakeState = Callable[..., RoutingState]


@pytest.fixture
async def make_state() -> AsyncIterator[MakeState]:
    states: list[RoutingState] = []

    def make(url: str | None = None, **overrides: Any) -> RoutingState:
        values: dict[str, Any] = {"gateway": f"test/{uuid.uuid4().hex[:10]}", "redis_url": url}
        values.setdefault("breaker_policy", POLICY)
        values.update(overrides)
        state = RoutingState(StateOptions(**values), strategy_known=lambda name: name in names())
        states.append(state)
        return state

    yield make
    for state in states:
        await state.close()


async def open_breaker(state: RoutingState, deployment_id: str) -> None:
    for _ in range(POLICY.failure_threshold):
        await state.record_failure(deployment_id)
    assert deployment_id in state.open_breakers()


async def test_routeiq_breakers_replace_litellm_cooldowns(make_state: MakeState) -> None:
    with_breakers = Router(model_list=[deployment("a")])
    install(with_breakers, "round-robin", state=make_state())
    assert with_breakers.disable_cooldowns is True
    without = Router(model_list=[deployment("a")])
    install(without, "round-robin", state=make_state(breakers_enabled=False))
    assert not without.disable_cooldowns


async def test_open_deployments_are_skipped_and_all_open_fails_fast_with_503(make_state: MakeState) -> None:
    router = Router(model_list=[deployment("a"), deployment("b")], num_retries=0)
    state = make_state()
    install(router, "round-robin", state=state)
    await open_breaker(state, "a")
    served = [served_by(await router.acompletion(model="chat", messages=MESSAGES)) for _ in range(4)]
    assert served == ["b"] * 4
    await open_breaker(state, "b")
    with pytest.raises(llm_errors.ServiceUnavailableError) as raised:
        await router.acompletion(model="chat", messages=MESSAGES)
    assert raised.value.status_code == 503
    assert "every deployment of model group 'chat' has an open circuit breaker (a, b)" in str(raised.value)
    assert "half-opens in" in str(raised.value)


async def test_all_open_follows_the_fallbacks_the_config_declares(make_state: MakeState) -> None:
    router = Router(
        model_list=[deployment("a"), deployment("spare", group="backup")],
        fallbacks=[{"chat": ["backup"]}],
        num_retries=0,
    )
    state = make_state()
    install(router, "round-robin", state=state)
    await open_breaker(state, "a")
    response = await router.acompletion(model="chat", messages=MESSAGES)
    assert served_by(response) == "spare"


async def test_failed_provider_calls_open_the_breaker_through_litellm_callbacks(
    make_state: MakeState,
) -> None:
    router = Router(model_list=[refused("down"), deployment("up")], num_retries=0)
    state = make_state()
    install(router, "round-robin", state=state, context=StrategyContext())
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(served_by(await router.acompletion(model="chat", messages=MESSAGES)))
        except (llm_errors.APIConnectionError, llm_errors.InternalServerError):
            outcomes.append("failed")
        await asyncio.sleep(0.05)  # LiteLLM's failure callback runs after the error is raised
    assert outcomes[:4] == ["failed", "up", "failed", "up"]
    assert outcomes[4:] == ["up", "up"], "open after 2 failures: only the healthy deployment is chosen"
    assert "down" in state.open_breakers()


async def test_a_conversation_stays_on_its_deployment_until_its_breaker_opens(make_state: MakeState) -> None:
    router = Router(model_list=[deployment("a"), deployment("b"), deployment("c")])
    state = make_state()
    install(router, "round-robin", state=state)
    metadata = {"conversation_id": "conv-1"}
    first = served_by(await router.acompletion(model="chat", messages=MESSAGES, metadata=dict(metadata)))
    for _ in range(5):
        assert (
            served_by(await router.acompletion(model="chat", messages=MESSAGES, metadata=dict(metadata)))
            == first
        )
    others = [served_by(await router.acompletion(model="chat", messages=MESSAGES)) for _ in range(3)]
    assert set(others) == {"a", "b", "c"}, "requests without a conversation still round-robin"
    await open_breaker(state, first)
    moved = served_by(await router.acompletion(model="chat", messages=MESSAGES, metadata=dict(metadata)))
    assert moved != first
    again = served_by(await router.acompletion(model="chat", messages=MESSAGES, metadata=dict(metadata)))
    assert again == moved, "re-pinned to the deployment that served it"


async def test_variants_and_the_active_strategy_choose_the_strategy(
    make_state: MakeState, redis_server: RedisServer
) -> None:
    router = Router(
        model_list=[deployment("a"), deployment("b"), deployment("x", group="other")],
        num_retries=0,
    )
    state = make_state(redis_server.url)
    await state.start()
    install(router, "round-robin", state=state)
    client = Redis.from_url(redis_server.url)
    admin = StateAdmin(client, state.options.gateway)
    try:
        await admin.set_active_strategy("least-busy")
        await _until(lambda: state.active_strategy == "least-busy")
        slot = decisions.open_slot()
        await router.acompletion(model="chat", messages=MESSAGES)
        assert slot.decision is not None
        assert slot.decision.strategy == "least-busy"
        assert slot.decision.variant is None

        await admin.set_weights(
            [VariantSpec("control", "round-robin", 50), VariantSpec("rerouted", "least-busy", 50, "other")]
        )
        await _until(lambda: len(state.variants) == 2)
        seen: dict[str, set[str]] = {}
        for _ in range(6):
            slot = decisions.open_slot()
            metadata: dict[str, Any] = {}
            response = await router.acompletion(model="chat", messages=MESSAGES, metadata=metadata)
            assert slot.decision is not None
            assert slot.decision.variant is not None
            assert metadata[VARIANT_METADATA_KEY] == slot.decision.variant
            seen.setdefault(slot.decision.variant, set()).add(served_by(response))
        assert seen == {"control": {"a", "b"}, "rerouted": {"x"}}, (
            "a variant may route to its own model group"
        )
    finally:
        await client.aclose()


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the state change was not applied within 1 s")


def test_request_keys_from_metadata_previous_response_and_user() -> None:
    assert request_keys({}) == (None, None)
    assert request_keys({"metadata": {"conversation_id": "c1"}, "user": "u"}) == ("conversation:c1", "c1")
    proxied = {"metadata": {"requester_metadata": {"conversation_id": 7}, "user_api_key": "hashed"}}
    assert request_keys(proxied) == ("conversation:7", "7")
    assert request_keys({"previous_response_id": "resp_1", "user": "u"}) == ("response:resp_1", None)
    assert request_keys({"user": "alice"}) == ("user:alice", None)
    assert request_keys({"user": ""}) == (None, None)


def _status_error(status: int) -> Exception:
    response = httpx.Response(status, request=httpx.Request("POST", "http://provider"))
    return llm_errors.APIError(
        status_code=status, message="x", llm_provider="openai", model="m", request=response.request
    )


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (None, True),
        (ConnectionRefusedError(), True),
        (_status_error(500), True),
        (_status_error(503), True),
        (_status_error(429), True),
        (_status_error(401), True),
        (_status_error(400), False),
        (_status_error(422), False),
    ],
)
def test_only_the_deployments_own_failures_count_towards_its_breaker(
    error: Exception | None, counts: bool
) -> None:
    assert counts_against_deployment(error) is counts


def test_all_breakers_open_is_a_503() -> None:
    error = AllBreakersOpenError(message="m", llm_provider="routeiq", model="chat")
    assert error.status_code == 503
    assert isinstance(error, llm_errors.ServiceUnavailableError)
    assert BreakerState.OPEN.value == "open"


async def test_the_sync_path_skips_open_deployments_too(make_state: MakeState) -> None:
    router = Router(model_list=[deployment("a"), deployment("b")], num_retries=0)
    state = make_state()
    install(router, "round-robin", state=state)
    await open_breaker(state, "a")
    assert {served_by(router.completion(model="chat", messages=PLAIN_MESSAGES)) for _ in range(3)} == {"b"}
    await open_breaker(state, "b")
    with pytest.raises(llm_errors.ServiceUnavailableError, match="open circuit breaker"):
        router.completion(model="chat", messages=PLAIN_MESSAGES)
