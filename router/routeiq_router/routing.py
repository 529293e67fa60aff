"""`RouteIQRoutingStrategy`: RouteIQ's strategies installed into a LiteLLM Router.

    >>> router = Router(model_list=[...])
    >>> install(router, "least-busy")          # every later request is routed by RouteIQ

LiteLLM still decides which deployments are eligible (cooldowns, specific deployments,
team and access-group filters, `order`): RouteIQ asks the Router for the healthy candidates
and only chooses among them, so it never picks a deployment LiteLLM has cooled down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.core_helpers import get_parent_otel_span_from_kwargs
from litellm.router import Router
from litellm.router_utils.cooldown_handlers import get_cooldown_deployments
from litellm.types.router import CustomRoutingStrategyBase, RouterRateLimitError

from routeiq_router import decisions
from routeiq_router.inflight import InFlightTracker
from routeiq_router.strategies import RoutingRequest, RoutingStrategy, StrategyContext, create, deployment_id

__all__ = ["InFlightCallback", "RouteIQRoutingStrategy", "install", "installed_strategy"]

logger = logging.getLogger("routeiq.routing")


class InFlightCallback(CustomLogger):
    """Counts requests in flight per deployment from LiteLLM's call lifecycle (as LiteLLM's
    own least-busy does): +1 before the provider call, -1 on success or failure."""

    def __init__(self, tracker: InFlightTracker) -> None:
        super().__init__()
        self.tracker = tracker

    @staticmethod
    def _deployment(kwargs: Mapping[str, Any]) -> str | None:
        params = kwargs.get("litellm_params") or {}
        model_info = params.get("model_info") or {}
        identifier = model_info.get("id") if isinstance(model_info, Mapping) else None
        return None if identifier is None else str(identifier)

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        if (deployment := self._deployment(kwargs)) is not None:
            self.tracker.started(deployment)

    def _finished(self, kwargs: Any) -> None:
        if (deployment := self._deployment(kwargs)) is not None:
            self.tracker.finished(deployment)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._finished(kwargs)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._finished(kwargs)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finished(kwargs)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finished(kwargs)


class RouteIQRoutingStrategy(CustomRoutingStrategyBase):
    """A LiteLLM custom routing strategy that delegates the choice to a RouteIQ strategy."""

    def __init__(self, router: Router, strategy: RoutingStrategy) -> None:
        self.router = router
        self.strategy = strategy

    async def async_get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        kwargs = request_kwargs if request_kwargs is not None else {}
        healthy = await self.router.async_get_healthy_deployments(
            model=model,
            request_kwargs=kwargs,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            parent_otel_span=get_parent_otel_span_from_kwargs(kwargs),
        )
        return self._decide(model, healthy, messages, input, kwargs, started)

    def get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The sync twin (Router.completion): the same filters LiteLLM's own sync path applies."""
        started = time.perf_counter()
        kwargs = request_kwargs if request_kwargs is not None else {}
        model, healthy = self.router._common_checks_available_deployment(
            model=model,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            request_kwargs=kwargs,
        )
        if isinstance(healthy, list):
            cooldown = get_cooldown_deployments(litellm_router_instance=self.router, parent_otel_span=None)
            healthy = self.router._filter_cooldown_deployments(
                healthy_deployments=healthy, cooldown_deployments=cooldown
            )
            healthy = self.router._filter_blocked_deployments(healthy)
            if not healthy:
                model_ids = self.router.get_model_ids(model_name=model)
                raise RouterRateLimitError(
                    model=model,
                    cooldown_time=self.router.cooldown_cache.get_min_cooldown(
                        model_ids=model_ids, parent_otel_span=None
                    ),
                    enable_pre_call_checks=self.router.enable_pre_call_checks,
                    cooldown_list=cooldown,
                    model_ids=model_ids,
                )
        return self._decide(model, healthy, messages, input, kwargs, started)

    def _decide(
        self,
        model: str,
        healthy: list[dict[str, Any]] | dict[str, Any],
        messages: list[dict[str, str]] | None,
        input: str | list[Any] | None,
        kwargs: dict[str, Any],
        started: float,
    ) -> dict[str, Any]:
        if isinstance(healthy, dict):  # a specific deployment was asked for: honour it
            chosen = healthy
        else:
            request = RoutingRequest(model_group=model, messages=messages, input=input, request_kwargs=kwargs)
            chosen = dict(self.strategy.choose(healthy, request))
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        decisions.record(
            decisions.Decision(
                strategy=self.strategy.name,
                model_group=model,
                deployment_id=deployment_id(chosen),
                duration_ms=elapsed_ms,
            )
        )
        return chosen


def install(
    router: Router, strategy_name: str, context: StrategyContext | None = None
) -> RouteIQRoutingStrategy:
    """Route every request of `router` with the named RouteIQ strategy.

    Raises UnknownStrategyError (listing the valid names) for an unknown name. Installing
    again replaces the strategy; LiteLLM's in-flight callback then counts for the new one.
    """
    context = context if context is not None else StrategyContext()
    strategy = create(strategy_name, context)
    custom = RouteIQRoutingStrategy(router, strategy)
    _register_inflight_callback(context.inflight)
    router.set_custom_routing_strategy(custom)
    router.routeiq_strategy = custom  # type: ignore[attr-defined]
    logger.info("routing strategy installed", extra={"strategy": strategy_name})
    return custom


def installed_strategy(router: Router | None) -> RouteIQRoutingStrategy | None:
    """The RouteIQ strategy installed on `router`, if any."""
    custom = getattr(router, "routeiq_strategy", None)
    return custom if isinstance(custom, RouteIQRoutingStrategy) else None


_INFLIGHT_CALLBACK: InFlightCallback | None = None


def _register_inflight_callback(tracker: InFlightTracker) -> None:
    """One callback per process, pointed at the tracker of the strategy installed last.

    LiteLLM copies registered callbacks into several internal lists, so replacing the
    callback object would leave the old one receiving events; retargeting it cannot.
    """
    global _INFLIGHT_CALLBACK
    if _INFLIGHT_CALLBACK is None:
        _INFLIGHT_CALLBACK = InFlightCallback(tracker)
    _INFLIGHT_CALLBACK.tracker = tracker
    # both calls skip a callback that is already registered
    litellm.logging_callback_manager.add_litellm_input_callback(_INFLIGHT_CALLBACK)
    litellm.logging_callback_manager.add_litellm_callback(_INFLIGHT_CALLBACK)
