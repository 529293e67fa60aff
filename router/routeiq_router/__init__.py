"""RouteIQ's routing library: runs inside every LiteLLM worker.

    >>> import litellm, routeiq_router
    >>> router = litellm.Router(model_list=[...])
    >>> routeiq_router.install(router, "least-busy")

The LiteLLM-facing pieces (`install`, `RouteIQRoutingStrategy`) import LiteLLM on first use,
so the settings and the strategies stay importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeiq_router.settings import RouteIQSettings, SettingsError, load_settings
from routeiq_router.strategies import (
    CpuProfile,
    RoutingRequest,
    RoutingStrategy,
    StrategyContext,
    UnknownStrategyError,
    register,
)

if TYPE_CHECKING:
    from routeiq_router.routing import RouteIQRoutingStrategy, install

__all__ = [
    "CpuProfile",
    "RouteIQRoutingStrategy",
    "RouteIQSettings",
    "RoutingRequest",
    "RoutingStrategy",
    "SettingsError",
    "StrategyContext",
    "UnknownStrategyError",
    "install",
    "load_settings",
    "register",
]

_LAZY = {"RouteIQRoutingStrategy", "install"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from routeiq_router import routing

        return getattr(routing, name)
    raise AttributeError(f"module 'routeiq_router' has no attribute {name!r}")
