"""KNN: the mean outcome vector of the k nearest training prompts, chosen by quality minus
weighted cost (see `routeiq_router.ml.models`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routeiq_router.artifacts.manifest import Manifest
from routeiq_router.ml.models.base import (
    Floats,
    TrainingSet,
    UtilityRouter,
    Vector,
    npz_bytes,
    shape_error,
)
from routeiq_router.ml.payload import PayloadReader

__all__ = ["KnnRouter"]


class KnnRouter(UtilityRouter):
    """The mean outcome vector of the k nearest training prompts (cosine similarity)."""

    strategy: ClassVar[str] = "knn"
    FILE: ClassVar[str] = "knn.npz"

    def __init__(
        self,
        models: Sequence[str],
        costs: Sequence[float] | Floats,
        knob: float | None,
        embeddings: Vector,
        outcomes: npt.NDArray[np.float32],
        k: int = 10,
    ) -> None:
        super().__init__(models, costs, knob)
        if embeddings.ndim != 2 or outcomes.shape != (embeddings.shape[0], len(self.models)):
            raise ValueError("knn: one outcome row per training embedding, one column per model")
        if k < 1:
            raise ValueError("knn: k must be >= 1")
        # kept as stored (float16), so a loaded artifact decides exactly as the trained model did
        self.embeddings = np.ascontiguousarray(embeddings.astype(np.float16), dtype=np.float32)
        self.outcomes = np.asarray(outcomes, dtype=np.float32)
        self.k = min(k, len(self.embeddings))
        known = ~np.isnan(self.outcomes)
        if not np.all(known.any(axis=0)):
            raise ValueError("knn: every model needs an outcome on at least one training prompt")
        self._column_means = np.nanmean(self.outcomes, axis=0).astype(np.float64)

    @classmethod
    def fit(cls, data: TrainingSet, *, knob: float | None = None, seed: int = 0, k: int = 10) -> KnnRouter:
        rows = np.flatnonzero((~np.isnan(data.scores)).any(axis=1))
        return cls(data.models, data.costs, knob, data.embeddings[rows], data.scores[rows], k=k)

    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        assert embeddings is not None
        similarities = embeddings @ self.embeddings.T  # (count, n): both sides are normalised
        k = self.k
        nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        neighbours = self.outcomes[nearest].astype(np.float64)  # (count, k, models)
        known = ~np.isnan(neighbours)
        totals = np.where(known, neighbours, 0.0).sum(axis=1)
        counts = known.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = totals / counts
        result: Floats = np.where(counts > 0, means, self._column_means)
        return result

    def _hyperparameters(self) -> dict[str, Any]:
        return {"k": self.k, "trainingPrompts": len(self.embeddings)}

    def to_files(self) -> dict[str, bytes]:
        return {self.FILE: npz_bytes(embeddings=self.embeddings.astype(np.float16), outcomes=self.outcomes)}

    @classmethod
    def _load(
        cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> KnnRouter:
        arrays = reader.npz(cls.FILE)
        embeddings, outcomes = arrays["embeddings"], arrays["outcomes"]
        dimension = cls._dimension(manifest)
        if embeddings.ndim != 2 or embeddings.shape[1] != dimension or embeddings.dtype.kind != "f":
            raise shape_error(f"{cls.FILE}: embeddings", embeddings, f"(n, {dimension}) float")
        if outcomes.shape != (embeddings.shape[0], len(manifest.candidates)) or outcomes.dtype.kind != "f":
            raise shape_error(
                f"{cls.FILE}: outcomes", outcomes, f"({embeddings.shape[0]}, {len(manifest.candidates)})"
            )
        k = int(manifest.parameters.get("k", 10))
        return cls(
            manifest.candidates, costs, knob, embeddings.astype(np.float32), outcomes.astype(np.float32), k=k
        )
