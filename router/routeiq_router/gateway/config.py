"""Loading and checking the LiteLLM proxy config before any worker starts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["GatewayConfigError", "LiteLLMConfig", "demo_config_path", "load_litellm_config"]


AUTO_ROUTER_PREFIX = "auto_router/"  # LiteLLM's semantic/complexity/quality routers


class GatewayConfigError(ValueError):
    """The LiteLLM config cannot be used; the message names the file and the problem."""


class _LiteLLMParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    weight: float | None = Field(default=None, gt=0)


class _Deployment(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_name: str = Field(min_length=1)
    litellm_params: _LiteLLMParams
    model_info: dict[str, Any] | None = None


class LiteLLMConfig(BaseModel):
    """The part of LiteLLM's proxy config RouteIQ relies on; everything else passes through."""

    model_config = ConfigDict(extra="allow")

    model_list: list[_Deployment] = Field(min_length=1)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_groups(self) -> set[str]:
        return {deployment.model_name for deployment in self.model_list}

    @property
    def cooldown_settings(self) -> list[str]:
        """LiteLLM cooldown settings that RouteIQ's circuit breakers take the place of."""
        keys = ("allowed_fails", "cooldown_time", "allowed_fails_policy", "disable_cooldowns")
        return [f"router_settings.{key}" for key in keys if key in self.router_settings]

    @property
    def overridden_settings(self) -> list[str]:
        """LiteLLM settings RouteIQ's routing takes the place of (start-up warns about them)."""
        return [
            f"router_settings.{key}"
            for key in ("routing_strategy", "routing_strategy_args")
            if key in self.router_settings
        ]

    @model_validator(mode="after")
    def _no_competing_router(self) -> LiteLLMConfig:
        # RouteIQ replaces the Router's deployment selection, LiteLLM's own pre-routing layers
        # included; refuse them rather than bypass them silently
        for index, deployment in enumerate(self.model_list):
            if deployment.litellm_params.model.startswith(AUTO_ROUTER_PREFIX):
                raise ValueError(
                    f"model_list[{index}].litellm_params.model: LiteLLM's own routers ({AUTO_ROUTER_PREFIX}...) "
                    "cannot be combined with RouteIQ routing; choose the strategy with ROUTEIQ_STRATEGY"
                )
        for key in ("routing_groups", "plugins"):
            if self.router_settings.get(key):
                raise ValueError(
                    f"router_settings.{key}: LiteLLM's {key.replace('_', ' ')} cannot be combined with "
                    "RouteIQ routing; choose the strategy with ROUTEIQ_STRATEGY"
                )
        return self

    @model_validator(mode="after")
    def _fallbacks_name_known_groups(self) -> LiteLLMConfig:
        groups = self.model_groups | set((self.router_settings.get("model_group_alias") or {}).keys())
        for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for index, rule in enumerate(self.router_settings.get(key) or []):
                if not isinstance(rule, dict):
                    raise ValueError(
                        f"router_settings.{key}[{index}] must map a model group to a list of groups"
                    )
                for source, targets in rule.items():
                    for group in [source, *(targets or [])]:
                        if group not in groups:
                            raise ValueError(
                                f"router_settings.{key}[{index}] names model group {group!r}, which has no "
                                f"deployments in model_list (known groups: {', '.join(sorted(groups))})"
                            )
        return self


def demo_config_path() -> Path:
    """The embedded demo config: mock deployments, no provider keys needed."""
    return Path(str(resources.files("routeiq_router.gateway").joinpath("demo_config.yaml")))


def load_litellm_config(path: Path) -> LiteLLMConfig:
    """Read and check the LiteLLM config at `path`; raises GatewayConfigError naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GatewayConfigError(
            f"LiteLLM config {path} does not exist (set LITELLM_CONFIG_PATH or --config)"
        ) from None
    except OSError as error:
        raise GatewayConfigError(f"LiteLLM config {path} cannot be read: {error.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or str(error)
        raise GatewayConfigError(f"LiteLLM config {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise GatewayConfigError(f"LiteLLM config {path} must be a YAML mapping with a model_list")
    try:
        return LiteLLMConfig.model_validate(document)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{location.lstrip('.') or 'config'}: {message}")
        raise GatewayConfigError(f"LiteLLM config {path} is invalid:\n  " + "\n  ".join(problems)) from None
