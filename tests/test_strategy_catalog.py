"""`routeiq_router.strategies.catalog` is the one list of built-in strategy names: the registry's
built-ins, the trained models, `routeiq train` and the gateway all follow it."""

from __future__ import annotations

from routeiq_router.gateway.models import RouterModels
from routeiq_router.ml import cli as ml_cli
from routeiq_router.ml.models import ROUTER_MODELS
from routeiq_router.settings import load_settings
from routeiq_router.strategies import names, strategy_class
from routeiq_router.strategies.catalog import SIMPLE_STRATEGIES, STRATEGY_NAMES, TRAINED_STRATEGIES

BUILTIN_MODULES = ("routeiq_router.strategies.simple", "routeiq_router.ml.strategies")


def test_the_catalog_in_its_documented_order() -> None:
    assert SIMPLE_STRATEGIES == ("round-robin", "weighted-random", "least-busy")
    assert TRAINED_STRATEGIES == ("knn", "mlp", "svm", "elo", "mf")
    assert STRATEGY_NAMES == SIMPLE_STRATEGIES + TRAINED_STRATEGIES
    assert len(set(STRATEGY_NAMES)) == len(STRATEGY_NAMES)


def test_the_registered_builtins_are_the_catalog() -> None:
    # other tests may register strategies of their own: the built-ins are RouteIQ's modules' ones
    builtin = {
        name: strategy_class(name) for name in names() if strategy_class(name).__module__ in BUILTIN_MODULES
    }
    assert sorted(builtin) == sorted(STRATEGY_NAMES)
    by_module = {
        module: [name for name, cls in builtin.items() if cls.__module__ == module]
        for module in BUILTIN_MODULES
    }
    assert sorted(by_module["routeiq_router.strategies.simple"]) == sorted(SIMPLE_STRATEGIES)
    assert sorted(by_module["routeiq_router.ml.strategies"]) == sorted(TRAINED_STRATEGIES)
    trained = [name for name in STRATEGY_NAMES if getattr(builtin[name], "uses_model", False)]
    assert tuple(trained) == TRAINED_STRATEGIES, "exactly the trained strategies route with a model"


def test_every_trained_strategy_has_its_model_and_training_knob() -> None:
    assert tuple(ROUTER_MODELS) == TRAINED_STRATEGIES  # the artifact manifest's strategy picks the model
    assert ml_cli.STRATEGIES == TRAINED_STRATEGIES  # `routeiq train --strategy`
    assert tuple(ml_cli.KNOBS) == TRAINED_STRATEGIES


def test_the_gateway_requires_a_model_for_exactly_the_trained_strategies() -> None:
    required = {
        name: RouterModels(load_settings({"ROUTEIQ_STRATEGY": name})).required for name in STRATEGY_NAMES
    }
    assert required == {name: name in TRAINED_STRATEGIES for name in STRATEGY_NAMES}
