"""What a gateway worker holds to route with a trained model, and how one decision is made.

    holder = default_holder()                       # one per worker process
    holder.load(files, manifest, digest=digest)     # after the artifact is verified; again on reload
    create("knn", context).choose(candidates, request)   # reads holder.get("knn") per decision

    holder.set(loaded_v2, key="router-v2")          # a variant model, under its model key
    create("knn", replace(context, model="router-v2"))   # reads holder.get("router-v2"), a knn model

Deployment -> artifact model name (the rule every trained strategy applies to each candidate):
1. `model_info.routeiq_model`, when the deployment sets it (used exactly as written);
2. else `litellm_params.model`: as written, or without its provider prefix
   (`openai/gpt-4o` matches an artifact model `gpt-4o`);
3. else `model_name`.
Candidates whose name is not among the artifact's candidates are not scored. When none of
them maps, the decision falls back to the first candidate and says so (`fallback=True`); the
strategies count and log it. Several deployments of the chosen model share its traffic at
random (the worker's seeded RNG).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routeiq_router.artifacts.manifest import EmbeddingInfo, Manifest
from routeiq_router.ml.embedders import (
    EmbedderMismatchError,
    check_embedder,
    embedder_from_artifact,
    is_embedder_directory,
    load_embedder_directory,
)
from routeiq_router.ml.embeddings import (
    DEFAULT_MODEL_ID,
    BytesCache,
    CachedEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
    embedding_probe,
    prompt_text,
)
from routeiq_router.ml.models import ModelFormatError, RouterModel, model_from_reader
from routeiq_router.ml.payload import FilesReader, PayloadReader
from routeiq_router.strategies.base import Deployment, RoutingRequest, StrategyUnavailableError

__all__ = [
    "LoadedRouter",
    "ModelHolder",
    "ModelNotLoadedError",
    "RouteDecision",
    "decide",
    "default_holder",
    "deployment_model_name",
    "limit_cpu_threads",
    "load_router",
    "match_candidates",
]

logger = logging.getLogger("routeiq.ml")
PROBE_TOLERANCE = 2e-3  # the recorded probe is rounded to 1e-6; another model differs by ~0.1


class ModelNotLoadedError(StrategyUnavailableError):
    """A trained strategy was asked to route before its model was loaded in this worker."""

    def __init__(self, strategy: str, loaded: Sequence[str] = (), *, model: str | None = None) -> None:
        others = f" (loaded: {', '.join(sorted(loaded))})" if loaded else ""
        if model is None:
            message = (
                f"routing strategy {strategy!r} has no trained model loaded in this worker{others}: "
                f"load an artifact trained with `routeiq train --strategy {strategy}`"
            )
        else:
            message = (
                f"variant model {model!r} (strategy {strategy!r}) is not loaded in this worker{others}: "
                "it must be an entry of ROUTEIQ_VARIANT_MODELS whose artifact verified"
            )
        super().__init__(message)
        self.strategy = strategy
        self.model = model


@dataclass(frozen=True, slots=True)
class LoadedRouter:
    """A router model ready to route: the model, its embedder (None for ELO) and its source."""

    model: RouterModel
    embedder: CachedEmbedder | None
    manifest: Manifest
    digest: str | None = None
    index: Mapping[str, int] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return self.model.strategy


def _check_embedder(embedder: Embedder, manifest: Manifest) -> None:
    info = manifest.embedding
    assert info is not None
    if embedder.dimension != info.dimension:
        raise ModelFormatError(
            f"manifest.json: embedding: the artifact was trained on {info.dimension}-d embeddings of "
            f"{info.model!r}; this worker's embedding model {embedder.model_id!r} gives {embedder.dimension}-d"
        )
    probe = manifest.parameters.get("embeddingProbe")
    if isinstance(probe, list) and probe:
        actual = np.asarray(embedding_probe(embedder, len(probe)), dtype=np.float32)
        if float(np.max(np.abs(actual - np.asarray(probe, dtype=np.float32)))) > PROBE_TOLERANCE:
            raise ModelFormatError(
                f"manifest.json: embedding: this worker's embedding model {embedder.model_id!r} does not embed "
                f"like the {info.model!r} the artifact was trained with (parameters.embeddingProbe differs)"
            )


def _embedder_for(
    reader: PayloadReader, info: EmbeddingInfo, source: str | None, threads: int | None
) -> Embedder:
    """The embedder an artifact names: torch loads the sentence-transformer (`source`, else the
    manifest's model); onnx and static load from the artifact's own embedder files, or from
    `source` when it is an embedder directory (which must be the pinned one). torch and
    sentence-transformers are imported only for the torch embedder."""
    ref = info.embedder
    if source is not None and is_embedder_directory(Path(source).expanduser()):
        return load_embedder_directory(Path(source).expanduser(), threads=threads)
    if ref is None or ref.kind == "torch":
        if missing := _missing_torch():
            raise EmbedderMismatchError(
                f"manifest.json: embedding: the artifact was trained with the torch embedder "
                f"({info.model}), which needs {missing} (RouteIQ's ml extra), and this gateway has "
                "none: retrain it with `routeiq train --embedder static` (or onnx), or serve it "
                "with an image built with ROUTEIQ_EXTRAS=gateway,ml,s3"
            )
        if source is None and info.model != DEFAULT_MODEL_ID:
            source = info.model
        return SentenceTransformerEmbedder(source)
    if source is not None:
        raise EmbedderMismatchError(
            f"manifest.json: embedding: the artifact was trained with the {ref.kind} embedder "
            f"(manifest sha256 {ref.digest}), but the embedding model is set to {source!r}, a "
            "sentence-transformer (the torch embedder): unset it, or set it to that embedder's directory"
        )
    return embedder_from_artifact(reader, ref, threads=threads)


def _missing_torch() -> str | None:
    """The first of torch and sentence-transformers this environment cannot import, if any."""
    import importlib.util

    for module in ("torch", "sentence_transformers"):
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ImportError:
            return module
    return None


def limit_cpu_threads(threads: int) -> None:
    """Cap torch's and the BLAS libraries' threads in this process.

    A gateway runs several workers per pod, each routing one decision at a time: with their
    default of one thread per CPU, the workers' threads wait on each other and one embedding
    takes ~400 ms instead of ~10 ms on a busy 2-CPU machine. One thread per worker is right for
    routing; `load_router` applies it unless told otherwise.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=threads)  # applies now, for the process (not as a context manager)
    if "torch" in sys.modules:  # never imported just for this: ELO-only workers do without torch
        import torch

        torch.set_num_threads(threads)


def load_router(
    payload: Mapping[str, bytes] | PayloadReader,
    manifest: Manifest,
    *,
    digest: str | None = None,
    embedder: Embedder | None = None,
    embedding_source: str | None = None,
    knob: float | None = None,
    cache_entries: int = 10_000,
    redis: BytesCache | None = None,
    threads: int | None = 1,
) -> LoadedRouter:
    """A ready router from an artifact's payload (file bytes by name, or a reader with
    npz/skops/json) and manifest. Raises ModelFormatError (an ArtifactError) when they disagree.

    The embedder: `embedder` if given (wrapped in a CachedEmbedder unless it is one); else the
    one the manifest names (`embedding.embedder`): for torch, `embedding_source` (a directory or a
    name, see `SentenceTransformerEmbedder`) or the manifest's `embedding.model` (the bundled
    all-MiniLM-L6-v2 for its id, otherwise a name under SENTENCE_TRANSFORMERS_HOME); for onnx and
    static, the embedder files inside the artifact (or `embedding_source` when it is an embedder
    directory). An embedder of another kind, or another onnx/static build, is refused
    (EmbedderMismatchError naming both); its dimension, and its embedding of a probe sentence
    recorded at training, must match the manifest's. `threads`: `limit_cpu_threads(threads)` first
    (None: leave the process's thread settings alone).
    """
    reader = FilesReader(payload) if isinstance(payload, Mapping) else payload
    model = model_from_reader(reader, manifest, knob=knob)
    cached: CachedEmbedder | None = None
    if model.needs_embedding:
        assert manifest.embedding is not None
        if embedder is None:
            embedder = _embedder_for(reader, manifest.embedding, embedding_source, threads)
    if threads is not None:
        limit_cpu_threads(threads)
    if model.needs_embedding:
        assert embedder is not None
        assert manifest.embedding is not None
        check_embedder(embedder, manifest.embedding.embedder, manifest.embedding.model)
        _check_embedder(embedder, manifest)
        cached = (
            embedder
            if isinstance(embedder, CachedEmbedder)
            else CachedEmbedder(embedder, cache_entries, redis)
        )
    index = {name: position for position, name in enumerate(model.models)}
    return LoadedRouter(model=model, embedder=cached, manifest=manifest, digest=digest, index=index)


class ModelHolder:
    """The trained models of one worker, by key, swapped atomically on reload.

    A model's key is its strategy name by default, so an A/B split between two trained
    strategies (say knn and mf) routes each variant with its own model; a variant model
    (`ROUTEIQ_VARIANT_MODELS`) is held under its model key, so two artifacts of one strategy
    can serve side by side. A decision reads the current model once, so a reload never mixes
    two models in one decision.
    """

    def __init__(self) -> None:
        self._routers: dict[str, LoadedRouter] = {}
        self._lock = threading.Lock()

    def set(self, loaded: LoadedRouter, key: str | None = None) -> LoadedRouter | None:
        """Make `loaded` current under `key` (default: its strategy); returns the one it replaces."""
        name = loaded.strategy if key is None else key
        with self._lock:
            previous = self._routers.get(name)
            self._routers = {**self._routers, name: loaded}
            return previous

    def get(self, key: str) -> LoadedRouter:
        """The current model under `key` (a strategy name or a model key); ModelNotLoadedError
        if there is none."""
        loaded = self._routers.get(key)
        if loaded is None:
            raise ModelNotLoadedError(key, list(self._routers))
        return loaded

    def current(self) -> dict[str, LoadedRouter]:
        """Every loaded model by key (a snapshot)."""
        return dict(self._routers)

    def clear(self, key: str | None = None) -> None:
        with self._lock:
            self._routers = {} if key is None else {k: v for k, v in self._routers.items() if k != key}

    def embedder_for(self, model_id: str) -> CachedEmbedder | None:
        """A loaded CachedEmbedder of that embedding model, to share (and keep its cache warm)."""
        for loaded in self._routers.values():
            if loaded.embedder is not None and loaded.embedder.model_id == model_id:
                return loaded.embedder
        return None

    def load(
        self,
        payload: Mapping[str, bytes] | PayloadReader,
        manifest: Manifest,
        *,
        digest: str | None = None,
        embedding_source: str | None = None,
        knob: float | None = None,
        cache_entries: int = 10_000,
        redis: BytesCache | None = None,
        threads: int | None = 1,
        key: str | None = None,
    ) -> LoadedRouter:
        """`load_router` reusing an embedder already loaded for the same embedding model, then
        `set` (under `key`, default: its strategy). On any error the current model stays in place."""
        embedder = None
        if manifest.embedding is not None and embedding_source is None:
            embedder = self.embedder_for(manifest.embedding.model)
        loaded = load_router(
            payload,
            manifest,
            digest=digest,
            embedder=embedder,
            embedding_source=embedding_source,
            knob=knob,
            cache_entries=cache_entries,
            redis=redis,
            threads=threads,
        )
        self.set(loaded, key)
        return loaded


_DEFAULT_HOLDER = ModelHolder()


def default_holder() -> ModelHolder:
    """This process's holder: the one the registered strategies read by default."""
    return _DEFAULT_HOLDER


# ---- one decision ------------------------------------------------------------------------


def deployment_model_name(deployment: Deployment) -> str | None:
    """The name a deployment is known by in artifacts (rule in the module docstring, before
    the provider prefix is tried)."""
    info = deployment.get("model_info")
    if isinstance(info, Mapping) and isinstance(info.get("routeiq_model"), str) and info["routeiq_model"]:
        return str(info["routeiq_model"])
    params = deployment.get("litellm_params")
    if isinstance(params, Mapping) and isinstance(params.get("model"), str) and params["model"]:
        return str(params["model"])
    name = deployment.get("model_name")
    return str(name) if isinstance(name, str) and name else None


def _artifact_index(deployment: Deployment, index: Mapping[str, int]) -> int | None:
    name = deployment_model_name(deployment)
    if name is None:
        return None
    if name in index:
        return index[name]
    info = deployment.get("model_info")
    explicit = isinstance(info, Mapping) and info.get("routeiq_model") == name
    if not explicit and "/" in name:
        return index.get(name.split("/", 1)[1])
    return None


def match_candidates(candidates: Sequence[Deployment], models: Sequence[str]) -> list[int | None]:
    """The artifact model index of each candidate deployment (None: not mapped)."""
    index = {name: position for position, name in enumerate(models)}
    return [_artifact_index(deployment, index) for deployment in candidates]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    deployment: Deployment
    model: str | None  # the artifact model chosen; None on fallback
    fallback: bool  # no candidate maps to an artifact model: the first candidate was taken
    scores: Mapping[str, float] | None = None  # per mapped model, when the model scored


def decide(
    loaded: LoadedRouter,
    candidates: Sequence[Deployment],
    request: RoutingRequest,
    rng: random.Random | None = None,
) -> RouteDecision:
    """Choose among `candidates` (non-empty) with the loaded model and its knob."""
    model = loaded.model
    index = loaded.index or {name: position for position, name in enumerate(model.models)}
    mapped = [_artifact_index(deployment, index) for deployment in candidates]
    allowed = sorted({position for position in mapped if position is not None})
    if not allowed:
        return RouteDecision(deployment=candidates[0], model=None, fallback=True)
    scores: dict[str, float] | None = None
    if len(allowed) == 1:
        chosen = allowed[0]  # nothing to compare: no embedding needed
    else:
        embedding = None
        if model.needs_embedding:
            assert loaded.embedder is not None
            embedding = loaded.embedder.embed_one(prompt_text(request.messages, request.input))
        row = model.scores(embedding)
        chosen = model.select(row, np.array(allowed, dtype=np.intp))
        scores = {model.models[position]: float(row[position]) for position in allowed}
    matching = [
        deployment for deployment, position in zip(candidates, mapped, strict=True) if position == chosen
    ]
    deployment = matching[0] if len(matching) == 1 else (rng or random).choice(matching)
    return RouteDecision(deployment=deployment, model=model.models[chosen], fallback=False, scores=scores)
