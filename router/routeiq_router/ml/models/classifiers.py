"""MLP and SVM: scikit-learn classifiers predicting which candidate model is the best for a
prompt, chosen by quality minus weighted cost (see `routeiq_router.ml.models`), saved with skops.
SVM decides through `_FastCalibratedSvc`, scikit-learn's calibrated probabilities without its
per-call input validation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from routeiq_router.artifacts.manifest import Manifest
from routeiq_router.ml.models.base import (
    Floats,
    Indices,
    ModelFormatError,
    TrainingSet,
    UtilityRouter,
    Vector,
    best_by,
)
from routeiq_router.ml.payload import PayloadReader

__all__ = ["MLP_TRUSTED_TYPES", "SVM_TRUSTED_TYPES", "MlpRouter", "SvmRouter"]

# skops types beyond its defaults that our own dumps contain, found once with
# skops.io.get_untrusted_types(data=...) on a trained model (tests/test_ml_models.py re-checks)
MLP_TRUSTED_TYPES: tuple[str, ...] = ()  # the optimizer's state is dropped before saving
SVM_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
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


class _ClassifierRouter(UtilityRouter):
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
