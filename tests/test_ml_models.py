"""The five router models trained on the example data's training split, judged on its held-out
split, their knobs, and their round trip through an artifact."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import skops.io  # type: ignore[import-untyped]

from routeiq_router.artifacts.manifest import ArtifactError, EmbeddingInfo, TrainingData, write_artifact
from routeiq_router.ml.data import score_matrix
from routeiq_router.ml.models import (
    ROUTER_MODELS,
    EloRouter,
    KnnRouter,
    MfRouter,
    ModelFormatError,
    RouterModel,
    model_from_files,
)
from routeiq_router.ml.payload import FilesReader, read_directory
from routeiq_router.ml.train import TrainingResult
from tests.test_ml_support import CHEAP, COSTS, SPECIALIST, STRONG, dataset, trained

PROMPT_AWARE = ("knn", "mlp", "svm", "mf")


def heldout(result: TrainingResult) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(embeddings, scores) of the held-out examples with a score for every model."""
    data = dataset()
    examples = [data.examples[i] for i in result.heldout_rows]
    scores = score_matrix(examples, result.model.models, derive=False).astype(np.float64)
    complete = ~np.isnan(scores).any(axis=1)
    return data.embeddings[result.heldout_rows][complete], scores[complete]


def routed_score(
    model: RouterModel, embeddings: npt.NDArray[np.float32], scores: npt.NDArray[np.float64]
) -> float:
    chosen = model.choose_batch(embeddings if model.needs_embedding else None, len(scores))
    return float(scores[np.arange(len(scores)), chosen].mean())


@pytest.mark.parametrize("strategy", list(ROUTER_MODELS))
def test_router_beats_random_on_the_heldout_split(strategy: str) -> None:
    result = trained(strategy)
    embeddings, scores = heldout(result)
    assert len(scores) > 150
    router = routed_score(result.model, embeddings, scores)
    random_baseline = float(scores.mean())  # the expected score of a uniformly random candidate
    best_single = float(scores.mean(axis=0).max())
    assert router > random_baseline + 0.04, (strategy, router, random_baseline)
    if strategy in PROMPT_AWARE:  # the best model depends on the prompt, and these see it
        assert router > best_single + 0.02, (strategy, router, best_single)
    assert router < float(scores.max(axis=1).mean()), "never above the oracle"
    metrics = result.metrics
    assert metrics["router_score"] == pytest.approx(router, abs=1e-6)
    assert metrics["random_score"] == pytest.approx(random_baseline, abs=1e-6)
    assert metrics["best_single_score"] == pytest.approx(best_single, abs=1e-6)
    assert metrics["train_examples"] == 800
    assert metrics["heldout_examples"] == 200


def test_elo_picks_the_best_rated_model_within_the_budget() -> None:
    model = trained("elo").model
    assert isinstance(model, EloRouter)
    ratings = dict(zip(model.models, model.ratings, strict=True))
    assert ratings[CHEAP] < min(ratings[STRONG], ratings[SPECIALIST]), "the synthetic data's weakest model"
    everything = np.arange(3)
    best = max(ratings, key=lambda name: ratings[name])

    def pick(max_cost: float | None, allowed: npt.NDArray[np.intp] = everything) -> str:
        elo = model.with_knob(max_cost)
        return elo.models[elo.select(elo.scores(None), allowed)]

    assert pick(None) == best
    for budget in (0.0001, COSTS[CHEAP], 0.005, COSTS[STRONG], 0.008, COSTS[SPECIALIST], 1.0):
        affordable = [name for name in model.models if COSTS[name] <= budget]
        expected = max(affordable, key=lambda name: ratings[name]) if affordable else CHEAP
        assert pick(budget) == expected, budget
    without_best = np.array([i for i, name in enumerate(model.models) if name != best])
    assert pick(None, without_best) == max((n for n in ratings if n != best), key=lambda n: ratings[n])
    assert model.scores(None).tolist() == model.ratings.tolist(), "prompt-independent"


def test_mf_threshold_moves_traffic_from_the_strong_to_the_cheap_model_monotonically() -> None:
    result = trained("mf")
    model = result.model
    assert isinstance(model, MfRouter)
    assert model.knob == 0.5
    embeddings, scores = heldout(result)
    cheap, strongest = model.models.index(CHEAP), model.models.index(SPECIALIST)  # cheapest, most expensive
    shares_cheap, shares_strong, costs, quality = [], [], [], []
    for threshold in np.linspace(0.0, 1.0, 11):
        chosen = model.with_knob(float(threshold)).choose_batch(embeddings, len(embeddings))
        shares_cheap.append(float(np.mean(chosen == cheap)))
        shares_strong.append(float(np.mean(chosen == strongest)))
        costs.append(float(model.costs[chosen].mean()))
        quality.append(float(scores[np.arange(len(scores)), chosen].mean()))
    assert shares_cheap == sorted(shares_cheap)
    assert shares_strong == sorted(shares_strong, reverse=True)
    assert costs == sorted(costs, reverse=True)
    assert shares_strong[0] == 1.0, "threshold 0: always escalate"
    assert shares_cheap[-1] == 1.0, "threshold 1: never"
    assert 0.0 < shares_cheap[5] < 1.0
    assert quality[5] > quality[-1] + 0.05


def test_two_model_mf_is_routellms_rule() -> None:
    model = trained("mf").model
    embeddings, _ = heldout(trained("mf"))
    pair = np.array([model.models.index(CHEAP), model.models.index(STRONG)])
    for threshold in (0.2, 0.5, 0.8):
        router = model.with_knob(threshold)
        for vector in embeddings[:40]:
            row = router.scores(vector)
            win = 1.0 / (1.0 + np.exp(-(row[pair[1]] - row[pair[0]])))
            expected = pair[1] if win > threshold else pair[0]
            assert router.select(row, pair) == expected


def test_cost_weight_moves_knn_traffic_to_the_cheap_model() -> None:
    result = trained("knn")
    embeddings, _ = heldout(result)
    cheap = result.model.models.index(CHEAP)
    shares, costs = [], []
    for weight in (0.0, 0.1, 0.3, 1.0, 10.0):
        chosen = result.model.with_knob(weight).choose_batch(embeddings, len(embeddings))
        shares.append(float(np.mean(chosen == cheap)))
        costs.append(float(result.model.costs[chosen].mean()))
    assert shares == sorted(shares)
    assert costs == sorted(costs, reverse=True)
    assert shares[0] < 0.2
    assert shares[-1] == 1.0
    with pytest.raises(ValueError, match="cost_weight must be >= 0"):
        result.model.with_knob(-1.0)


def test_knn_ties_go_to_the_cheaper_model() -> None:
    model = KnnRouter(
        ["expensive", "cheap"],
        [2.0, 1.0],
        None,
        np.eye(2, dtype=np.float32),
        np.array([[0.5, 0.5], [0.5, 0.5]], dtype=np.float32),
        k=2,
    )
    assert (
        model.models[model.select(model.scores(np.array([1.0, 0.0], dtype=np.float32)), np.arange(2))]
        == "cheap"
    )


@pytest.mark.parametrize("strategy", list(ROUTER_MODELS))
def test_artifact_round_trip_decides_identically(strategy: str, tmp_path: Path) -> None:
    result = trained(strategy)
    model = result.model
    embedding = EmbeddingInfo(model="sentence-transformers/all-MiniLM-L6-v2", dimension=384)
    write_artifact(
        tmp_path / "artifact",
        strategy=strategy,
        files=model.to_files(),
        candidates=model.models,
        training_data=TrainingData(sha256="0" * 64, examples=1000),
        embedding=embedding if model.needs_embedding else None,
        metrics=result.metrics,
        parameters=model.parameters(),
    )
    files, manifest = read_directory(tmp_path / "artifact")
    loaded = model_from_files(files, manifest)
    assert type(loaded) is type(model)
    assert loaded.models == model.models
    assert loaded.knob == model.knob
    assert loaded.costs.tolist() == [COSTS[name] for name in model.models]
    embeddings = dataset().embeddings[result.heldout_rows]
    vectors = embeddings if model.needs_embedding else None
    assert np.array_equal(
        loaded.scores_batch(vectors, len(embeddings)), model.scores_batch(vectors, len(embeddings))
    )
    assert np.array_equal(
        loaded.choose_batch(vectors, len(embeddings)), model.choose_batch(vectors, len(embeddings))
    )
    assert model_from_files(files, manifest, knob=model.with_knob(0.9).knob).knob == 0.9 or strategy == "elo"


@pytest.mark.parametrize("strategy", ["mlp", "svm"])
def test_skops_payloads_need_only_the_listed_trusted_types(strategy: str) -> None:
    model = trained(strategy).model
    cls = ROUTER_MODELS[strategy]
    ((_name, data),) = model.to_files().items()
    assert set(skops.io.get_untrusted_types(data=data)) <= set(cls.TRUSTED)  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unsafe_payloads_are_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, scores=np.array([{"a": 1}], dtype=object))  # needs pickle to load
    with pytest.raises(ArtifactError, match=r"knn\.npz: array 'scores' holds Python objects"):
        FilesReader({"knn.npz": buffer.getvalue()}).npz("knn.npz")
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

    fitted = MLPClassifier(max_iter=5).fit(np.eye(4), [0, 1, 0, 1])  # keeps its optimizer: untrusted
    with pytest.raises(ArtifactError, match=r"mlp\.skops: untrusted types .*AdamOptimizer"):
        FilesReader({"mlp.skops": skops.io.dumps(fitted)}).skops("mlp.skops", ())
    with pytest.raises(ArtifactError, match=r"model\.pkl: not a \.npz file"):
        FilesReader({"model.pkl": b""}).npz("model.pkl")


def test_a_payload_that_does_not_fit_its_manifest_is_refused(tmp_path: Path) -> None:
    model = trained("knn").model
    common = {
        "candidates": model.models,
        "training_data": TrainingData(sha256="0" * 64, examples=1),
        "parameters": model.parameters(),
    }
    write_artifact(
        tmp_path / "wrong-dimension",
        strategy="knn",
        files=model.to_files(),
        embedding=EmbeddingInfo(model="other", dimension=768),
        **common,  # type: ignore[arg-type]
    )
    files, manifest = read_directory(tmp_path / "wrong-dimension")
    with pytest.raises(ModelFormatError, match=r"knn.npz: embeddings: expected shape \(n, 768\)"):
        model_from_files(files, manifest)
    with pytest.raises(ModelFormatError, match="strategy is 'knn', expected 'mf'"):
        MfRouter.from_files(files, manifest)
    bad_costs = manifest.model_copy(update={"parameters": {**manifest.parameters, "costs": {}}})
    with pytest.raises(ModelFormatError, match=r"parameters\.costs"):
        model_from_files(files, bad_costs)
    unknown = manifest.model_copy(update={"strategy": "round-robin"})
    with pytest.raises(ModelFormatError, match="has no trained model"):
        model_from_files(files, unknown)
