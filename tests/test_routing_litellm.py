"""RouteIQ's strategies inside the real LiteLLM Router, with mock_response deployments."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import litellm
import pytest
from litellm.exceptions import BadRequestError, RateLimitError
from litellm.router import Router
from litellm.types.llms.openai import AllMessageValues, ChatCompletionUserMessage
from litellm.types.router import RouterRateLimitError
from scipy import stats

from routeiq_router import decisions
from routeiq_router.routing import InFlightCallback, install, installed_strategy
from routeiq_router.strategies import StrategyContext, UnknownStrategyError
from tests.fake_openai import fake_openai

MESSAGES: list[AllMessageValues] = [ChatCompletionUserMessage(role="user", content="hello")]
PLAIN_MESSAGES = [{"role": "user", "content": "hello"}]  # the Router's selection and sync APIs type it so


def deployment(ident: str, group: str = "chat", **params: Any) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {
            "model": f"openai/{ident}",
            "api_key": "sk-mock",
            "mock_response": f"from {ident}",
            **params,
        },
        "model_info": {"id": ident},
    }


async def settled(context: StrategyContext, deployments: tuple[str, ...]) -> list[int]:
    """In-flight counts once LiteLLM's success/failure callbacks (run after the response) are done."""
    for _ in range(100):
        counts = [context.inflight.count(d) for d in deployments]
        if not any(counts):
            break
        await asyncio.sleep(0.05)
    return counts


def served_by(response: Any) -> str:
    content: str = response.choices[0].message.content
    return content.removeprefix("from ")


async def test_round_robin_cycles_exactly_in_config_order() -> None:
    router = Router(model_list=[deployment("a"), deployment("b"), deployment("c")])
    install(router, "round-robin")
    served = [served_by(await router.acompletion(model="chat", messages=MESSAGES)) for _ in range(9)]
    assert served == ["a", "b", "c"] * 3


async def test_round_robin_keeps_a_cursor_per_model_group() -> None:
    router = Router(
        model_list=[deployment("a"), deployment("b"), deployment("x", "other"), deployment("y", "other")]
    )
    install(router, "round-robin")
    served = [
        served_by(await router.acompletion(model=group, messages=MESSAGES))
        for group in ["chat", "other", "chat", "other", "chat"]
    ]
    assert served == ["a", "x", "b", "y", "a"]


async def test_weighted_random_matches_its_weights() -> None:
    router = Router(
        model_list=[deployment("a", weight=6), deployment("b", weight=3), deployment("c", weight=1)]
    )
    install(router, "weighted-random", StrategyContext(rng=random.Random(20261126)))
    picks: Counter[str] = Counter()
    for _ in range(6000):
        chosen = await router.async_get_available_deployment(
            model="chat", request_kwargs={}, messages=PLAIN_MESSAGES
        )
        picks[chosen["model_info"]["id"]] += 1
    observed = [picks["a"], picks["b"], picks["c"]]
    expected = [3600, 1800, 600]
    # a goodness-of-fit test against the configured 6:3:1 (seeded, so deterministic)
    assert stats.chisquare(observed, expected).pvalue > 0.01, observed
    # and far from uniform, so the weights are really read
    assert stats.chisquare(observed, [2000, 2000, 2000]).pvalue < 1e-9


async def test_least_busy_sends_new_requests_to_idle_deployments() -> None:
    context = StrategyContext(rng=random.Random(1))
    names = ("a", "b", "c")
    with fake_openai(dict.fromkeys(names, 2.0)) as api_base:
        router = Router(
            model_list=[
                {
                    "model_name": "chat",
                    "litellm_params": {"model": f"openai/{name}", "api_key": "sk-fake", "api_base": api_base},
                    "model_info": {"id": name},
                }
                for name in names
            ],
            num_retries=0,
        )
        install(router, "least-busy", context)
        tasks = []
        for started in range(1, 4):
            tasks.append(asyncio.create_task(router.acompletion(model="chat", messages=MESSAGES)))
            # the next request is routed once LiteLLM's pre-call hook counted this one in flight
            for _ in range(400):
                if sum(context.inflight.count(name) for name in names) >= started:
                    break
                await asyncio.sleep(0.01)
        served = sorted(served_by(response) for response in await asyncio.gather(*tasks))
    assert served == ["a", "b", "c"], "each concurrent request went to an idle deployment"
    assert await settled(context, names) == [0, 0, 0]


async def test_least_busy_counts_failed_calls_as_finished() -> None:
    context = StrategyContext()
    router = Router(model_list=[deployment("a", mock_response="litellm.RateLimitError")], num_retries=0)
    install(router, "least-busy", context)
    with pytest.raises(RateLimitError):
        await router.acompletion(model="chat", messages=MESSAGES)
    assert await settled(context, ("a",)) == [0]


def router_with_a_broken_deployment() -> Router:
    """a, broken, c under round-robin; `broken` fails with 429, which cools it down at once."""
    router = Router(
        model_list=[
            deployment("a"),
            deployment("broken", mock_response="litellm.RateLimitError"),
            deployment("c"),
        ],
        num_retries=0,
        allowed_fails=0,
        cooldown_time=60,
    )
    install(router, "round-robin")
    return router


async def test_cooled_down_deployment_is_never_chosen() -> None:
    router = router_with_a_broken_deployment()
    outcomes = []
    for _ in range(9):
        try:
            outcomes.append(served_by(await router.acompletion(model="chat", messages=MESSAGES)))
        except RateLimitError:
            outcomes.append("broken")
    assert outcomes.count("broken") == 1, outcomes  # chosen once, then cooled down
    assert set(outcomes[outcomes.index("broken") + 1 :]) <= {"a", "c"}


def test_sync_completion_uses_the_strategy_and_skips_cooled_down_deployments() -> None:
    router = router_with_a_broken_deployment()
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(served_by(router.completion(model="chat", messages=PLAIN_MESSAGES)))
        except RateLimitError:
            outcomes.append("broken")
    assert outcomes[:2] == ["a", "broken"]
    assert set(outcomes[2:]) <= {"a", "c"}
    assert outcomes.count("broken") == 1


async def test_specific_deployment_is_honoured() -> None:
    router = Router(model_list=[deployment("a"), deployment("b"), deployment("c")])
    install(router, "round-robin")
    served = [served_by(await router.acompletion(model="b", messages=MESSAGES)) for _ in range(3)]
    assert served == ["b", "b", "b"]
    chosen = await router.async_get_available_deployment(
        model="openai/c", request_kwargs={}, messages=PLAIN_MESSAGES, specific_deployment=True
    )
    assert chosen["model_info"]["id"] == "c"


async def test_decision_is_recorded_for_the_current_request() -> None:
    router = Router(model_list=[deployment("a"), deployment("b")])
    install(router, "weighted-random")
    slot = decisions.open_slot()
    await router.acompletion(model="chat", messages=MESSAGES)
    assert slot.decision is not None
    assert slot.decision.strategy == "weighted-random"
    assert slot.decision.model_group == "chat"
    assert slot.decision.deployment_id in {"a", "b"}
    assert slot.decision.duration_ms >= 0


async def test_unknown_model_group_is_a_clear_bad_request() -> None:
    router = Router(model_list=[deployment("a")])
    install(router, "round-robin")
    with pytest.raises(BadRequestError, match="nope"):
        await router.acompletion(model="nope", messages=MESSAGES)


def test_unknown_strategy_lists_the_valid_ones() -> None:
    router = Router(model_list=[deployment("a")])
    with pytest.raises(
        UnknownStrategyError,
        match="valid strategies: elo, knn, least-busy, mf, mlp, round-robin, svm, weighted-random",
    ):
        install(router, "fastest")
    assert installed_strategy(router) is None


def test_installing_again_keeps_one_inflight_callback() -> None:
    router = Router(model_list=[deployment("a")])
    context = StrategyContext()
    install(router, "least-busy", context)
    install(router, "least-busy", context)
    install(router, "round-robin", StrategyContext())
    callbacks = [c for c in litellm.callbacks if isinstance(c, InFlightCallback)]
    assert len(callbacks) == 1
    assert callbacks[0].tracker is not context.inflight  # it counts for the strategy installed last
    strategy = installed_strategy(router)
    assert strategy is not None
    assert strategy.strategy.name == "round-robin"


async def test_every_deployment_cooled_down_fails_fast_with_429() -> None:
    router = Router(
        model_list=[deployment(name, mock_response="litellm.RateLimitError") for name in ("a", "b")],
        num_retries=0,
        allowed_fails=0,
        cooldown_time=60,
    )
    install(router, "round-robin")
    for _ in range(2):
        with pytest.raises(RateLimitError):
            await router.acompletion(model="chat", messages=MESSAGES)
    with pytest.raises(RouterRateLimitError, match="All deployments for selected model are in cooldown"):
        await router.acompletion(model="chat", messages=MESSAGES)
