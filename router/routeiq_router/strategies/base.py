"""The contract every routing strategy implements."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final, Protocol

from routeiq_router.inflight import InFlightTracker

__all__ = [
    "MODEL_KEY_PATTERN",
    "CpuProfile",
    "Deployment",
    "RoutingRequest",
    "RoutingStrategy",
    "StrategyContext",
    "StrategyUnavailableError",
    "deployment_id",
]

MODEL_KEY_PATTERN: Final = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
"""A model key (`ROUTEIQ_VARIANT_MODELS`, an A/B variant's `model`): a Kubernetes object name."""

Deployment = Mapping[str, Any]
"""A LiteLLM deployment as the Router holds it: `model_name`, `litellm_params`, `model_info`."""


class StrategyUnavailableError(RuntimeError):
    """A strategy that cannot decide right now (a trained one whose model is not loaded in this
    worker). The routing path then falls back to round-robin rather than failing the request."""


class CpuProfile(StrEnum):
    """How much CPU a strategy's decision costs; it sets the default worker count."""

    IO = "io"  # simple strategies: 2 * CPU + 1 workers
    LIGHT = "light"  # ELO, MF: CPU + 1
    MODERATE = "moderate"  # MLP, SVM: CPU
    HEAVY = "heavy"  # KNN over sentence-transformer embeddings: max(1, CPU / 2)


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """What a strategy may look at besides the candidates."""

    model_group: str
    messages: Sequence[Mapping[str, Any]] | None = None
    input: str | Sequence[Any] | None = None
    request_kwargs: Mapping[str, Any] | None = None


@dataclass(slots=True)
class StrategyContext:
    """Per-worker state shared by the strategies of one gateway worker.

    `model`: the key of the trained model a strategy instance routes with (an A/B variant's
    model, see `ROUTEIQ_VARIANT_MODELS`); None: a trained strategy routes with the model of its
    own name. Strategies that route without a trained model cannot take one (`create` refuses).
    An instance with a model gets its own copy: `dataclasses.replace(context, model=key)`.
    """

    inflight: InFlightTracker = field(default_factory=InFlightTracker)
    rng: random.Random = field(default_factory=random.Random)
    model: str | None = None


class RoutingStrategy(Protocol):
    """Chooses one deployment among the healthy candidates of a model group."""

    name: ClassVar[str]
    cpu_profile: ClassVar[CpuProfile]

    def choose(self, candidates: Sequence[Deployment], request: RoutingRequest) -> Deployment:
        """Return one of `candidates` (never empty)."""
        ...


def deployment_id(deployment: Deployment) -> str:
    """The Router's id of a deployment (`model_info.id`)."""
    return str(deployment["model_info"]["id"])
