"""The built-in strategies: registered on the registry's first lookup, as `catalog` names them.

The simple ones (`routeiq_router.strategies.simple`) always; the trained ones
(`routeiq_router.ml.strategies`) when the `ml` extra is installed. Their modules are imported
by the loader this module adds to the registry, on the first lookup, so the registry imports
no strategy, and importing the `routeiq_router.strategies` package (which imports this module)
loads neither the ML modules nor their dependencies.
"""

from __future__ import annotations

from routeiq_router.strategies import registry
from routeiq_router.strategies.catalog import SIMPLE_STRATEGIES, TRAINED_STRATEGIES

__all__ = ["load"]


def load() -> None:
    """Register the built-in strategies (the registry runs this once, before its first lookup)."""
    from routeiq_router.strategies import simple  # noqa: F401 - registers SIMPLE_STRATEGIES

    expected = SIMPLE_STRATEGIES
    try:  # the trained strategies, when the ml extra is installed
        from routeiq_router.ml import strategies  # noqa: F401 - registers TRAINED_STRATEGIES
    except ModuleNotFoundError as error:
        if (error.name or "").startswith("routeiq_router"):
            raise
    else:
        expected += TRAINED_STRATEGIES
    missing = [name for name in expected if not registry.is_registered(name)]
    if missing:  # a strategy module and the catalog disagree
        raise RuntimeError(f"built-in strategies {', '.join(missing)} are in the catalog but not registered")


registry.add_loader(load)
