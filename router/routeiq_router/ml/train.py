"""Training a router model from JSONL outcomes, its held-out evaluation, and the artifact.

    routeiq train --strategy knn --data prompts.jsonl --out ./knn-v1 --cost gpt-4o=0.00625 ...

1. Read and check the data (`routeiq_router.ml.data`); the candidates are every model with an
   outcome in it, sorted by name.
2. Split it with a seeded shuffle: `holdout` (0.2) of the examples are held out.
3. Embed every prompt (not for ELO) with the embedder (`--embedder torch|onnx|static`): torch
   runs the embedding model (`--embedding-model`, default the bundled all-MiniLM-L6-v2); onnx and
   static read an embedder directory (`--embedder-path`, built by `routeiq embedder build`),
   whose files the artifact then holds.
4. Fit the strategy's model on the training split only, and evaluate it on the held-out split.
   The artifact holds that model, so its metrics describe exactly what is deployed.
5. Write the artifact: payload, manifest with the strategy, candidates, costs and knob
   (parameters), the embedding model, its dimension and the embedder (kind, and the sha256 of
   an onnx/static embedder's manifest), the training data's sha256 and
   example count, and the metrics.

Held-out metrics (over held-out examples with explicit scores for every candidate):
`router_score` (mean score of the routed model), `random_score` (expected score of a uniformly
random candidate: the mean of the row), `oracle_score` (the best candidate per prompt),
`best_single_score` (the single model with the best held-out mean), the same four as `*_cost`
(USD per 1K tokens of the chosen model), `router_share:<model>` (share of prompts routed to
each model), and the counts `train_examples`, `heldout_examples`, `heldout_scored_examples`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from routeiq_router.artifacts.manifest import (
    ArtifactError,
    EmbedderRef,
    EmbeddingInfo,
    Manifest,
    TrainingData,
    sha256_hex,
    write_artifact,
)
from routeiq_router.artifacts.verify import VerifiedEmbedder, read_embedder
from routeiq_router.ml.data import (
    Example,
    example_preferences,
    model_names,
    read_jsonl,
    score_matrix,
    split_indices,
)
from routeiq_router.ml.embedders import (
    KINDS,
    artifact_files,
    cached_embedder,
    check_embedder,
    embedder_from_verified,
    embedder_ref,
)
from routeiq_router.ml.embeddings import Embedder, SentenceTransformerEmbedder, embedding_probe
from routeiq_router.ml.models import ROUTER_MODELS, RouterModel, TrainingSet
from routeiq_router.ml.models.base import best_by

__all__ = [
    "STRATEGIES",
    "TrainingError",
    "TrainingResult",
    "evaluate",
    "fit_model",
    "train",
    "train_artifact",
    "training_set",
]

STRATEGIES = tuple(ROUTER_MODELS)


class TrainingError(ValueError):
    """Training cannot proceed: bad options, or data a strategy cannot learn from."""


def training_set(
    examples: Sequence[Example],
    embeddings: npt.NDArray[np.float32] | None,
    models: Sequence[str],
    costs: Mapping[str, float],
) -> TrainingSet:
    """The arrays a router model learns from (outcomes derived as `routeiq_router.ml.data` says)."""
    column = {model: index for index, model in enumerate(models)}
    pairs = [
        (row, column[winner], column[loser])
        for row, example in enumerate(examples)
        for winner, loser in example_preferences(example)
        if winner in column and loser in column
    ]
    return TrainingSet(
        models=list(models),
        costs=np.array([float(costs.get(model, 0.0)) for model in models]),
        embeddings=(embeddings if embeddings is not None else np.zeros((len(examples), 0), dtype=np.float32)),
        scores=score_matrix(examples, models),
        pairs=np.array(pairs, dtype=np.intp).reshape(-1, 3),
    )


def fit_model(strategy: str, data: TrainingSet, *, knob: float | None = None, seed: int = 0) -> RouterModel:
    try:
        cls = ROUTER_MODELS[strategy]
    except KeyError:
        raise TrainingError(f"unknown strategy {strategy!r}; trainable: {', '.join(STRATEGIES)}") from None
    fit: Callable[..., RouterModel] = cls.fit  # type: ignore[attr-defined]
    try:
        return fit(data, knob=knob, seed=seed)
    except ValueError as error:
        raise TrainingError(f"{strategy}: {error}") from None


def evaluate(
    model: RouterModel, examples: Sequence[Example], embeddings: npt.NDArray[np.float32] | None
) -> dict[str, float]:
    """Held-out metrics (see the module docstring); empty without fully scored examples."""
    scores = score_matrix(examples, model.models, derive=False).astype(np.float64)
    rows = np.flatnonzero(~np.isnan(scores).any(axis=1))
    if len(rows) == 0:
        return {}
    scores = scores[rows]
    vectors = None if embeddings is None or not model.needs_embedding else embeddings[rows]
    chosen = model.choose_batch(vectors, len(rows))
    everything = np.arange(len(model.models))
    best = np.array([best_by(row, model.costs, everything) for row in scores])
    means = scores.mean(axis=0)
    single = best_by(means, model.costs, everything)
    taken = np.arange(len(rows))
    metrics = {
        "heldout_scored_examples": float(len(rows)),
        "router_score": float(scores[taken, chosen].mean()),
        "random_score": float(scores.mean()),
        "oracle_score": float(scores[taken, best].mean()),
        "best_single_score": float(means[single]),
        "router_cost": float(model.costs[chosen].mean()),
        "random_cost": float(model.costs.mean()),
        "oracle_cost": float(model.costs[best].mean()),
        "best_single_cost": float(model.costs[single]),
    }
    shares = np.bincount(chosen, minlength=len(model.models)) / len(rows)
    for name, share in zip(model.models, shares, strict=True):
        metrics[f"router_share:{name}"] = float(share)
    return {name: round(value, 6) for name, value in metrics.items()}


@dataclass(frozen=True, slots=True)
class TrainingResult:
    model: RouterModel
    metrics: dict[str, float]
    train_rows: npt.NDArray[np.intp]
    heldout_rows: npt.NDArray[np.intp]


def train(
    strategy: str,
    examples: Sequence[Example],
    embeddings: npt.NDArray[np.float32] | None,
    costs: Mapping[str, float],
    *,
    holdout: float = 0.2,
    seed: int = 0,
    knob: float | None = None,
) -> TrainingResult:
    """Split, fit on the training split, evaluate on the held-out one. `embeddings`: one row per
    example (None only for ELO)."""
    if strategy not in ROUTER_MODELS:
        raise TrainingError(f"unknown strategy {strategy!r}; trainable: {', '.join(STRATEGIES)}")
    needs_embedding = ROUTER_MODELS[strategy].needs_embedding
    if needs_embedding and (embeddings is None or len(embeddings) != len(examples)):
        raise TrainingError(f"{strategy}: needs one prompt embedding per example")
    models = model_names(examples)
    if len(models) < 2:
        raise TrainingError(f"the data has outcomes for {len(models)} model(s); routing needs at least two")
    unknown = sorted(set(costs) - set(models))
    if unknown:
        raise TrainingError(
            f"--cost {unknown[0]}: no outcome for this model in the data (models: {', '.join(models)})"
        )
    try:
        train_rows, heldout_rows = split_indices(len(examples), holdout, seed)
    except ValueError as error:
        raise TrainingError(f"--holdout: {error}") from None
    if len(train_rows) < 2:
        raise TrainingError(f"{len(train_rows)} training example(s) after the held-out split: too few")
    with threadpool_limits(limits=1, user_api="blas"):
        # one BLAS thread: these matrices are small, and OpenBLAS's threads slow training down by
        # an order of magnitude as soon as another process competes for the CPUs
        return _fit_and_evaluate(
            strategy, examples, embeddings, costs, models, train_rows, heldout_rows, seed, knob
        )


def _fit_and_evaluate(
    strategy: str,
    examples: Sequence[Example],
    embeddings: npt.NDArray[np.float32] | None,
    costs: Mapping[str, float],
    models: list[str],
    train_rows: npt.NDArray[np.intp],
    heldout_rows: npt.NDArray[np.intp],
    seed: int,
    knob: float | None,
) -> TrainingResult:
    needs_embedding = ROUTER_MODELS[strategy].needs_embedding
    started = time.perf_counter()
    data = training_set(
        [examples[i] for i in train_rows],
        None if embeddings is None else embeddings[train_rows],
        models,
        costs,
    )
    model = fit_model(strategy, data, knob=knob, seed=seed)
    seconds = time.perf_counter() - started
    metrics = {"train_examples": float(len(train_rows)), "heldout_examples": float(len(heldout_rows))}
    if len(heldout_rows):
        vectors = None if embeddings is None or not needs_embedding else embeddings[heldout_rows]
        metrics.update(evaluate(model, [examples[i] for i in heldout_rows], vectors))
    metrics["training_seconds"] = round(seconds, 3)
    return TrainingResult(model=model, metrics=metrics, train_rows=train_rows, heldout_rows=heldout_rows)


def train_artifact(
    strategy: str,
    data_path: Path,
    out: Path,
    *,
    costs: Mapping[str, float],
    holdout: float = 0.2,
    seed: int = 0,
    knob: float | None = None,
    embedding_model: str | None = None,
    embedder: Embedder | None = None,
    threads: int | None = None,
    embedder_kind: str = "torch",
    embedder_path: Path | None = None,
    embedder_public_key: bytes | None = None,
) -> tuple[Manifest, TrainingResult]:
    """`routeiq train`: read, embed, fit, evaluate and write the artifact into `out`.

    The embedder: `embedder_kind` — torch (`embedding_model`, default the bundled
    all-MiniLM-L6-v2), or onnx / static from `embedder_path` (an embedder directory, verified, and
    with `embedder_public_key` its signature too; without a path one is built from
    `embedding_model` into a temporary directory). An onnx or static embedder's files go into the
    artifact and its manifest names it (`embedding.embedder`). `embedder`, when given, embeds
    instead (e.g. a CachedEmbedder shared by several trainings); for onnx and static it must be
    the embedder of `embedder_path`."""
    examples, raw = read_jsonl(data_path)
    if strategy not in ROUTER_MODELS:
        raise TrainingError(f"unknown strategy {strategy!r}; trainable: {', '.join(STRATEGIES)}")
    if embedder_kind not in KINDS:
        raise TrainingError(f"--embedder {embedder_kind!r}: one of {', '.join(KINDS)}")
    if embedder_path is not None and embedder_kind == "torch":
        raise TrainingError("--embedder-path names an onnx or static embedder; give --embedder onnx|static")
    needs_embedding = ROUTER_MODELS[strategy].needs_embedding
    embeddings: npt.NDArray[np.float32] | None = None
    embedding: EmbeddingInfo | None = None
    extra: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if needs_embedding:
        verified = None
        if embedder_kind != "torch":
            verified = _built_embedder(embedder_kind, embedder_path, embedding_model, embedder_public_key)
            files.update(artifact_files(verified))
        if embedder is None:
            embedder = (
                SentenceTransformerEmbedder(embedding_model, threads=threads)
                if verified is None
                else embedder_from_verified(verified, threads=threads)
            )
        if verified is not None:
            try:
                check_embedder(
                    embedder,
                    EmbedderRef(kind=verified.manifest.kind, digest=verified.digest),
                    verified.manifest.model,
                )
            except ArtifactError as error:
                raise TrainingError(
                    f"--embedder-path {embedder_path}: the given embedder is not it: {error}"
                ) from None
        embeddings = embedder.embed([example.prompt for example in examples])
        embedding = EmbeddingInfo(
            model=embedder.model_id,
            dimension=embedder.dimension,
            normalized=True,
            embedder=embedder_ref(embedder),
        )
        extra["embeddingProbe"] = embedding_probe(embedder)
    result = train(strategy, examples, embeddings, costs, holdout=holdout, seed=seed, knob=knob)
    manifest = write_artifact(
        out,
        strategy=strategy,
        files={**result.model.to_files(), **files},
        candidates=result.model.models,
        training_data=TrainingData(sha256=sha256_hex(raw), examples=len(examples)),
        embedding=embedding,
        metrics=result.metrics,
        parameters={**result.model.parameters(), **extra, "seed": seed, "holdout": holdout},
    )
    return manifest, result


def _built_embedder(
    kind: str, path: Path | None, source: str | None, public_key: bytes | None
) -> VerifiedEmbedder:
    """The onnx or static embedder at `path`, verified (and its kind checked); without a path,
    the one built from `source`, once, and kept in the user's cache (`cached_embedder`)."""
    if path is None:
        return cached_embedder(kind, source=source)  # type: ignore[arg-type]
    verified = read_embedder(path, public_key=public_key)
    if verified.manifest.kind != kind:
        raise TrainingError(f"--embedder {kind}: {path} holds a {verified.manifest.kind} embedder")
    return verified
