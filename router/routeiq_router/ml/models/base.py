"""What every router model shares: `RouterModel` (its knob, scoring and choosing, and saving into
and loading from an artifact), the `TrainingSet` it learns from, `ModelFormatError`, the
cost-aware choice helpers, `UtilityRouter` (the choice of knn, mlp and svm: the highest
predicted quality minus `cost_weight` times the relative cost) and the payload file encoders.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from routeiq_router.artifacts.manifest import ArtifactError, Manifest
from routeiq_router.ml.payload import FilesReader, PayloadReader

__all__ = [
    "Floats",
    "Indices",
    "ModelFormatError",
    "RouterModel",
    "TrainingSet",
    "UtilityRouter",
    "Vector",
    "best_by",
    "cheapest",
    "cost_order",
    "json_bytes",
    "npz_bytes",
    "shape_error",
    "sigmoid",
]

Floats = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float32]
Indices = npt.NDArray[np.intp]
R = TypeVar("R", bound="RouterModel")


class ModelFormatError(ArtifactError):
    """An artifact whose payload does not fit its manifest (shape, names, parameters)."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """What the router models learn from, already in arrays (see `routeiq_router.ml.train`).

    models: candidate names; costs: USD per 1K tokens per model; embeddings: (n, d) normalised
    prompt vectors; scores: (n, models) outcomes, NaN where unknown; pairs: (p, 3) rows of
    [example, winner model, loser model] indices.
    """

    models: Sequence[str]
    costs: Floats
    embeddings: Vector
    scores: npt.NDArray[np.float32]
    pairs: Indices


def cost_order(costs: Floats, allowed: Indices) -> Indices:
    return allowed[np.lexsort((allowed, costs[allowed]))]


def cheapest(costs: Floats, allowed: Indices) -> int:
    return int(cost_order(costs, allowed)[0])


def best_by(values: Floats, costs: Floats, allowed: Indices) -> int:
    """The allowed index with the highest value; ties (within 1e-9) to the cheaper, then first."""
    top = float(np.max(values[allowed]))
    tied = allowed[values[allowed] >= top - 1e-9]
    return cheapest(costs, tied)


def sigmoid(x: Floats) -> Floats:
    result: Floats = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result


class RouterModel(ABC):
    """A trained router: scores the candidate models of a prompt and chooses with its knob."""

    strategy: ClassVar[str]
    knob_name: ClassVar[str]
    knob_default: ClassVar[float | None]
    needs_embedding: ClassVar[bool] = True

    def __init__(self, models: Sequence[str], costs: Sequence[float] | Floats, knob: float | None) -> None:
        self.models = list(models)
        self.costs = np.asarray(costs, dtype=np.float64)
        if len(self.models) < 2 or len(set(self.models)) != len(self.models):
            raise ValueError("a router needs at least two distinct candidate models")
        if (
            self.costs.shape != (len(self.models),)
            or not np.all(np.isfinite(self.costs))
            or np.any(self.costs < 0)
        ):
            raise ValueError("costs: one finite, non-negative cost per model")
        self.knob = self.check_knob(knob)

    # -- the knob

    @classmethod
    def check_knob(cls, value: float | None) -> float | None:
        """The knob value, validated (None: the default)."""
        if value is None:
            return cls.knob_default
        if not math.isfinite(value):
            raise ValueError(f"{cls.knob_name} must be a finite number")
        return float(value)

    def with_knob(self: R, value: float | None) -> R:
        """A copy that chooses with another knob value (the model itself is shared)."""
        clone = copy.copy(self)
        clone.knob = self.check_knob(value)
        return clone

    # -- scoring and choosing

    @abstractmethod
    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        """(count, models) scores; embeddings (count, d), or None for prompt-independent models."""

    def scores(self, embedding: Vector | None) -> Floats:
        """One score per candidate model, in `models` order (meaning: see the module table)."""
        batch = None if embedding is None else np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        row: Floats = self.scores_batch(batch, 1)[0]
        return row

    @abstractmethod
    def select(self, scores: Floats, allowed: Indices) -> int:
        """The chosen index among `allowed` (non-empty) given one prompt's scores, with the knob."""

    def choose_batch(self, embeddings: Vector | None, count: int, allowed: Indices | None = None) -> Indices:
        """The chosen model index per prompt (evaluation)."""
        allowed = np.arange(len(self.models)) if allowed is None else allowed
        scores = self.scores_batch(embeddings, count)
        return np.array([self.select(row, allowed) for row in scores], dtype=np.intp)

    # -- persistence

    def parameters(self) -> dict[str, Any]:
        """What goes into the manifest's `parameters` (with the strategy's own hyperparameters)."""
        return {
            "costs": {model: float(cost) for model, cost in zip(self.models, self.costs, strict=True)},
            "knobName": self.knob_name,
            "knob": self.knob,
            **self._hyperparameters(),
        }

    def _hyperparameters(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def to_files(self) -> dict[str, bytes]:
        """The payload files (safe formats only)."""

    @classmethod
    def from_files(
        cls: type[R], files: Mapping[str, bytes], manifest: Manifest, *, knob: float | None = None
    ) -> R:
        """The model from its payload bytes and manifest (knob: override the manifest's)."""
        return cls.from_reader(FilesReader(files), manifest, knob=knob)

    @classmethod
    def from_reader(
        cls: type[R], reader: PayloadReader, manifest: Manifest, *, knob: float | None = None
    ) -> R:
        if manifest.strategy != cls.strategy:
            raise ModelFormatError(
                f"manifest.json: strategy is {manifest.strategy!r}, expected {cls.strategy!r}"
            )
        if cls.needs_embedding and manifest.embedding is None:
            raise ModelFormatError(f"manifest.json: embedding: required by the {cls.strategy} strategy")
        parameters = manifest.parameters
        raw_costs = parameters.get("costs")
        if not isinstance(raw_costs, dict) or set(raw_costs) != set(manifest.candidates):
            raise ModelFormatError("manifest.json: parameters.costs: expected one cost per candidate model")
        try:
            costs = [float(raw_costs[model]) for model in manifest.candidates]
            if knob is None:
                stored = parameters.get("knob")
                knob = None if stored is None else float(stored)
            model = cls._load(reader, manifest, costs, knob)
        except (TypeError, ValueError, KeyError) as error:
            if isinstance(error, ArtifactError):
                raise
            raise ModelFormatError(f"{cls.strategy} artifact: {type(error).__name__}: {error}") from None
        return model

    @classmethod
    @abstractmethod
    def _load(
        cls: type[R], reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> R: ...

    @staticmethod
    def _dimension(manifest: Manifest) -> int:
        assert manifest.embedding is not None
        return manifest.embedding.dimension


def shape_error(name: str, array: npt.NDArray[Any], expected: str) -> ModelFormatError:
    return ModelFormatError(f"{name}: expected shape {expected}, got {array.shape} {array.dtype}")


class UtilityRouter(RouterModel):
    """Chooses the allowed model with the highest score minus `cost_weight` times its cost relative
    to the most expensive candidate (knn, mlp, svm)."""

    knob_name: ClassVar[str] = "cost_weight"
    knob_default: ClassVar[float | None] = 0.0

    @classmethod
    def check_knob(cls, value: float | None) -> float | None:
        knob = super().check_knob(value)
        if knob is None or knob < 0:
            raise ValueError("cost_weight must be >= 0")
        return knob

    def select(self, scores: Floats, allowed: Indices) -> int:
        top = float(np.max(self.costs))
        relative = self.costs / top if top > 0 else np.zeros_like(self.costs)
        assert self.knob is not None
        return best_by(scores - self.knob * relative, self.costs, allowed)


# ---- files -------------------------------------------------------------------------------


def npz_bytes(**arrays: npt.NDArray[Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def json_bytes(document: object) -> bytes:
    import json

    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
