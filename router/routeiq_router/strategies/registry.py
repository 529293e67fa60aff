"""Maps strategy names to strategy classes."""

from __future__ import annotations

from collections.abc import Callable

from routeiq_router.strategies.base import RoutingStrategy, StrategyContext, StrategyUnavailableError

__all__ = ["UnknownStrategyError", "create", "names", "register", "strategy_class"]

StrategyFactory = type[RoutingStrategy]
_STRATEGIES: dict[str, StrategyFactory] = {}


class UnknownStrategyError(ValueError):
    """An unknown strategy name; the message lists the valid ones."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown routing strategy {name!r}; valid strategies: {', '.join(names())}")
        self.name = name


def register(cls: StrategyFactory) -> StrategyFactory:
    """Class decorator: make a strategy available under its `name`."""
    if cls.name in _STRATEGIES and _STRATEGIES[cls.name] is not cls:
        raise ValueError(f"routing strategy {cls.name!r} is already registered by {_STRATEGIES[cls.name]!r}")
    _STRATEGIES[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_builtin()
    return sorted(_STRATEGIES)


def is_known(name: str) -> bool:
    """Whether a strategy of that name is registered (without sorting every name)."""
    _load_builtin()
    return name in _STRATEGIES


def strategy_class(name: str) -> StrategyFactory:
    _load_builtin()
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(name) from None


def create(name: str, context: StrategyContext) -> RoutingStrategy:
    """A new instance of the named strategy. With `context.model` set, a trained strategy routes
    with the model of that key; any other strategy cannot (StrategyUnavailableError)."""
    cls = strategy_class(name)
    if context.model is not None and not getattr(cls, "uses_model", False):
        trained = [other for other in names() if getattr(_STRATEGIES[other], "uses_model", False)]
        raise StrategyUnavailableError(
            f"routing strategy {name!r} routes without a trained model, so it cannot route with "
            f"variant model {context.model!r}: give that variant a trained strategy "
            f"({', '.join(trained) or 'none is installed: the ml extra is missing'})"
        )
    factory: Callable[[StrategyContext], RoutingStrategy] = cls
    return factory(context)


_builtin_loaded = False


def _load_builtin() -> None:
    # imported lazily so that registering a strategy never imports the registry's users; once per
    # process (without the ml extra the failed import would otherwise be retried on every call)
    global _builtin_loaded
    if _builtin_loaded:
        return
    from routeiq_router.strategies import simple  # noqa: F401

    try:  # the trained strategies, when the ml extra is installed
        from routeiq_router.ml import strategies  # noqa: F401
    except ModuleNotFoundError as error:
        if (error.name or "").startswith("routeiq_router"):
            raise
    _builtin_loaded = True
