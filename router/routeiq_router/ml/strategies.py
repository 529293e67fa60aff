"""The trained routing strategies: `knn`, `mlp`, `svm`, `elo` and `mf`.

Each reads its current model from a `ModelHolder` (by default the worker's `default_holder()`)
on every decision, embeds the prompt through the model's CachedEmbedder (not for ELO), maps
the candidate deployments to the artifact's model names (`routeiq_router.ml.runtime`) and
chooses with the model's knob. Without a loaded model `choose` raises ModelNotLoadedError.

Registered by the strategy registry when the `ml` extra is installed; importing this module
loads neither torch nor scikit-learn (they come with the first model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from routeiq_router.ml.embeddings import prompt_text
from routeiq_router.ml.runtime import ModelHolder, RouteDecision, decide, default_holder
from routeiq_router.strategies.base import CpuProfile, Deployment, RoutingRequest, StrategyContext
from routeiq_router.strategies.registry import register

__all__ = ["EloStrategy", "KnnStrategy", "MfStrategy", "MlpStrategy", "SvmStrategy", "TrainedStrategy"]

logger = logging.getLogger("routeiq.ml")


class TrainedStrategy:
    """Routes with the holder's current model of the strategy's name."""

    name: ClassVar[str]
    cpu_profile: ClassVar[CpuProfile]

    def __init__(self, context: StrategyContext, holder: ModelHolder | None = None) -> None:
        self.holder = holder if holder is not None else default_holder()
        self._rng = context.rng
        self.fallbacks: dict[str, int] = {}  # per model group: decisions where no candidate mapped

    def decide(self, candidates: Sequence[Deployment], request: RoutingRequest) -> RouteDecision:
        """The decision with its details (the chosen artifact model, scores, fallback flag)."""
        decision = decide(self.holder.get(self.name), candidates, request, self._rng)
        if decision.fallback:
            count = self.fallbacks.get(request.model_group, 0) + 1
            self.fallbacks[request.model_group] = count
            if count == 1:  # once per model group and worker: the cause is in the config
                logger.warning(
                    "no candidate deployment maps to a model of the trained router; using the first",
                    extra={
                        "strategy": self.name,
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
        loaded = self.holder.current().get(self.name)
        if loaded is not None and loaded.embedder is not None and loaded.model.needs_embedding:
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
