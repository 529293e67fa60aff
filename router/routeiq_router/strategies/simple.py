"""Strategies that need no model: round-robin, weighted random and least-busy."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import ClassVar

from routeiq_router.strategies.base import (
    CpuProfile,
    Deployment,
    RoutingRequest,
    StrategyContext,
    deployment_id,
)
from routeiq_router.strategies.registry import register

__all__ = ["LeastBusy", "RoundRobin", "WeightedRandom", "deployment_weight"]


@register
class RoundRobin:
    """Cycles through the healthy deployments of each model group in config order."""

    name: ClassVar[str] = "round-robin"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.IO

    def __init__(self, context: StrategyContext) -> None:
        self._cursors: dict[str, Iterator[int]] = {}

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        cursor = self._cursors.get(request.model_group)
        if cursor is None:
            cursor = self._cursors.setdefault(request.model_group, itertools.count())
        return candidates[next(cursor) % len(candidates)]


def deployment_weight(deployment: Deployment) -> float:
    """`litellm_params.weight` (default 1), the same key LiteLLM's simple-shuffle reads."""
    weight = deployment["litellm_params"].get("weight", 1)
    return float(weight)


@register
class WeightedRandom:
    """Picks a deployment at random in proportion to its `litellm_params.weight`."""

    name: ClassVar[str] = "weighted-random"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.IO

    def __init__(self, context: StrategyContext) -> None:
        self._rng = context.rng

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        weights = [deployment_weight(deployment) for deployment in candidates]
        return self._rng.choices(candidates, weights=weights)[0]


@register
class LeastBusy:
    """Picks the deployment with the fewest requests in flight in this worker; ties at random."""

    name: ClassVar[str] = "least-busy"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.IO

    def __init__(self, context: StrategyContext) -> None:
        self._inflight = context.inflight
        self._rng = context.rng

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        counts = self._inflight.counts(deployment_id(deployment) for deployment in candidates)
        fewest = min(counts)
        idle = [deployment for deployment, count in zip(candidates, counts, strict=True) if count == fewest]
        return idle[0] if len(idle) == 1 else self._rng.choice(idle)
