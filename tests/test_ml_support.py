"""Shared pieces of the ML tests (no tests here): the example dataset embedded once per test
process, the models trained on its training split once each, and small fakes."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from routeiq_router.artifacts.manifest import (
    EmbeddingInfo,
    Manifest,
    TrainingData,
    sha256_hex,
    write_artifact,
)
from routeiq_router.ml.data import Example, read_jsonl
from routeiq_router.ml.embeddings import SentenceTransformerEmbedder, embedding_probe
from routeiq_router.ml.payload import read_directory
from routeiq_router.ml.train import TrainingResult, train

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "examples" / "routing-data"
DATA = DATA_DIR / "prompts.jsonl"
STRONG, CHEAP, SPECIALIST = "gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022"
COSTS = {STRONG: 0.00625, CHEAP: 0.000375, SPECIALIST: 0.009}  # as examples/routing-data/README.md
SEED = 0


@dataclass(frozen=True)
class Dataset:
    examples: list[Example]
    raw: bytes
    embeddings: npt.NDArray[np.float32]


@functools.cache
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(threads=1)  # robust when other processes compete for CPUs


@functools.cache
def dataset() -> Dataset:
    examples, raw = read_jsonl(DATA)
    return Dataset(examples, raw, embedder().embed([example.prompt for example in examples]))


@functools.cache
def trained(strategy: str) -> TrainingResult:
    data = dataset()
    return train(strategy, data.examples, data.embeddings, COSTS, holdout=0.2, seed=SEED)


@functools.cache
def artifact(strategy: str) -> tuple[dict[str, bytes], Manifest]:
    """The files and manifest of an artifact of `trained(strategy)`, as `routeiq train` writes it."""
    result, model = trained(strategy), trained(strategy).model
    parameters = model.parameters()
    embedding = None
    if model.needs_embedding:
        embedding = EmbeddingInfo(model=embedder().model_id, dimension=embedder().dimension)
        parameters["embeddingProbe"] = embedding_probe(embedder())
    directory = Path(tempfile.mkdtemp(prefix=f"routeiq-{strategy}-")) / "artifact"
    write_artifact(
        directory,
        strategy=strategy,
        files=model.to_files(),
        candidates=model.models,
        training_data=TrainingData(sha256=sha256_hex(dataset().raw), examples=len(dataset().examples)),
        embedding=embedding,
        metrics=result.metrics,
        parameters=parameters,
    )
    return read_directory(directory)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("routing_data_generate", DATA_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deployment(identifier: str, model: str, group: str = "chat", **model_info: Any) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": model},
        "model_info": {"id": identifier, **model_info},
    }


class HashEmbedder:
    """A deterministic stand-in embedder: vectors from the text's sha256; counts its calls."""

    def __init__(self, dimension: int = 8, model_id: str = "test/hash") -> None:
        self._dimension = dimension
        self._model_id = model_id
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            vector = np.random.default_rng(seed).normal(size=self._dimension)
            rows.append(vector / np.linalg.norm(vector))
        return np.array(rows, dtype=np.float32).reshape(len(texts), self._dimension)
