"""The names of RouteIQ's built-in routing strategies: the one list every other copy follows.

    SIMPLE_STRATEGIES   route without a model: round-robin, weighted-random, least-busy
    TRAINED_STRATEGIES  route with a trained model artifact (the `ml` extra): knn, mlp, svm, elo, mf
    STRATEGY_NAMES      both, in that order

Standard library only and importing nothing of RouteIQ, so that anything may import it: the
strategy registry's built-ins, the gateway and `routeiq train` on the router side, and the
operator's API (its strategy enum, CEL rules and artifact strategies) without LiteLLM, NumPy
or torch. A test fails when the registered built-in strategies differ from these names.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SIMPLE_STRATEGIES", "STRATEGY_NAMES", "TRAINED_STRATEGIES"]

SIMPLE_STRATEGIES: Final[tuple[str, ...]] = ("round-robin", "weighted-random", "least-busy")
TRAINED_STRATEGIES: Final[tuple[str, ...]] = ("knn", "mlp", "svm", "elo", "mf")
STRATEGY_NAMES: Final[tuple[str, ...]] = SIMPLE_STRATEGIES + TRAINED_STRATEGIES
