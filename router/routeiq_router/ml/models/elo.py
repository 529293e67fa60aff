"""ELO: Bradley-Terry ratings on the Elo scale, the same for every prompt, chosen within
`max_cost` (see `routeiq_router.ml.models`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from routeiq_router.artifacts.manifest import Manifest
from routeiq_router.ml.models.base import (
    Floats,
    Indices,
    ModelFormatError,
    RouterModel,
    TrainingSet,
    Vector,
    best_by,
    cheapest,
    json_bytes,
    sigmoid,
)
from routeiq_router.ml.payload import PayloadReader

__all__ = ["ELO_BASE", "ELO_SCALE", "EloRouter"]

ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of Bradley-Terry log-strength
ELO_BASE = 1000.0


class EloRouter(RouterModel):
    """Bradley-Terry ratings fitted to every pairwise preference, on the Elo scale; the same
    for every prompt. Chooses the best-rated model within `max_cost` (USD per 1K tokens)."""

    strategy: ClassVar[str] = "elo"
    knob_name: ClassVar[str] = "max_cost"
    knob_default: ClassVar[float | None] = None
    needs_embedding: ClassVar[bool] = False
    FILE: ClassVar[str] = "elo.json"

    def __init__(
        self, models: Sequence[str], costs: Sequence[float] | Floats, knob: float | None, ratings: Floats
    ) -> None:
        super().__init__(models, costs, knob)
        ratings = np.asarray(ratings, dtype=np.float64)
        if ratings.shape != (len(self.models),) or not np.all(np.isfinite(ratings)):
            raise ValueError("elo: one finite rating per model")
        self.ratings = ratings

    @classmethod
    def check_knob(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError("max_cost must be a number >= 0 (USD per 1K tokens)")
        return None if value is None else float(value)

    @classmethod
    def fit(
        cls, data: TrainingSet, *, knob: float | None = None, seed: int = 0, l2: float = 1e-3
    ) -> EloRouter:
        from scipy.optimize import minimize

        count = len(data.models)
        if len(data.pairs) == 0:
            raise ValueError("elo: no pairwise preferences to learn from")
        winners, losers = data.pairs[:, 1], data.pairs[:, 2]
        wins = np.zeros((count, count))
        np.add.at(wins, (winners, losers), 1.0)
        scale = float(len(data.pairs))

        def loss(strength: Floats) -> tuple[float, Floats]:
            margin = strength[:, None] - strength[None, :]
            value = float(np.sum(wins * np.logaddexp(0.0, -margin))) / scale + 0.5 * l2 * float(
                strength @ strength
            )
            pull = wins * sigmoid(-margin) / scale  # d loss / d margin = -pull
            gradient: Floats = -pull.sum(axis=1) + pull.sum(axis=0) + l2 * strength
            return value, gradient

        result = minimize(loss, np.zeros(count), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
        strength = np.asarray(result.x, dtype=np.float64)
        ratings = np.round(ELO_BASE + ELO_SCALE * (strength - strength.mean()), 6)  # as stored
        return cls(data.models, data.costs, knob, ratings)

    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        return np.tile(self.ratings, (count, 1))

    def select(self, scores: Floats, allowed: Indices) -> int:
        affordable = allowed if self.knob is None else allowed[self.costs[allowed] <= self.knob + 1e-12]
        if len(affordable) == 0:
            return cheapest(self.costs, allowed)
        return best_by(scores, self.costs, affordable)

    def to_files(self) -> dict[str, bytes]:
        ratings = {
            model: round(float(rating), 6) for model, rating in zip(self.models, self.ratings, strict=True)
        }
        return {self.FILE: json_bytes({"ratings": ratings, "scale": "elo", "base": ELO_BASE})}

    @classmethod
    def _load(
        cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> EloRouter:
        document = reader.json(cls.FILE)
        ratings = document.get("ratings") if isinstance(document, dict) else None
        if not isinstance(ratings, dict) or set(ratings) != set(manifest.candidates):
            raise ModelFormatError(f"{cls.FILE}: ratings: expected one rating per candidate model")
        values = np.array([float(ratings[model]) for model in manifest.candidates])
        return cls(manifest.candidates, costs, knob, values)
