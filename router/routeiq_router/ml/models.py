"""The five router models: what each learns, how it scores the candidate models of a prompt,
how it chooses with its quality/cost knob, and how it is saved into and loaded from an artifact.

Every model knows its candidate model names (the manifest's `candidates`, in that order), their
cost (`parameters.costs`, USD per 1K tokens, from `routeiq train --cost`) and its knob
(`parameters.knob`, named by `parameters.knobName`):

| strategy | scores(prompt)                              | knob        | choice among the allowed models        |
|----------|---------------------------------------------|-------------|----------------------------------------|
| knn      | mean outcome of the k nearest training      | cost_weight | max score - cost_weight * cost / max   |
|          | prompts (cosine), per model                 | (0)         | cost; ties: the cheaper                |
| mlp      | P(model is the best), MLP classifier        | cost_weight | as knn                                 |
| svm      | P(model is the best), calibrated RBF SVC    | cost_weight | as knn                                 |
| elo      | Bradley-Terry rating on the Elo scale,      | max_cost    | the best rated costing <= max_cost     |
|          | the same for every prompt                   | (none)      | (none fits: the cheapest)              |
| mf       | v_m . (W x + b): logit of model m on x      | threshold   | RouteLLM-style escalation, see MF      |
|          |                                             | (0.5)       |                                        |

MF's threshold: the allowed models are ordered by cost (cheapest first, config order on equal
cost). Start with the cheapest. Among the more expensive models, take the one most likely to
beat the current one, P(m beats c | x) = sigmoid(score(m) - score(c)); move to it if that
probability is greater than the threshold, and repeat from there; otherwise stop. With two
models this is exactly RouteLLM's rule (the strong model only if its win probability over
the weak one exceeds the threshold). Raising the threshold can only stop the walk earlier, so
it monotonically moves traffic to cheaper models: 0 always ends on the most expensive model,
1 always stays on the cheapest.
"""

from __future__ import annotations

import copy
import logging
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
    "MLP_TRUSTED_TYPES",
    "ROUTER_MODELS",
    "SVM_TRUSTED_TYPES",
    "EloRouter",
    "KnnRouter",
    "MfRouter",
    "MlpRouter",
    "ModelFormatError",
    "RouterModel",
    "SvmRouter",
    "TrainingSet",
    "model_from_files",
    "model_from_reader",
]

Floats = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float32]
Indices = npt.NDArray[np.intp]
R = TypeVar("R", bound="RouterModel")

# skops types beyond its defaults that our own dumps contain, found once with
# skops.io.get_untrusted_types(data=...) on a trained model (tests/test_ml_models.py re-checks)
MLP_TRUSTED_TYPES: tuple[str, ...] = ()  # the optimizer's state is dropped before saving
SVM_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


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


def _cost_order(costs: Floats, allowed: Indices) -> Indices:
    return allowed[np.lexsort((allowed, costs[allowed]))]


def _cheapest(costs: Floats, allowed: Indices) -> int:
    return int(_cost_order(costs, allowed)[0])


def best_by(values: Floats, costs: Floats, allowed: Indices) -> int:
    """The allowed index with the highest value; ties (within 1e-9) to the cheaper, then first."""
    top = float(np.max(values[allowed]))
    tied = allowed[values[allowed] >= top - 1e-9]
    return _cheapest(costs, tied)


def _sigmoid(x: Floats) -> Floats:
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


def _shape_error(name: str, array: npt.NDArray[Any], expected: str) -> ModelFormatError:
    return ModelFormatError(f"{name}: expected shape {expected}, got {array.shape} {array.dtype}")


# ---- prompt-aware models choosing by predicted quality minus weighted cost ---------------


class _UtilityRouter(RouterModel):
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


class KnnRouter(_UtilityRouter):
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
        return {self.FILE: _npz(embeddings=self.embeddings.astype(np.float16), outcomes=self.outcomes)}

    @classmethod
    def _load(
        cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> KnnRouter:
        arrays = reader.npz(cls.FILE)
        embeddings, outcomes = arrays["embeddings"], arrays["outcomes"]
        dimension = cls._dimension(manifest)
        if embeddings.ndim != 2 or embeddings.shape[1] != dimension or embeddings.dtype.kind != "f":
            raise _shape_error(f"{cls.FILE}: embeddings", embeddings, f"(n, {dimension}) float")
        if outcomes.shape != (embeddings.shape[0], len(manifest.candidates)) or outcomes.dtype.kind != "f":
            raise _shape_error(
                f"{cls.FILE}: outcomes", outcomes, f"({embeddings.shape[0]}, {len(manifest.candidates)})"
            )
        k = int(manifest.parameters.get("k", 10))
        return cls(
            manifest.candidates, costs, knob, embeddings.astype(np.float32), outcomes.astype(np.float32), k=k
        )


def _best_labels(data: TrainingSet) -> tuple[Indices, Indices]:
    """(rows, label) for the training prompts with outcomes for at least two models: the index of
    the best model (ties: the cheaper)."""
    known = ~np.isnan(data.scores)
    rows = np.flatnonzero(known.sum(axis=1) >= 2)
    everything = np.arange(len(data.models))
    labels = np.array(
        [
            best_by(np.nan_to_num(data.scores[row], nan=-np.inf).astype(np.float64), data.costs, everything)
            for row in rows
        ],
        dtype=np.intp,
    )
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "needs training prompts where at least two different models are the best (with outcomes for "
            "two or more models on a prompt); use elo for prompt-independent routing"
        )
    return rows, labels


class _ClassifierRouter(_UtilityRouter):
    """A scikit-learn classifier predicting which model is the best for a prompt."""

    FILE: ClassVar[str]
    TRUSTED: ClassVar[tuple[str, ...]]

    def __init__(
        self, models: Sequence[str], costs: Sequence[float] | Floats, knob: float | None, estimator: Any
    ) -> None:
        super().__init__(models, costs, knob)
        classes = np.asarray(estimator.classes_)
        if classes.dtype.kind not in "iu" or np.any(classes < 0) or np.any(classes >= len(self.models)):
            raise ValueError(f"{self.strategy}: the classifier's classes must be model indices")
        self.estimator = estimator
        self._columns = classes.astype(np.intp)

    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        assert embeddings is not None
        probabilities = np.asarray(self.estimator.predict_proba(embeddings), dtype=np.float64)
        result: Floats = np.zeros((count, len(self.models)), dtype=np.float64)
        result[:, self._columns] = probabilities
        return result

    def to_files(self) -> dict[str, bytes]:
        import skops.io  # type: ignore[import-untyped]

        data: bytes = skops.io.dumps(self.estimator)
        return {self.FILE: data}

    @classmethod
    def _load(cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None) -> Any:
        estimator = reader.skops(cls.FILE, cls.TRUSTED)
        dimension = cls._dimension(manifest)
        if not hasattr(estimator, "predict_proba") or getattr(estimator, "n_features_in_", None) != dimension:
            raise ModelFormatError(f"{cls.FILE}: expected a fitted classifier over {dimension}-d embeddings")
        return cls(manifest.candidates, costs, knob, estimator)


class MlpRouter(_ClassifierRouter):
    """scikit-learn MLPClassifier (one hidden ReLU layer) over the prompt embedding."""

    strategy: ClassVar[str] = "mlp"
    FILE: ClassVar[str] = "mlp.skops"
    TRUSTED: ClassVar[tuple[str, ...]] = MLP_TRUSTED_TYPES

    @classmethod
    def fit(
        cls,
        data: TrainingSet,
        *,
        knob: float | None = None,
        seed: int = 0,
        hidden: int = 128,
        alpha: float = 1e-2,
    ) -> MlpRouter:
        from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

        rows, labels = _best_labels(data)
        estimator = MLPClassifier(
            hidden_layer_sizes=(hidden,),
            alpha=alpha,
            max_iter=300,
            early_stopping=True,
            n_iter_no_change=20,
            random_state=seed,
        )
        estimator.fit(data.embeddings[rows], labels)
        for attribute in ("_optimizer", "_no_improvement_count", "validation_scores_", "loss_curve_"):
            if hasattr(estimator, attribute):  # training state: not needed to predict
                delattr(estimator, attribute)
        return cls(data.models, data.costs, knob, estimator)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"hiddenLayers": list(self.estimator.hidden_layer_sizes), "alpha": self.estimator.alpha}


class SvmRouter(_ClassifierRouter):
    """scikit-learn SVC (RBF kernel) with sigmoid (Platt) calibration of its probabilities."""

    strategy: ClassVar[str] = "svm"
    FILE: ClassVar[str] = "svm.skops"
    TRUSTED: ClassVar[tuple[str, ...]] = SVM_TRUSTED_TYPES

    @classmethod
    def fit(cls, data: TrainingSet, *, knob: float | None = None, seed: int = 0, c: float = 1.0) -> SvmRouter:
        from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
        from sklearn.svm import SVC  # type: ignore[import-untyped]

        rows, labels = _best_labels(data)
        smallest = int(np.min(np.bincount(labels)[np.unique(labels)]))
        if smallest < 2:
            raise ValueError("needs at least two training prompts for each model that is the best somewhere")
        # an int: unshuffled stratified folds (deterministic, and no extra type in the skops file)
        estimator = CalibratedClassifierCV(
            SVC(kernel="rbf", C=c, gamma="scale"), method="sigmoid", cv=min(5, smallest), ensemble=False
        )
        estimator.fit(data.embeddings[rows], labels)
        return cls(data.models, data.costs, knob, estimator)

    def __init__(
        self, models: Sequence[str], costs: Sequence[float] | Floats, knob: float | None, estimator: Any
    ) -> None:
        super().__init__(models, costs, knob, estimator)
        self._fast = _FastCalibratedSvc.build(estimator)

    def scores_batch(self, embeddings: Vector | None, count: int) -> Floats:
        if self._fast is None:
            return super().scores_batch(embeddings, count)
        assert embeddings is not None
        result: Floats = np.zeros((count, len(self.models)), dtype=np.float64)
        result[:, self._columns] = self._fast.predict_proba(embeddings)
        return result

    def _hyperparameters(self) -> dict[str, Any]:
        return {"kernel": "rbf", "C": self.estimator.estimator.C, "calibration": "sigmoid"}


class _FastCalibratedSvc:
    """`CalibratedClassifierCV(SVC, method="sigmoid", ensemble=False).predict_proba` without
    scikit-learn's per-call input validation, which costs ~1.4 ms of a one-row call whose
    arithmetic takes ~0.1 ms: libsvm's decision function on the fitted arrays, the one-vs-rest
    transform and the sigmoid calibrators, exactly as scikit-learn 1.9 computes them. `build`
    compares it with `predict_proba` on probe rows and returns None (use scikit-learn) on any
    difference, so a scikit-learn upgrade can slow the decision down but never change it.
    """

    def __init__(self, estimator: Any) -> None:
        (calibrated,) = estimator.calibrated_classifiers_
        self.svc = calibrated.estimator
        self.classes = len(calibrated.classes)
        positions = {label: index for index, label in enumerate(calibrated.classes)}
        self.targets = [positions[label] for label in self.svc.classes_]
        self.calibrators = [(float(c.a_), float(c.b_)) for c in calibrated.calibrators]

    @classmethod
    def build(cls, estimator: Any) -> _FastCalibratedSvc | None:
        try:
            fast = cls(estimator)
            probe = (
                np.random.default_rng(0)
                .standard_normal((8, int(estimator.n_features_in_)))
                .astype(np.float32)
            )
            probe /= np.linalg.norm(probe, axis=1, keepdims=True)
            expected = np.asarray(estimator.predict_proba(probe), dtype=np.float64)
            if np.allclose(fast.predict_proba(probe), expected, rtol=0, atol=1e-12):
                return fast
        except Exception:  # a scikit-learn whose internals differ: keep its own path
            logging.getLogger("routeiq.ml").debug("fast SVC path unavailable", exc_info=True)
        return None

    def predict_proba(self, embeddings: Vector) -> Floats:
        from scipy.special import expit
        from sklearn.svm import _libsvm
        from sklearn.utils.multiclass import _ovr_decision_function  # type: ignore[import-untyped]

        svc = self.svc
        rows = np.ascontiguousarray(embeddings, dtype=np.float64)
        decision = _libsvm.decision_function(
            rows,
            svc.support_,
            svc.support_vectors_,
            svc._n_support,
            svc._dual_coef_,
            svc._intercept_,
            svc._probA,
            svc._probB,
            svm_type=0,  # c_svc
            kernel=svc.kernel,
            degree=svc.degree,
            cache_size=svc.cache_size,
            coef0=svc.coef0,
            gamma=svc._gamma,
        )
        if len(svc.classes_) == 2:
            decision = -decision.reshape(-1, 1)  # libsvm's binary sign is the opposite of sklearn's
        else:
            decision = _ovr_decision_function(decision < 0, -decision, len(svc.classes_))
        proba = np.zeros((rows.shape[0], self.classes), dtype=np.float64)
        for column, (target, (a, b)) in enumerate(zip(self.targets, self.calibrators, strict=False)):
            index = target + 1 if self.classes == 2 else target
            proba[:, index] = expit(-(a * decision[:, column] + b))
        if self.classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            total = proba.sum(axis=1, keepdims=True)
            proba = np.divide(proba, total, out=np.full_like(proba, 1 / self.classes), where=total != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba


# ---- ELO ---------------------------------------------------------------------------------

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
            pull = wins * _sigmoid(-margin) / scale  # d loss / d margin = -pull
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
            return _cheapest(self.costs, allowed)
        return best_by(scores, self.costs, affordable)

    def to_files(self) -> dict[str, bytes]:
        ratings = {
            model: round(float(rating), 6) for model, rating in zip(self.models, self.ratings, strict=True)
        }
        return {self.FILE: _json({"ratings": ratings, "scale": "elo", "base": ELO_BASE})}

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


# ---- MF ----------------------------------------------------------------------------------


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
            g = -_sigmoid(-margin) / scale  # d loss / d margin
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
        order = _cost_order(self.costs, allowed)
        position = 0
        while position < len(order) - 1:
            later = order[position + 1 :]
            probabilities = _sigmoid(scores[later] - scores[order[position]])
            best = int(np.argmax(probabilities))  # ties: the cheaper
            if probabilities[best] <= self.knob:
                break
            position += 1 + best
        return int(order[position])

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rank": int(self.projection.shape[0])}

    def to_files(self) -> dict[str, bytes]:
        return {self.FILE: _npz(model_vectors=self.model_vectors, projection=self.projection, bias=self.bias)}

    @classmethod
    def _load(
        cls, reader: PayloadReader, manifest: Manifest, costs: list[float], knob: float | None
    ) -> MfRouter:
        arrays = reader.npz(cls.FILE)
        vectors, projection, bias = arrays["model_vectors"], arrays["projection"], arrays["bias"]
        dimension = cls._dimension(manifest)
        if projection.ndim != 2 or projection.shape[1] != dimension or projection.dtype.kind != "f":
            raise _shape_error(f"{cls.FILE}: projection", projection, f"(r, {dimension}) float")
        rank = projection.shape[0]
        if vectors.shape != (len(manifest.candidates), rank) or vectors.dtype.kind != "f":
            raise _shape_error(
                f"{cls.FILE}: model_vectors", vectors, f"({len(manifest.candidates)}, {rank}) float"
            )
        if bias.shape != (rank,) or bias.dtype.kind != "f":
            raise _shape_error(f"{cls.FILE}: bias", bias, f"({rank},) float")
        return cls(
            manifest.candidates,
            costs,
            knob,
            vectors.astype(np.float64),
            projection.astype(np.float32),
            bias.astype(np.float64),
        )


# ---- files -------------------------------------------------------------------------------


def _npz(**arrays: npt.NDArray[Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _json(document: object) -> bytes:
    import json

    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


ROUTER_MODELS: dict[str, type[RouterModel]] = {
    model.strategy: model for model in (KnnRouter, MlpRouter, SvmRouter, EloRouter, MfRouter)
}


def model_from_reader(reader: PayloadReader, manifest: Manifest, *, knob: float | None = None) -> RouterModel:
    """The router model of an artifact, by its manifest's strategy."""
    try:
        cls = ROUTER_MODELS[manifest.strategy]
    except KeyError:
        raise ModelFormatError(
            f"manifest.json: strategy {manifest.strategy!r} has no trained model (known: {', '.join(ROUTER_MODELS)})"
        ) from None
    return cls.from_reader(reader, manifest, knob=knob)


def model_from_files(
    files: Mapping[str, bytes], manifest: Manifest, *, knob: float | None = None
) -> RouterModel:
    """`model_from_reader` over the payload files' bytes."""
    return model_from_reader(FilesReader(files), manifest, knob=knob)
