"""The public API changes only on purpose."""

from __future__ import annotations

import subprocess
import sys

import routeiq_router

PUBLIC = [
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


def test_public_names() -> None:
    assert routeiq_router.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(routeiq_router, name) is not None


def test_settings_and_strategies_import_without_litellm() -> None:
    # the CLI and the operator read settings and strategy names without loading LiteLLM
    code = "import sys, routeiq_router, routeiq_router.cli; sys.exit('litellm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
