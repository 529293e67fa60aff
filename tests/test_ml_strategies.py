"""The trained strategies in a worker: the model holder, loading from files and manifest, the
deployment-name mapping rule, the fallback, and decisions through the strategy registry."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytest

from routeiq_router.ml.embeddings import CachedEmbedder
from routeiq_router.ml.models import ModelFormatError
from routeiq_router.ml.runtime import (
    LoadedRouter,
    ModelHolder,
    ModelNotLoadedError,
    decide,
    default_holder,
    deployment_model_name,
    load_router,
    match_candidates,
)
from routeiq_router.ml.strategies import TrainedStrategy
from routeiq_router.settings import load_settings
from routeiq_router.strategies import (
    CpuProfile,
    RoutingRequest,
    StrategyContext,
    create,
    names,
    strategy_class,
)
from tests.test_ml_support import CHEAP, SPECIALIST, STRONG, HashEmbedder, artifact, deployment, embedder

CODE = "Implement a lock-free ring buffer in Rust with bounded memory use."
MATH = "Find all real roots of x^3 - 7x + 6 = 0 and justify each step."
CHAT = "Tell me a fun fact about sea otters."
HARD_CODE = [
    CODE,
    "Why does my Go service deadlock when two threads share a connection pool? Explain the likely cause and a fix.",
    "Implement an interval tree in Java with O(log n) operations.",
    "Review my Python implementation of an LRU cache: it seems to leak memory when the cache is warm.",
    "Design a bloom filter in C++ with generic key types, and explain the trade-offs of your design.",
]
HARD_MATH = [
    MATH,
    "Prove that every finite group of prime order is cyclic.",
    "Prove that the harmonic series diverges.",
    "Compute the integral of ln(x)/x from 0 to 5, showing every step.",
    "How many ways can 10 people be split into 5 pairs? Give a rigorous derivation.",
]


def loaded(strategy: str, knob: float | None = None) -> LoadedRouter:
    files, manifest = artifact(strategy)
    return load_router(files, manifest, embedder=CachedEmbedder(embedder()), knob=knob, threads=None)


def strategy_with(holder: ModelHolder, name: str, seed: int = 0) -> TrainedStrategy:
    strategy = strategy_class(name)(StrategyContext(rng=random.Random(seed)), holder)  # type: ignore[call-arg]
    assert isinstance(strategy, TrainedStrategy)
    return strategy


def ask(prompt: str) -> RoutingRequest:
    return RoutingRequest(model_group="chat", messages=[{"role": "user", "content": prompt}])


CANDIDATES = [
    deployment("d-strong", f"openai/{STRONG}"),
    deployment("d-cheap", f"openai/{CHEAP}"),
    deployment("d-specialist", f"anthropic/{SPECIALIST}"),
]


def test_registry_names_the_trained_strategies_with_their_cpu_profiles() -> None:
    assert {"knn", "mlp", "svm", "elo", "mf"} <= set(names())
    profiles = {name: strategy_class(name).cpu_profile for name in ("knn", "mlp", "svm", "elo", "mf")}
    assert profiles == {
        "knn": CpuProfile.HEAVY,
        "mlp": CpuProfile.MODERATE,
        "svm": CpuProfile.MODERATE,
        "elo": CpuProfile.LIGHT,
        "mf": CpuProfile.LIGHT,
    }
    assert load_settings({"ROUTEIQ_STRATEGY": "knn"}).strategy == "knn"


def test_without_a_model_a_strategy_refuses_clearly() -> None:
    strategy = create("mf", StrategyContext())
    assert isinstance(strategy, TrainedStrategy)
    assert strategy.holder is default_holder()
    with pytest.raises(ModelNotLoadedError, match=r"'mf' has no trained model loaded in this worker"):
        strategy.choose(CANDIDATES, ask(CHAT))
    holder = ModelHolder()
    holder.set(loaded("elo"))
    with pytest.raises(ModelNotLoadedError, match=r"\(loaded: elo\)"):
        strategy_with(holder, "knn").choose(CANDIDATES, ask(CHAT))


def test_deployment_name_rule() -> None:
    explicit = deployment("a", "azure/my-gpt4o-deployment", routeiq_model=STRONG)
    assert deployment_model_name(explicit) == STRONG, "model_info.routeiq_model first"
    assert deployment_model_name(deployment("b", f"openai/{CHEAP}")) == f"openai/{CHEAP}"
    assert deployment_model_name({"model_name": "grp", "litellm_params": {}, "model_info": {}}) == "grp"
    assert deployment_model_name({"model_info": {}}) is None
    models = [SPECIALIST, STRONG, CHEAP]
    candidates = [
        explicit,  # explicit name
        deployment("b", f"openai/{CHEAP}"),  # provider prefix dropped
        deployment("c", SPECIALIST),  # exact
        deployment("d", "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0"),  # no match: not scored
        deployment("e", f"openai/{STRONG}", routeiq_model=f"openai/{STRONG}"),  # explicit: used as written
    ]
    assert match_candidates(candidates, models) == [1, 2, 0, None, None]


def test_prompt_aware_strategies_route_by_the_prompt() -> None:
    holder = ModelHolder()
    for name in ("knn", "mlp", "svm", "mf"):
        holder.set(loaded(name))
        strategy = strategy_with(holder, name)
        code = [strategy.choose(CANDIDATES, ask(prompt))["model_info"]["id"] for prompt in HARD_CODE]
        math = [strategy.choose(CANDIDATES, ask(prompt))["model_info"]["id"] for prompt in HARD_MATH]
        assert code.count("d-specialist") >= 4, (name, code)  # the synthetic code specialist
        assert math.count("d-strong") >= 3, (name, math)  # the synthetic best at hard math
        decision = strategy.decide(CANDIDATES, ask(CODE))
        assert decision.model == SPECIALIST
        assert decision.fallback is False
        assert decision.scores is not None
        assert set(decision.scores) == {STRONG, CHEAP, SPECIALIST}


def test_only_mapped_candidates_are_scored_and_one_needs_no_embedding() -> None:
    router = loaded("knn")
    assert router.embedder is not None
    unmapped = deployment("d-other", "mistral/mistral-large")
    before = router.embedder.stats.misses + router.embedder.stats.hits
    decision = decide(router, [unmapped, CANDIDATES[1]], ask(CODE))
    assert decision.deployment["model_info"]["id"] == "d-cheap"
    assert router.embedder.stats.misses + router.embedder.stats.hits == before, "nothing to compare"
    two = decide(router, [unmapped, CANDIDATES[1], CANDIDATES[0]], ask(MATH))
    assert two.model == STRONG, "the specialist is not a candidate here"


def test_fallback_when_no_candidate_maps(caplog: pytest.LogCaptureFixture) -> None:
    holder = ModelHolder()
    holder.set(loaded("knn"))
    strategy = strategy_with(holder, "knn")
    others = [deployment("x", "mistral/mistral-large"), deployment("y", "groq/llama-3.1-70b")]
    with caplog.at_level(logging.WARNING, logger="routeiq.ml"):
        decision = strategy.decide(others, ask(CODE))
        strategy.choose(others, ask(CODE))
    assert decision.fallback is True
    assert decision.model is None
    assert decision.deployment is others[0]
    assert strategy.fallbacks == {"chat": 2}
    warnings = [record for record in caplog.records if "no candidate deployment maps" in record.getMessage()]
    assert len(warnings) == 1, "logged once per model group"


def test_deployments_of_the_chosen_model_share_its_traffic() -> None:
    holder = ModelHolder()
    holder.set(loaded("knn"))
    strategy = strategy_with(holder, "knn", seed=7)
    regions = [
        deployment("claude-us", f"anthropic/{SPECIALIST}"),
        deployment("claude-eu", "vertex_ai/claude-3-5-sonnet-v2", routeiq_model=SPECIALIST),
        CANDIDATES[0],
    ]
    chosen = {strategy.choose(regions, ask(CODE))["model_info"]["id"] for _ in range(40)}
    assert chosen == {"claude-us", "claude-eu"}


def test_elo_and_mf_knobs_through_the_holder() -> None:
    holder = ModelHolder()
    elo = holder.load(*artifact("elo"), threads=None)
    assert elo.embedder is None, "ELO ignores the prompt"
    best = elo.model.models[int(np.argmax(elo.model.scores(None)))]
    assert strategy_with(holder, "elo").decide(CANDIDATES, ask(CHAT)).model == best
    holder.load(*artifact("elo"), knob=0.001, threads=None)  # only gpt-4o-mini fits the budget
    assert strategy_with(holder, "elo").decide(CANDIDATES, ask(CODE)).model == CHEAP
    holder.set(loaded("mf", knob=1.0))  # never escalate from the cheapest
    assert strategy_with(holder, "mf").decide(CANDIDATES, ask(CODE)).model == CHEAP
    holder.set(loaded("mf", knob=0.0))  # always escalate to the most expensive
    assert strategy_with(holder, "mf").decide(CANDIDATES, ask(CHAT)).model == SPECIALIST


def test_reload_keeps_the_warm_embedding_cache_and_swaps_the_model() -> None:
    holder = ModelHolder()
    first = holder.load(*artifact("knn"), embedding_source=None, threads=None)
    strategy = strategy_with(holder, "knn")
    strategy.choose(CANDIDATES, ask(CODE))
    assert first.embedder is not None
    second = holder.load(*artifact("knn"), digest="sha256:new", threads=None)
    assert second.embedder is first.embedder, "same embedding model: the cache is kept"
    misses = first.embedder.stats.misses
    assert holder.get("knn") is second
    strategy.choose(CANDIDATES, ask(CODE))
    assert first.embedder.stats.misses == misses, "served from the kept cache"
    holder.set(loaded("mf"))
    assert set(holder.current()) == {"knn", "mf"}, "one model per strategy (A/B between two)"
    holder.clear("knn")
    assert set(holder.current()) == {"mf"}


def test_loading_refuses_an_embedding_model_that_differs_from_training() -> None:
    files, manifest = artifact("knn")
    with pytest.raises(ModelFormatError, match=r"384-d embeddings .* gives 8-d"):
        load_router(files, manifest, embedder=HashEmbedder(dimension=8), threads=None)
    with pytest.raises(ModelFormatError, match="does not embed like"):
        load_router(files, manifest, embedder=HashEmbedder(dimension=384), threads=None)


def test_load_router_limits_cpu_threads_by_default() -> None:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

    before = torch.get_num_threads()
    pools: list[dict[str, Any]] = threadpool_info()
    try:
        load_router(*artifact("knn"), embedder=embedder())
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
        threadpool_limits(limits={pool["prefix"]: pool["num_threads"] for pool in pools})
