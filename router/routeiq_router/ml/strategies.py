"""The trained routing strategies: `knn`, `mlp`, `svm`, `elo` and `mf`.

Each reads its current model from a `ModelHolder` (by default the worker's `default_holder()`)
on every decision, embeds the prompt through the model's CachedEmbedder (not for ELO), maps
the candidate deployments to the artifact's model names (`routeiq_router.ml.runtime`) and
chooses with the model's knob. Without a loaded model `choose` raises ModelNotLoadedError.

The model is the holder's model of the strategy's name, or, for an instance created with
`StrategyContext.model` (an A/B variant's model), the model under that key: its manifest's
strategy must be the instance's, else `choose` raises StrategyUnavailableError (the routing
path then falls back to round-robin).

Registered on the strategy registry's first lookup by `routeiq_router.strategies.builtins` when
the `ml` extra is installed; importing this module loads neither torch nor scikit-learn (they
come with the first model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from routeiq_router.ml.embeddings import prompt_text
from routeiq_router.ml.runtime import (
    LoadedRouter,
    ModelHolder,
    ModelNotLoadedError,
    RouteDecision,
    decide,
    default_holder,
)
from routeiq_router.strategies.base import (
    CpuProfile,
    Deployment,
    RoutingRequest,
    StrategyContext,
    StrategyUnavailableError,
)
from routeiq_router.strategies.registry import register

__all__ = ["EloStrategy", "KnnStrategy", "MfStrategy", "MlpStrategy", "SvmStrategy", "TrainedStrategy"]

logger = logging.getLogger("routeiq.ml")


class TrainedStrategy:
    """Routes with the holder's current model of the strategy's name, or of `context.model`."""

    name: ClassVar[str]
    cpu_profile: ClassVar[CpuProfile]
    uses_model: ClassVar[bool] = True  # `create` may give it a model key (StrategyContext.model)

    def __init__(self, context: StrategyContext, holder: ModelHolder | None = None) -> None:
        self.holder = holder if holder is not None else default_holder()
        self.model_key = context.model  # None: the model of the strategy's name
        self._rng = context.rng
        self.fallbacks: dict[str, int] = {}  # per model group: decisions where no candidate mapped

    def loaded(self) -> LoadedRouter:
        """The model this instance routes with now; StrategyUnavailableError (ModelNotLoadedError
        when there is none) if it cannot route."""
        if self.model_key is None:
            return self.holder.get(self.name)
        models = self.holder.current()
        loaded = models.get(self.model_key)
        if loaded is None:
            raise ModelNotLoadedError(self.name, list(models), model=self.model_key)
        if loaded.strategy != self.name:
            raise StrategyUnavailableError(
                f"variant model {self.model_key!r} was trained for strategy {loaded.strategy!r}, "
                f"not {self.name!r}: give the variant strategy {loaded.strategy!r}, or a model trained "
                f"with `routeiq train --strategy {self.name}`"
            )
        return loaded

    def decide(self, candidates: Sequence[Deployment], request: RoutingRequest) -> RouteDecision:
        """The decision with its details (the chosen artifact model, scores, fallback flag)."""
        decision = decide(self.loaded(), candidates, request, self._rng)
        if decision.fallback:
            count = self.fallbacks.get(request.model_group, 0) + 1
            self.fallbacks[request.model_group] = count
            if count == 1:  # once per model group and worker: the cause is in the config
                logger.warning(
                    "no candidate deployment maps to a model of the trained router; using the first",
                    extra={
                        "strategy": self.name,
                        "model": self.model_key,
                        "model_group": request.model_group,
                        "hint": "set model_info.routeiq_model on each deployment to a model name of the artifact",
                    },
                )
        return decision

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        return self.decide(candidates, request).deployment

    def prepare(self, request: RoutingRequest) -> None:
        """Embed the request's prompt into the model's cache, so that `choose` does not.

        The gateway calls this in a thread before `choose`: the embedding (~10 ms of CPU) then
        runs off the worker's event loop, and the decision itself is a cache hit. A no-op for
        ELO (no embedding) and without a loaded model (`choose` reports that)."""
        loaded = self.holder.current().get(self.model_key or self.name)
        if (
            loaded is not None
            and loaded.strategy == self.name
            and loaded.embedder is not None
            and loaded.model.needs_embedding
        ):
            loaded.embedder.embed_one(prompt_text(request.messages, request.input))


@register
class KnnStrategy(TrainedStrategy):
    """The k nearest labelled prompts in embedding space vote (mean outcome per model)."""

    name: ClassVar[str] = "knn"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.HEAVY


@register
class MlpStrategy(TrainedStrategy):
    """An MLP classifier over the prompt embedding predicts the best model."""

    name: ClassVar[str] = "mlp"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.MODERATE


@register
class SvmStrategy(TrainedStrategy):
    """A calibrated RBF SVM over the prompt embedding predicts the best model."""

    name: ClassVar[str] = "svm"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.MODERATE


@register
class EloStrategy(TrainedStrategy):
    """The best Elo-rated model (pairwise preferences) within a cost budget; ignores the prompt."""

    name: ClassVar[str] = "elo"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.LIGHT


@register
class MfStrategy(TrainedStrategy):
    """Matrix factorisation (RouteLLM): escalate to a costlier model when it likely wins."""

    name: ClassVar[str] = "mf"
    cpu_profile: ClassVar[CpuProfile] = CpuProfile.LIGHT
