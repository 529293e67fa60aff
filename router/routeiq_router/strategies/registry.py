"""Maps strategy names to strategy classes.

A leaf of the package: it imports no strategy. The built-in ones register through
`routeiq_router.strategies.builtins`, which the `routeiq_router.strategies` package imports, so
they are known before anything can look a name up here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from routeiq_router.strategies.base import RoutingStrategy, StrategyContext, StrategyUnavailableError

__all__ = [
    "UnknownStrategyError",
    "add_loader",
    "create",
    "is_known",
    "is_registered",
    "names",
    "register",
    "strategy_class",
]

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


_loaders: list[Callable[[], None]] = []


def add_loader(loader: Callable[[], None]) -> None:
    """Run `loader` before the next lookup (`names`, `is_known`, `strategy_class`, `create`).

    A loader registers strategies whose modules are imported only when a name is first looked
    up; `routeiq_router.strategies.builtins` adds the one of the built-in strategies, so this
    module imports none of them. Each loader runs once per process; one that raises runs again
    on the next lookup."""
    if loader not in _loaders:
        _loaders.append(loader)


def is_registered(name: str) -> bool:
    """Whether a strategy of that name is registered now, running no loader."""
    return name in _STRATEGIES


def _load_builtin() -> None:
    for loader in tuple(_loaders):
        loader()
        with contextlib.suppress(ValueError):  # another thread's lookup ran it too
            _loaders.remove(loader)
