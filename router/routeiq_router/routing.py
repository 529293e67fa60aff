"""`RouteIQRoutingStrategy`: RouteIQ's strategies installed into a LiteLLM Router.

    >>> router = Router(model_list=[...])
    >>> install(router, "least-busy")          # every later request is routed by RouteIQ

LiteLLM still decides which deployments are eligible (cooldowns, specific deployments,
team and access-group filters, `order`): RouteIQ asks the Router for the healthy candidates
and only chooses among them, so it never picks a deployment LiteLLM has cooled down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.exceptions import ServiceUnavailableError
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.core_helpers import get_parent_otel_span_from_kwargs
from litellm.router import Router
from litellm.router_utils.cooldown_handlers import get_cooldown_deployments
from litellm.types.router import CustomRoutingStrategyBase, RouterRateLimitError

from routeiq_router import decisions, metrics
from routeiq_router.inflight import InFlightTracker
from routeiq_router.state.breakers import BreakerState
from routeiq_router.state.store import Assignment, RoutingState
from routeiq_router.strategies import (
    Deployment,
    RoutingRequest,
    RoutingStrategy,
    StrategyContext,
    StrategyUnavailableError,
    create,
    deployment_id,
)

__all__ = [
    "AllBreakersOpenError",
    "InFlightCallback",
    "RouteIQRoutingStrategy",
    "counts_against_deployment",
    "install",
    "installed_strategy",
    "request_keys",
]

logger = logging.getLogger("routeiq.routing")


class InFlightCallback(CustomLogger):
    """Follows LiteLLM's call lifecycle for RouteIQ: in-flight counts per deployment (as
    LiteLLM's own least-busy does: +1 before the provider call, -1 on success or failure) and,
    when a routing state is attached, circuit-breaker outcomes and per-variant tokens and cost."""

    def __init__(self, tracker: InFlightTracker, state: RoutingState | None = None) -> None:
        super().__init__()
        self.tracker = tracker
        self.state = state

    @staticmethod
    def _deployment(kwargs: Mapping[str, Any]) -> str | None:
        params = kwargs.get("litellm_params") or {}
        model_info = params.get("model_info") or {}
        identifier = model_info.get("id") if isinstance(model_info, Mapping) else None
        return None if identifier is None else str(identifier)

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        if (deployment := self._deployment(kwargs)) is not None:
            self.tracker.started(deployment)

    def _finished(self, kwargs: Any) -> str | None:
        deployment = self._deployment(kwargs)
        if deployment is not None:
            self.tracker.finished(deployment)
        return deployment

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._finished(kwargs)
        _report(kwargs, response_obj, start_time, end_time, None)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._finished(kwargs)
        _report(kwargs, response_obj, start_time, end_time, kwargs.get("exception") or Exception())

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        deployment = self._finished(kwargs)
        _report(kwargs, response_obj, start_time, end_time, None)
        state = self.state
        if state is None or deployment is None:
            return
        try:
            variant = _metadata_of_call(kwargs).get(VARIANT_METADATA_KEY)
            if isinstance(variant, str):
                prompt, completion = metrics.usage(kwargs.get("complete_streaming_response") or response_obj)
                cost = kwargs.get("response_cost")
                state.record_usage(
                    variant, prompt, completion, cost if isinstance(cost, int | float) else None
                )
            await state.record_success(deployment)
        except Exception:  # a callback must never fail the request it reports on
            logger.exception("recording a success failed")

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        deployment = self._finished(kwargs)
        _report(kwargs, response_obj, start_time, end_time, kwargs.get("exception") or Exception())
        state = self.state
        if state is None or deployment is None or not counts_against_deployment(kwargs.get("exception")):
            return
        try:
            breaker = await state.record_failure(deployment)
            if breaker is BreakerState.OPEN:
                logger.warning("circuit breaker open", extra={"deployment": deployment})
        except Exception:
            logger.exception("recording a failure failed")


def _report(kwargs: Any, response: Any, start_time: Any, end_time: Any, error: object) -> None:
    """The GenAI request metrics of one provider call (never fails the call it reports on)."""
    try:
        metrics.request_finished(kwargs, response, start_time, end_time, error)
    except Exception:
        logger.exception("recording request metrics failed")


def counts_against_deployment(error: object) -> bool:
    """Whether a failed provider call says something about the deployment (and so counts
    towards its circuit breaker): connection errors, timeouts, 5xx, 429, and 401/403/404 (a
    bad key or model name in the deployment). Not the client's own 4xx (bad request, context
    window, content policy): another deployment would refuse it the same way."""
    if error is None:
        return True
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        return True  # no HTTP answer at all: connection refused, DNS, timeout
    return status >= 500 or status in {401, 403, 404, 408, 429}


VARIANT_METADATA_KEY = "routeiq_variant"


def _metadata_of_call(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    params = kwargs.get("litellm_params") or {}
    for container in (params, kwargs):
        for name in ("metadata", "litellm_metadata"):
            metadata = container.get(name)
            if isinstance(metadata, Mapping) and VARIANT_METADATA_KEY in metadata:
                return metadata
    return {}


def request_keys(kwargs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(sticky key, conversation) of a request: the conversation is `metadata.conversation_id`;
    the sticky key is the conversation, else `previous_response_id`, else `user`."""
    conversation: str | None = None
    for name in ("metadata", "litellm_metadata"):
        metadata = kwargs.get(name)
        if not isinstance(metadata, Mapping):
            continue
        for source in (metadata, metadata.get("requester_metadata")):
            if isinstance(source, Mapping) and isinstance(source.get("conversation_id"), str | int):
                conversation = str(source["conversation_id"])
                break
        if conversation is not None:
            break
    sticky = conversation
    if sticky is None and isinstance(kwargs.get("previous_response_id"), str):
        sticky = "response:" + kwargs["previous_response_id"]
    if sticky is None and isinstance(kwargs.get("user"), str) and kwargs["user"]:
        sticky = "user:" + kwargs["user"]
    if sticky is not None and conversation is not None:
        sticky = "conversation:" + conversation
    return sticky, conversation


class AllBreakersOpenError(ServiceUnavailableError):
    """Every candidate deployment has an open circuit breaker: fail fast (503) or fall back.

    The proxy answers it with `Retry-After` (whole seconds until the first breaker half-opens,
    at least 1) and `type: service_unavailable`; the gateway sets `code: circuit_open` (from
    the `x-routeiq-error` header, which it removes)."""

    def __init__(self, message: str, llm_provider: str, model: str, retry_after: float = 1.0) -> None:
        super().__init__(message=message, llm_provider=llm_provider, model=model)
        self.retry_after = max(1, math.ceil(retry_after))
        self.type = "service_unavailable"
        # read by LiteLLM's proxy into the error response's headers
        self.headers = {"retry-after": str(self.retry_after), "x-routeiq-error": "circuit_open"}


def _all_open(state: RoutingState, model_group: str, deployments: list[str]) -> AllBreakersOpenError:
    open_for = state.open_breakers()
    waits = [open_for[i] for i in deployments if i in open_for]
    retry = f"; the first half-opens in {min(waits):.1f}s" if waits else ""
    return AllBreakersOpenError(
        message=(
            f"RouteIQ: every deployment of model group {model_group!r} has an open circuit "
            f"breaker ({', '.join(sorted(deployments))}){retry}"
        ),
        llm_provider="routeiq",
        model=model_group,
        retry_after=min(waits) if waits else 1.0,
    )


class RouteIQRoutingStrategy(CustomRoutingStrategyBase):
    """A LiteLLM custom routing strategy that delegates the choice to a RouteIQ strategy.

    With a `RoutingState` it also applies the shared state: the A/B variant (or the active
    strategy override) picks the strategy, open circuit breakers remove deployments, and a
    conversation stays on its pinned deployment while that one is healthy.
    """

    def __init__(
        self,
        router: Router,
        strategy: RoutingStrategy,
        state: RoutingState | None = None,
        context: StrategyContext | None = None,
    ) -> None:
        self.router = router
        self.strategy = strategy
        self.state = state
        self.context = context if context is not None else StrategyContext()
        # one instance per (strategy, variant model key); None: the strategy's own model, if any
        self._strategies: dict[tuple[str, str | None], RoutingStrategy] = {(strategy.name, None): strategy}
        self._unavailable: set[tuple[str, str | None]] = set()  # already reported unavailable
        # the outcome label of decisions a replaced strategy hands to round-robin
        self._fallbacks: dict[tuple[str, str | None], str] = {}
        self._fallback_errors: dict[tuple[str, str | None], str] = {}  # the last error of each
        metrics.model_groups(_deployment_groups(router))

    def _strategy(self, name: str | None, model: str | None = None) -> RoutingStrategy:
        """The instance of strategy `name` routing with variant model `model` (None: the
        configured strategy, or the strategy's own model). A strategy that cannot take a model
        is reported once and replaced by round-robin for that variant."""
        if name is None:
            return self.strategy
        strategy = self._strategies.get((name, model))
        if strategy is None:
            context = self.context if model is None else dataclasses.replace(self.context, model=model)
            try:
                strategy = create(name, context)
            except StrategyUnavailableError as error:
                strategy = self._fall_back(name, model, error)
            self._strategies[(name, model)] = strategy
        return strategy

    async def async_get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # the span is a child of the request's server span: LiteLLM awaits the strategy in the
        # request's task (or a task that copied its context), where that span is current
        with decisions.decision_span():
            return await self._async_decide(model, messages, input, specific_deployment, request_kwargs)

    async def _async_decide(
        self,
        model: str,
        messages: list[dict[str, str]] | None,
        input: str | list[Any] | None,
        specific_deployment: bool | None,
        request_kwargs: dict[str, Any] | None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        kwargs = request_kwargs if request_kwargs is not None else {}
        state = self.state
        assignment: Assignment | None = None
        conversation: str | None = None
        if state is not None and not specific_deployment:
            sticky, conversation = request_keys(kwargs)
            metadata = kwargs.get("metadata") if isinstance(kwargs.get("metadata"), dict) else None
            kept = metadata.get(VARIANT_METADATA_KEY) if metadata is not None else None
            assignment = await state.assign(sticky, conversation, kept if isinstance(kept, str) else None)
        group = assignment.variant.model_group if assignment and assignment.variant else None
        healthy = await self.router.async_get_healthy_deployments(
            model=group or model,
            request_kwargs=kwargs,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            parent_otel_span=get_parent_otel_span_from_kwargs(kwargs),
        )
        if isinstance(healthy, dict):  # a specific deployment was asked for: honour it
            return self._record(healthy, self.strategy, model, None, started, self.strategy.name, "routed")
        candidates = len(healthy)
        request = RoutingRequest(
            model_group=group or model, messages=messages, input=input, request_kwargs=kwargs
        )
        variant_model = assignment.variant.model if assignment and assignment.variant else None
        asked = assignment.strategy if assignment and assignment.strategy else None
        strategy = self._strategy(asked, variant_model)
        asked = asked or self.strategy.name
        prepare = getattr(strategy, "prepare", None)
        if callable(prepare):  # a trained strategy: embed the prompt off the event loop
            await asyncio.to_thread(prepare, request)
        if state is None:
            chosen, used, outcome = self._choose(strategy, healthy, request)
            outcome = self._outcome(asked, variant_model, strategy, outcome)
            return self._record(
                dict(chosen), used, model, None, started, asked, outcome, candidates=candidates
            )
        assert assignment is not None
        try:
            chosen, used, outcome = await self._choose_admitted(
                state, strategy, healthy, request, assignment.pinned
            )
        except AllBreakersOpenError:
            metrics.routing_outcome(asked, "fallback_all_breakers_open")
            _trace_no_choice(asked, group or model, candidates, assignment.variant)
            raise
        outcome = self._outcome(asked, variant_model, strategy, outcome)
        variant = assignment.variant
        if variant is not None:
            kwargs.setdefault("metadata", {})[VARIANT_METADATA_KEY] = variant.name
        if conversation is not None:
            state.pin(conversation, deployment_id(chosen))
        return self._record(
            chosen,
            used,
            group or model,
            variant.name if variant else None,
            started,
            asked,
            outcome,
            candidates=candidates,
            experiment=variant.experiment if variant else None,
        )

    def _outcome(self, asked: str, model: str | None, strategy: RoutingStrategy, outcome: str) -> str:
        """`outcome`, unless the strategy asked for was replaced when it was created."""
        if outcome == "routed" and strategy.name != asked:
            return self._fallbacks.get((asked, model), "fallback_strategy_unavailable")
        return outcome

    async def _choose_admitted(
        self,
        state: RoutingState,
        strategy: RoutingStrategy,
        healthy: list[dict[str, Any]],
        request: RoutingRequest,
        pinned: str | None,
    ) -> tuple[dict[str, Any], RoutingStrategy, str]:
        """(the deployment, the strategy that chose it, the outcome)."""
        by_id = {deployment_id(d): d for d in healthy}
        closed, probing = state.breaker_view(list(by_id))
        if pinned is not None and pinned in closed:
            return by_id[pinned], strategy, "routed"
        candidates = [by_id[i] for i in closed + probing]
        while candidates:
            choice, used, outcome = self._choose(strategy, candidates, request)
            chosen = dict(choice)
            identifier = deployment_id(chosen)
            if identifier not in probing or await state.admit_probe(identifier):
                return chosen, used, outcome
            candidates = [d for d in candidates if deployment_id(d) != identifier]
        raise _all_open(state, request.model_group, list(by_id))

    def get_available_deployment(  # type: ignore[override]
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The sync twin (Router.completion): the same filters LiteLLM's own sync path applies.
        It reads the shared state's local copy only (active strategy, open breakers); the A/B
        split and affinity need the async path the proxy uses."""
        with decisions.decision_span():
            return self._decide(model, messages, input, specific_deployment, request_kwargs)

    def _decide(
        self,
        model: str,
        messages: list[dict[str, str]] | None,
        input: str | list[Any] | None,
        specific_deployment: bool | None,
        request_kwargs: dict[str, Any] | None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        kwargs = request_kwargs if request_kwargs is not None else {}
        model, healthy = self.router._common_checks_available_deployment(
            model=model,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            request_kwargs=kwargs,
        )
        if isinstance(healthy, dict):
            return self._record(healthy, self.strategy, model, None, started, self.strategy.name, "routed")
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
        strategy = self.strategy
        asked = strategy.name
        if self.state is not None:
            asked = self.state.active_strategy or asked
            strategy = self._strategy(self.state.active_strategy)
            identifiers = [deployment_id(d) for d in healthy]
            closed, _ = self.state.breaker_view(identifiers)
            healthy = [d for d in healthy if deployment_id(d) in closed]
            if not healthy:
                metrics.routing_outcome(asked, "fallback_all_breakers_open")
                _trace_no_choice(asked, model, len(identifiers), None)
                raise _all_open(self.state, model, identifiers)
        request = RoutingRequest(model_group=model, messages=messages, input=input, request_kwargs=kwargs)
        chosen, used, outcome = self._choose(strategy, healthy, request)
        outcome = self._outcome(asked, None, strategy, outcome)
        return self._record(dict(chosen), used, model, None, started, asked, outcome, candidates=len(healthy))

    def _choose(
        self, strategy: RoutingStrategy, candidates: list[dict[str, Any]], request: RoutingRequest
    ) -> tuple[Deployment, RoutingStrategy, str]:
        """(the choice, the strategy that made it, the outcome): round-robin when the strategy
        cannot decide in this worker (a trained one without its model), so a request never fails
        for it and the decision (x-routeiq-strategy, the experiment's counts) names what really
        routed; the outcome (the metrics' label) says why."""
        try:
            decide = getattr(strategy, "decide", None)  # a trained strategy: the decision's details
            if callable(decide):
                decision = decide(candidates, request)
                fell_back = getattr(decision, "fallback", False) is True
                return decision.deployment, strategy, "fallback_no_model_mapping" if fell_back else "routed"
            return strategy.choose(candidates, request), strategy, "routed"
        except StrategyUnavailableError as error:
            model = getattr(strategy, "model_key", None)  # a trained strategy's variant model
            fallback = self._fall_back(strategy.name, model, error)
            return fallback.choose(candidates, request), fallback, _fallback_outcome(error)

    def fallbacks(self) -> list[dict[str, Any]]:
        """The strategies (and variant models) this worker routes round-robin in place of, with
        the outcome counted for them and why: what readiness lists under `fallbacks`."""
        return [
            {
                "strategy": name,
                "model": model,
                "outcome": outcome,
                "error": self._fallback_errors.get((name, model)),
            }
            for (name, model), outcome in sorted(self._fallbacks.items(), key=lambda item: str(item[0]))
        ]

    def _fall_back(self, name: str, model: str | None, error: StrategyUnavailableError) -> RoutingStrategy:
        """Round-robin in place of a strategy that cannot route here; said once per (strategy, model)."""
        self._fallbacks[(name, model)] = _fallback_outcome(error)
        self._fallback_errors[(name, model)] = str(error)
        if (name, model) not in self._unavailable:
            self._unavailable.add((name, model))
            logger.error(
                "strategy unavailable in this worker; routing round-robin instead",
                extra={"strategy": name, "model": model, "error": str(error)},
            )
        return self._strategy("round-robin")

    @staticmethod
    def _record(
        chosen: dict[str, Any],
        strategy: RoutingStrategy,
        model: str,
        variant: str | None,
        started: float,
        asked: str,
        outcome: str,
        *,
        candidates: int = 1,
        experiment: str | None = None,
    ) -> dict[str, Any]:
        seconds = time.perf_counter() - started
        identifier = deployment_id(chosen)
        attributes: dict[str, str | int | float] = {
            "routeiq.strategy": strategy.name,
            "routeiq.requested_strategy": asked,
            "routeiq.outcome": outcome,
            "routeiq.model_group": model,
            "routeiq.deployment.id": identifier,
            "routeiq.candidates_count": candidates,
            "routeiq.duration_ms": seconds * 1000.0,
        }
        params = chosen.get("litellm_params")
        if isinstance(params, Mapping) and isinstance(params.get("model"), str):
            attributes["routeiq.deployment.model"] = params["model"]
        if outcome != "routed":
            attributes["routeiq.fallback_reason"] = outcome.removeprefix("fallback_")
        if variant is not None:
            attributes["routeiq.variant"] = variant
            attributes["routeiq.experiment"] = experiment or ""
        decisions.traced(attributes)
        decisions.record(
            decisions.Decision(
                strategy=strategy.name,
                model_group=model,
                deployment_id=identifier,
                duration_ms=seconds * 1000.0,
                variant=variant,
            )
        )
        metrics.routing_decision(asked, model, identifier, seconds, outcome)
        return chosen


def _trace_no_choice(asked: str, model_group: str, candidates: int, variant: Any) -> None:
    """The decision span's attributes when every breaker was open (no deployment chosen)."""
    attributes: dict[str, str | int | float] = {
        "routeiq.requested_strategy": asked,
        "routeiq.outcome": "fallback_all_breakers_open",
        "routeiq.fallback_reason": "all_breakers_open",
        "routeiq.model_group": model_group,
        "routeiq.candidates_count": candidates,
    }
    if variant is not None:
        attributes["routeiq.variant"] = variant.name
        attributes["routeiq.experiment"] = variant.experiment or ""
    decisions.traced(attributes)


def _fallback_outcome(error: StrategyUnavailableError) -> str:
    """The metrics' outcome of a decision handed to round-robin because of `error`."""
    if type(error).__name__ == "ModelNotLoadedError":  # routeiq_router.ml.runtime, an optional extra
        return "fallback_model_not_loaded"
    return "fallback_strategy_unavailable"


def _deployment_groups(router: Router) -> dict[str, str]:
    """deployment id -> model group, from the router's model list."""
    groups: dict[str, str] = {}
    for deployment in getattr(router, "model_list", None) or []:
        if not isinstance(deployment, Mapping):
            continue
        info = deployment.get("model_info")
        name = deployment.get("model_name")
        if isinstance(info, Mapping) and info.get("id") is not None and isinstance(name, str):
            groups[str(info["id"])] = name
    return groups


def install(
    router: Router,
    strategy_name: str,
    context: StrategyContext | None = None,
    state: RoutingState | None = None,
) -> RouteIQRoutingStrategy:
    """Route every request of `router` with the named RouteIQ strategy.

    Raises UnknownStrategyError (listing the valid names) for an unknown name. Installing
    again replaces the strategy; LiteLLM's callback then reports to the new one. With a
    `state` whose circuit breakers are enabled, LiteLLM's own cooldowns are switched off on
    this router: the shared breakers count each failure once and are the one source of truth
    on whether a deployment may be used.
    """
    context = context if context is not None else StrategyContext()
    strategy = create(strategy_name, context)
    custom = RouteIQRoutingStrategy(router, strategy, state, context)
    _register_callback(context.inflight, state)
    if state is not None and state.options.breakers_enabled:
        router.disable_cooldowns = True
    router.set_custom_routing_strategy(custom)
    router.routeiq_strategy = custom  # type: ignore[attr-defined]
    logger.info(
        "routing strategy installed",
        extra={
            "strategy": strategy_name,
            "circuit_breakers": "routeiq"
            if router.disable_cooldowns and state is not None
            else "litellm cooldowns",
        },
    )
    return custom


def installed_strategy(router: Router | None) -> RouteIQRoutingStrategy | None:
    """The RouteIQ strategy installed on `router`, if any."""
    custom = getattr(router, "routeiq_strategy", None)
    return custom if isinstance(custom, RouteIQRoutingStrategy) else None


_INFLIGHT_CALLBACK: InFlightCallback | None = None


def _register_callback(tracker: InFlightTracker, state: RoutingState | None) -> None:
    """One callback per process, pointed at the tracker of the strategy installed last.

    LiteLLM copies registered callbacks into several internal lists, so replacing the
    callback object would leave the old one receiving events; retargeting it cannot.
    """
    global _INFLIGHT_CALLBACK
    if _INFLIGHT_CALLBACK is None:
        _INFLIGHT_CALLBACK = InFlightCallback(tracker, state)
    _INFLIGHT_CALLBACK.tracker = tracker
    _INFLIGHT_CALLBACK.state = state
    # both calls skip a callback that is already registered
    litellm.logging_callback_manager.add_litellm_input_callback(_INFLIGHT_CALLBACK)
    litellm.logging_callback_manager.add_litellm_callback(_INFLIGHT_CALLBACK)
