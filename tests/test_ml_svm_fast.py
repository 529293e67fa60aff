"""The SVM router's fast path computes exactly scikit-learn's calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.svm import SVC  # type: ignore[import-untyped]

from routeiq_router.ml.models.classifiers import _FastCalibratedSvc


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_fast_path_equals_predict_proba(classes: int) -> None:
    rng = np.random.default_rng(classes)
    centres = rng.standard_normal((classes, 16))
    labels = np.repeat(np.arange(classes), 30)
    rows = centres[labels] + 0.8 * rng.standard_normal((len(labels), 16))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    estimator = CalibratedClassifierCV(
        SVC(kernel="rbf", gamma="scale"), method="sigmoid", cv=3, ensemble=False
    )
    estimator.fit(rows, labels)
    fast = _FastCalibratedSvc.build(estimator)
    assert fast is not None, "the fast path agrees with scikit-learn on the probe rows"
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(
        fast.predict_proba(queries), estimator.predict_proba(queries), rtol=0, atol=1e-12
    )


def test_when_the_fast_path_disagrees_scikit_learn_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((60, 8))
    labels = np.repeat(np.arange(3), 20)
    estimator = CalibratedClassifierCV(SVC(kernel="rbf"), method="sigmoid", cv=3, ensemble=False).fit(
        rows, labels
    )
    assert _FastCalibratedSvc.build(estimator) is not None
    # as after a scikit-learn upgrade that changed its internals: the results differ
    monkeypatch.setattr(
        _FastCalibratedSvc, "predict_proba", lambda self, embeddings: np.zeros((len(embeddings), 3))
    )
    assert _FastCalibratedSvc.build(estimator) is None
