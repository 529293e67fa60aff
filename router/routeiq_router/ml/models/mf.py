"""MF: RouteLLM-style matrix factorisation with its threshold escalation (see
`routeiq_router.ml.models`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from routeiq_router.artifacts.manifest import Manifest
from routeiq_router.ml.models.base import (
    Floats,
    Indices,
    RouterModel,
    TrainingSet,
    Vector,
    cost_order,
    npz_bytes,
    shape_error,
    sigmoid,
)
from routeiq_router.ml.payload import PayloadReader

__all__ = ["MfRouter"]


class MfRouter(RouterModel):
    """RouteLLM-style matrix factorisation: score(m, x) = v_m . (W x + b), trained so that
    sigmoid(score(winner) - score(loser)) fits the preferences (Bradley-Terry loss)."""

    strategy: ClassVar[str] = "mf"
    knob_name: ClassVar[str] = "threshold"
    knob_default: ClassVar[float | None] = 0.5
    FILE: ClassVar[str] = "mf.npz"

    def __init__(
        self,
        models: Sequence[str],
        costs: Sequence[float] | Floats,
        knob: float | None,
        model_vectors: Floats,
        projection: Floats,
        bias: Floats,
    ) -> None:
        super().__init__(models, costs, knob)
        rank = projection.shape[0] if projection.ndim == 2 else -1
        if model_vectors.shape != (len(self.models), rank) or bias.shape != (rank,):
            raise ValueError("mf: model vectors (models, r), projection (r, d) and bias (r,) disagree")
        self.model_vectors = np.asarray(model_vectors, dtype=np.float64)
        self.projection = np.asarray(projection, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float64)

    @classmethod
    def check_knob(cls, value: float | None) -> float | None:
        knob = super().check_knob(value)
        if knob is None or not 0.0 <= knob <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        return knob

    @classmethod
    def fit(
        cls, data: TrainingSet, *, knob: float | None = None, seed: int = 0, rank: int = 32, l2: float = 3e-3
    ) -> MfRouter:
        from scipy.optimize import minimize

        if len(data.pairs) == 0:
            raise ValueError("mf: no pairwise preferences to learn from")
        count, dimension = len(data.models), data.embeddings.shape[1]
        # project each prompt once per step, not once per pair it appears in
        rows, example = np.unique(data.pairs[:, 0], return_inverse=True)
        x = data.embeddings[rows].astype(np.float64)  # (prompts, d)
        winners, losers = data.pairs[:, 1], data.pairs[:, 2]
        scale = float(len(data.pairs))
        shapes = ((count, rank), (rank, dimension), (rank,))
        sizes = [int(np.prod(shape)) for shape in shapes]

        def unpack(theta: Floats) -> tuple[Floats, Floats, Floats]:
            v, w, b = np.split(theta, np.cumsum(sizes)[:-1])
            return v.reshape(shapes[0]), w.reshape(shapes[1]), b

        def loss(theta: Floats) -> tuple[float, Floats]:
            v, w, b = unpack(theta)
            projected = x @ w.T + b  # (prompts, r)
            z = projected[example]  # (pairs, r)
            difference = v[winners] - v[losers]  # (p, r)
            margin = np.sum(difference * z, axis=1)
            value = float(np.sum(np.logaddexp(0.0, -margin))) / scale
            value += 0.5 * l2 * (float(np.sum(v * v)) + float(np.sum(w * w)))
            g = -sigmoid(-margin) / scale  # d loss / d margin
            per_prompt = np.zeros_like(projected)
            np.add.at(per_prompt, example, g[:, None] * difference)
            grad_v = l2 * v
            np.add.at(grad_v, winners, g[:, None] * z)
            np.add.at(grad_v, losers, -g[:, None] * z)
            grad_w = per_prompt.T @ x + l2 * w
            grad_b = per_prompt.sum(axis=0)
            return value, np.concatenate([grad_v.ravel(), grad_w.ravel(), grad_b])

        rng = np.random.default_rng(seed)
        start = np.concatenate(
            [
                rng.normal(0.0, 0.1, sizes[0]),
                rng.normal(0.0, 0.1 / math.sqrt(dimension), sizes[1]),
                np.zeros(sizes[2]),
            ]
        )
        result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        v, w, b = unpack(np.asarray(result.x, dtype=np.float64))
        return cls(data.models, data.costs, knob, v, w, b)

    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        assert embeddings is not None
        z = embeddings.astype(np.float64) @ self.projection.T.astype(np.float64) + self.bias
        result: Floats = z @ self.model_vectors.T
        return result

    def select(self, scores: Floats, allowed: Indices) -> int:
        assert self.knob is not None
        order = cost_order(self.costs, allowed)
        position = 0
        while position < len(order) - 1:
            later = order[position + 1 :]
            probabilities = sigmoid(scores[later] - scores[order[position]])
            best = int(np.argmax(probabilities))  # ties: the cheaper
            if probabilities[best] <= self.knob:
                break
            position += 1 + best
        return int(order[position])

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rank": int(self.projection.shape[0])}

    def to_files(self) -> dict[str, bytes]:
        return {
            self.FILE: npz_bytes(model_vectors=self.model_vectors, projection=self.projection, bias=self.bias)
        }

    @classmethod
    def _load(
        cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> MfRouter:
        arrays = reader.npz(cls.FILE)
        vectors, projection, bias = arrays["model_vectors"], arrays["projection"], arrays["bias"]
        dimension = cls._dimension(manifest)
        if projection.ndim != 2 or projection.shape[1] != dimension or projection.dtype.kind != "f":
            raise shape_error(f"{cls.FILE}: projection", projection, f"(r, {dimension}) float")
        rank = projection.shape[0]
        if vectors.shape != (len(manifest.candidates), rank) or vectors.dtype.kind != "f":
            raise shape_error(
                f"{cls.FILE}: model_vectors", vectors, f"({len(manifest.candidates)}, {rank}) float"
            )
        if bias.shape != (rank,) or bias.dtype.kind != "f":
            raise shape_error(f"{cls.FILE}: bias", bias, f"({rank},) float")
        return cls(
            manifest.candidates,
            costs,
            knob,
            vectors.astype(np.float64),
            projection.astype(np.float32),
            bias.astype(np.float64),
        )
