"""Routing strategies and the registry that names them.

Importing the package adds the built-in strategies' loader to the registry (`builtins`), so
every lookup sees them; `catalog` lists their names.
"""

from routeiq_router.strategies import builtins  # noqa: F401 - adds the built-in strategies' loader to the registry
from routeiq_router.strategies.base import (
    MODEL_KEY_PATTERN,
    CpuProfile,
    Deployment,
    RoutingRequest,
    RoutingStrategy,
    StrategyContext,
    StrategyUnavailableError,
    deployment_id,
)
from routeiq_router.strategies.registry import UnknownStrategyError, create, names, register, strategy_class

__all__ = [
    "MODEL_KEY_PATTERN",
    "CpuProfile",
    "Deployment",
    "RoutingRequest",
    "RoutingStrategy",
    "StrategyContext",
    "StrategyUnavailableError",
    "UnknownStrategyError",
    "create",
    "deployment_id",
    "names",
    "register",
    "strategy_class",
]
