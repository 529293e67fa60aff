"""The three embedders of a trained router, and how they are built, pinned and loaded.

- `torch`: the sentence-transformer itself (`SentenceTransformerEmbedder`), under torch: the
  reference, and what builds the other two. Needs the `ml` extra.
- `onnx`: the same transformer exported to ONNX (fp32) and run by ONNX Runtime; tokenised by
  `tokenizers` with the model's own `tokenizer.json`, mean pooling over the attention mask and
  L2 normalisation, as sentence-transformers does: its vectors match torch's (cosine >= 0.9999).
  Needs numpy, tokenizers and onnxruntime (the `ml-serve` extra).
- `static`: a static embedding matrix distilled from the transformer with model2vec (one vector
  per token, PCA to 256 dimensions): a prompt's vector is the normalised mean of its tokens'
  rows. Needs numpy and tokenizers only. Not the same vectors as torch's: an artifact trained
  on it is served with it.

`routeiq embedder build --kind onnx|static --out DIR` writes one (offline, from the bundled
all-MiniLM-L6-v2 or a sentence-transformer directory) as a directory with a manifest pinning
every file by sha256, signed and verified like an artifact (`routeiq embedder sign|verify`).
Training with it copies its files into the router artifact (`embedder-manifest.json`,
`embedder-<file>`), and the artifact's manifest names it (`embedding.embedder`: kind and the
sha256 of its manifest.json), so the artifact's digest and signature cover the embedder too
and the gateway serves each artifact with exactly the embedder it was trained with.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from routeiq_router.artifacts.manifest import (
    EMBEDDER_KINDS,
    MANIFEST,
    ArtifactError,
    EmbedderManifest,
    EmbedderRef,
    parse_embedder_manifest,
    sha256_hex,
    write_embedder,
)
from routeiq_router.artifacts.verify import VerifiedEmbedder, decode_npz, read_embedder
from routeiq_router.ml.embeddings import (
    DEFAULT_MODEL_ID,
    Embedder,
    EmbeddingModelNotFoundError,
    Vector,
)
from routeiq_router.ml.payload import PayloadReader

__all__ = [
    "ARTIFACT_PREFIX",
    "EMBEDDER_MANIFEST",
    "KINDS",
    "BuiltKind",
    "EmbedderMismatchError",
    "OnnxEmbedder",
    "StaticEmbedder",
    "artifact_files",
    "build_embedder",
    "cached_embedder",
    "check_embedder",
    "embedder_digest",
    "embedder_from_artifact",
    "embedder_from_verified",
    "embedder_kind",
    "embedder_ref",
    "is_embedder_directory",
    "load_embedder_directory",
]

KINDS = EMBEDDER_KINDS
BuiltKind = Literal["onnx", "static"]
ARTIFACT_PREFIX = "embedder-"  # the embedder's files inside a router artifact
EMBEDDER_MANIFEST = ARTIFACT_PREFIX + MANIFEST  # its manifest.json, inside a router artifact
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
STATIC_FILE = "embeddings.npz"
BATCH = 32
CHECK_TEXTS = (
    "Write a Python function that merges two sorted lists.",
    "What is the capital of Australia?",
    "Summarise the plot of Hamlet in three sentences.",
    "x",
)
MIN_ONNX_COSINE = 0.9999


class EmbedderMismatchError(ArtifactError):
    """An artifact offered an embedder other than the one it was trained with."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="embedder")


def embedder_kind(embedder: Embedder) -> str | None:
    """`torch`, `onnx` or `static`; None for an embedder that does not say (a test double)."""
    kind = getattr(embedder, "kind", None)
    return kind if isinstance(kind, str) else None


def embedder_digest(embedder: Embedder) -> str | None:
    """The sha256 of an onnx or static embedder's manifest.json; None for torch."""
    digest = getattr(embedder, "digest", None)
    return digest if isinstance(digest, str) else None


def embedder_ref(embedder: Embedder) -> EmbedderRef:
    """What an artifact trained with `embedder` records of it (`embedding.embedder`)."""
    kind = embedder_kind(embedder) or "torch"
    if kind not in KINDS:
        raise ValueError(f"unknown embedder kind {kind!r}")
    return EmbedderRef(kind=kind, digest=embedder_digest(embedder))


def _describe(kind: str | None, digest: str | None, model_id: str) -> str:
    if kind is None:
        return f"an embedder of unknown kind ({model_id!r})"
    pinned = f", manifest sha256 {digest}" if digest else ""
    return f"the {kind} embedder ({model_id!r}{pinned})"


def check_embedder(embedder: Embedder, ref: EmbedderRef | None, model: str) -> None:
    """EmbedderMismatchError unless `embedder` is the one an artifact names (kind, and for onnx
    and static the digest). An embedder that does not state its kind is only checked by the
    caller's dimension and probe checks."""
    kind = embedder_kind(embedder)
    if kind is None:
        return
    wanted_kind = "torch" if ref is None else ref.kind
    wanted_digest = None if ref is None else ref.digest
    if kind != wanted_kind or (wanted_digest is not None and embedder_digest(embedder) != wanted_digest):
        raise EmbedderMismatchError(
            f"manifest.json: embedding: the artifact was trained with {_describe(wanted_kind, wanted_digest, model)}, "
            f"but this worker would embed with {_describe(kind, embedder_digest(embedder), embedder.model_id)}: "
            "an artifact is served only with the embedder it was trained with"
        )


# ---- tokenising --------------------------------------------------------------------------


def _tokenizer(data: bytes, max_tokens: int | None) -> Any:
    from tokenizers import Tokenizer  # type: ignore[import-untyped]

    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as error:
        raise ArtifactError(f"{TOKENIZER_FILE}: not a tokenizers file: {error}", reason="format") from None
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def _int_parameter(manifest: EmbedderManifest, name: str, *, minimum: int = 1) -> int:
    value = manifest.parameters.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ArtifactError(
            f"{MANIFEST}: parameters.{name}: expected an integer >= {minimum}, got {value!r}",
            reason="manifest",
        )
    return value


def _normalize(rows: Vector) -> Vector:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    result: Vector = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


class _BuiltEmbedder:
    """What the onnx and static embedders share: identity from their manifest and digest."""

    kind: str

    def __init__(self, manifest: EmbedderManifest, digest: str) -> None:
        self.manifest = manifest
        self.digest = digest
        self._dimension = manifest.dimension

    @property
    def model_id(self) -> str:
        # distinct per embedder: the shared Redis cache keys vectors by it
        return f"{self.manifest.model}@{self.kind}:{self.digest[:16]}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Vector:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        rows = [
            self._embed_batch(list(texts[start : start + BATCH])) for start in range(0, len(texts), BATCH)
        ]
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)

    def _embed_batch(self, texts: list[str]) -> Vector:
        raise NotImplementedError


class OnnxEmbedder(_BuiltEmbedder):
    """The transformer under ONNX Runtime: mean pooling and L2 normalisation in numpy."""

    kind = "onnx"

    def __init__(
        self, manifest: EmbedderManifest, digest: str, files: Mapping[str, bytes], *, threads: int | None = 1
    ) -> None:
        try:
            import onnxruntime  # type: ignore[import-untyped]
        except ImportError:
            raise ArtifactError(
                "the onnx embedder needs onnxruntime, which is not installed: pip install 'routeiq[ml-serve]'",
                reason="embedder",
            ) from None

        super().__init__(manifest, digest)
        self._tokenizer = _tokenizer(files[TOKENIZER_FILE], _int_parameter(manifest, "maxTokens"))
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                files[ONNX_FILE], sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ArtifactError(
                f"{ONNX_FILE}: ONNX Runtime cannot load it: {error}", reason="format"
            ) from None
        inputs = sorted(item.name for item in self._session.get_inputs())
        if inputs != ["attention_mask", "input_ids"]:
            raise ArtifactError(
                f"{ONNX_FILE}: expected the inputs input_ids and attention_mask, found {', '.join(inputs)}",
                reason="format",
            )
        self._lock = threading.Lock()  # the tokenizer is shared; ONNX Runtime runs concurrently

    def _embed_batch(self, texts: list[str]) -> Vector:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        (tokens,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        weights = mask[:, :, None].astype(np.float32)
        summed = (np.asarray(tokens, dtype=np.float32) * weights).sum(axis=1)
        pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalize(pooled)


class StaticEmbedder(_BuiltEmbedder):
    """A static embedding matrix: the normalised mean of a prompt's token rows (model2vec's rule:
    no special tokens, the unknown token dropped, text cut to `maxChars` then `maxTokens`)."""

    kind = "static"

    def __init__(self, manifest: EmbedderManifest, digest: str, files: Mapping[str, bytes]) -> None:
        super().__init__(manifest, digest)
        arrays = decode_npz(STATIC_FILE, files[STATIC_FILE])
        matrix = arrays.get("embeddings")
        if matrix is None or matrix.ndim != 2 or matrix.shape[1] != manifest.dimension:
            shape = None if matrix is None else matrix.shape
            raise ArtifactError(
                f"{STATIC_FILE}: expected an 'embeddings' array of (tokens, {manifest.dimension}), found {shape}",
                reason="format",
            )
        if matrix.dtype not in (np.float16, np.float32):
            raise ArtifactError(
                f"{STATIC_FILE}: 'embeddings' is {matrix.dtype}, not float16 or float32", reason="format"
            )
        self._matrix = np.ascontiguousarray(matrix)  # kept as stored (model2vec: float16), summed in float32
        self._max_chars = _int_parameter(manifest, "maxChars")
        self._tokenizer = _tokenizer(files[TOKENIZER_FILE], _int_parameter(manifest, "maxTokens"))
        unknown = manifest.parameters.get("unknownTokenId")
        self._unknown = unknown if isinstance(unknown, int) else None
        if self._tokenizer.get_vocab_size() > len(self._matrix):
            raise ArtifactError(
                f"{STATIC_FILE}: {len(self._matrix)} rows for a vocabulary of {self._tokenizer.get_vocab_size()}",
                reason="format",
            )
        self._lock = threading.Lock()

    def _embed_batch(self, texts: list[str]) -> Vector:
        with self._lock:
            encodings = self._tokenizer.encode_batch(
                [text[: self._max_chars] for text in texts], add_special_tokens=False
            )
        rows = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids = [token for token in encoding.ids if token != self._unknown]
            if ids:
                rows[row] = self._matrix[ids].astype(np.float32).mean(axis=0)
        return _normalize(rows)


# ---- loading -----------------------------------------------------------------------------


def embedder_from_verified(
    verified: VerifiedEmbedder, *, threads: int | None = 1
) -> OnnxEmbedder | StaticEmbedder:
    """The embedder of a verified embedder directory."""
    if verified.manifest.kind == "onnx":
        return OnnxEmbedder(verified.manifest, verified.digest, verified.files, threads=threads)
    return StaticEmbedder(verified.manifest, verified.digest, verified.files)


def is_embedder_directory(path: Path) -> bool:
    """A directory whose manifest.json is an embedder's (it has a `kind`)."""
    try:
        document = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "kind" in document and "strategy" not in document


def load_embedder_directory(
    path: Path | str,
    *,
    public_key: bytes | str | None = None,
    expected_digest: str | None = None,
    threads: int | None = 1,
) -> OnnxEmbedder | StaticEmbedder:
    """An embedder directory (or .tar.gz), verified (`read_embedder`) and loaded."""
    return embedder_from_verified(
        read_embedder(Path(path), public_key=public_key, expected_digest=expected_digest), threads=threads
    )


def artifact_files(verified: VerifiedEmbedder) -> dict[str, bytes]:
    """The files a router artifact trained with this embedder holds for it."""
    files = {ARTIFACT_PREFIX + name: data for name, data in verified.files.items()}
    files[EMBEDDER_MANIFEST] = verified.manifest_bytes
    return files


def embedder_from_artifact(
    reader: PayloadReader, ref: EmbedderRef, *, threads: int | None = 1
) -> OnnxEmbedder | StaticEmbedder:
    """The onnx or static embedder a router artifact holds, checked against its pinned digest."""
    manifest_bytes = reader.data(EMBEDDER_MANIFEST)
    digest = sha256_hex(manifest_bytes)
    if digest != ref.digest:
        raise EmbedderMismatchError(
            f"{EMBEDDER_MANIFEST}: sha256 {digest}, but manifest.json pins the {ref.kind} embedder {ref.digest}"
        )
    files = {
        entry.path: reader.data(ARTIFACT_PREFIX + entry.path)
        for entry in parse_embedder_manifest(manifest_bytes).files
    }
    verified = read_embedder({MANIFEST: manifest_bytes, **files}, expected_digest=digest)
    if verified.manifest.kind != ref.kind:
        raise EmbedderMismatchError(
            f"{EMBEDDER_MANIFEST}: a {verified.manifest.kind} embedder, but manifest.json names a {ref.kind} one"
        )
    return embedder_from_verified(verified, threads=threads)


# ---- building (needs the ml extra: torch, sentence-transformers, onnx, model2vec) --------------


def _source_path(source: str | None) -> tuple[Path, str]:
    from routeiq_router.ml.embeddings import _bundled_path, _id_of_directory

    if source is None:
        return _bundled_path(), DEFAULT_MODEL_ID
    path = Path(source).expanduser()
    if not path.is_dir():
        raise EmbeddingModelNotFoundError(
            f"embedding model directory {source!r} does not exist (building an embedder needs a "
            "sentence-transformer directory, or none for the bundled all-MiniLM-L6-v2)"
        )
    resolved = path.resolve()
    return resolved, _id_of_directory(resolved)


def _export_onnx(source: Path) -> tuple[dict[str, bytes], dict[str, Any], int]:
    import torch
    from sentence_transformers import SentenceTransformer

    model: Any = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    transformer, pooling = model[0], model[1]
    config = pooling.get_config_dict()
    if config.get("pooling_mode") != "mean" or len(model) != 3 or type(model[2]).__name__ != "Normalize":
        raise EmbeddingModelNotFoundError(
            f"{source}: the onnx embedder reproduces Transformer -> mean Pooling -> Normalize; this model is {model}"
        )
    tokenizer_path = source / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise EmbeddingModelNotFoundError(
            f"{source}: no {TOKENIZER_FILE} (the onnx embedder tokenises with it)"
        )

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    encoder = Encoder(transformer.auto_model).eval()
    example = {
        "input_ids": torch.ones((2, 8), dtype=torch.long),
        "attention_mask": torch.ones((2, 8), dtype=torch.long),
    }
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on shape arithmetic that it records as constants: the checks against
        # torch after the export are what proves the graph right for every length
        warnings.simplefilter("ignore")
        target = Path(scratch) / ONNX_FILE
        torch.onnx.export(
            encoder,
            (),
            str(target),
            kwargs=example,
            input_names=["input_ids", "attention_mask"],
            output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "token_embeddings": {0: "batch", 1: "tokens"},
            },
            opset_version=17,
            dynamo=False,
        )
        leftovers = sorted(path.name for path in Path(scratch).iterdir() if path.name != ONNX_FILE)
        if leftovers:
            raise RuntimeError(
                f"the ONNX export wrote external data ({', '.join(leftovers)}); expected one file"
            )
        graph = target.read_bytes()
    parameters = {"maxTokens": int(model.max_seq_length), "pooling": "mean", "normalize": True, "opset": 17}
    dimension = int(model.get_embedding_dimension() or 0)
    return {ONNX_FILE: graph, TOKENIZER_FILE: tokenizer_path.read_bytes()}, parameters, dimension


def _distill_static(source: Path, dimensions: int) -> tuple[dict[str, bytes], dict[str, Any], int]:
    from model2vec.distill import distill

    model = distill(model_name=str(source), pca_dims=dimensions)
    if model.weights is not None or model.token_mapping is not None:
        raise RuntimeError(
            "model2vec produced per-token weights or a token mapping, which this embedder does not read"
        )
    matrix = np.asarray(model.embedding)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, embeddings=matrix)
    max_tokens = int(model.max_length or 512)
    parameters = {
        "maxTokens": max_tokens,
        "maxChars": max_tokens * int(model.median_token_length),
        "unknownTokenId": model.unk_token_id,
        "normalize": True,
        "pooling": "mean",
        "pcaDims": dimensions,
        "distilledWith": "model2vec",
    }
    tokenizer = model.tokenizer.to_str().encode("utf-8")
    return {STATIC_FILE: buffer.getvalue(), TOKENIZER_FILE: tokenizer}, parameters, int(matrix.shape[1])


def build_embedder(
    kind: BuiltKind, out: Path, *, source: str | None = None, dimensions: int = 256
) -> tuple[EmbedderManifest, str]:
    """Build an onnx or static embedder from a sentence-transformer (default: the bundled
    all-MiniLM-L6-v2) into `out` (created, must be empty), offline. The onnx one is checked
    against torch on a few sentences before it is written. Returns (manifest, digest)."""
    path, model_id = _source_path(source)
    if kind == "onnx":
        files, parameters, dimension = _export_onnx(path)
    elif kind == "static":
        files, parameters, dimension = _distill_static(path, dimensions)
    else:
        raise ValueError(f"unknown embedder kind {kind!r}; built kinds: onnx, static")
    if kind == "onnx":
        _check_against_torch(path, files, parameters, dimension, model_id)
    manifest = write_embedder(
        out, kind=kind, model=model_id, dimension=dimension, files=files, parameters=parameters
    )
    return manifest, sha256_hex(manifest.to_bytes())


def embedder_cache_root() -> Path:
    """Where `routeiq train` keeps the embedders it builds: `$XDG_CACHE_HOME/routeiq/embedders`
    (default `~/.cache/routeiq/embedders`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routeiq" / "embedders"


def _build_key(kind: BuiltKind, source: Path, model_id: str, dimensions: int) -> str:
    """What a build depends on: the kind, the model's name, the dimensions, the builder's library
    versions and the bytes of every file of the source model (names included)."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"{kind}\0{model_id}\0{dimensions}\0".encode())
    for package in ("model2vec", "torch", "onnx", "routeiq"):
        try:
            digest.update(f"{package}={version(package)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=-\0".encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def cached_embedder(
    kind: BuiltKind,
    *,
    source: str | None = None,
    dimensions: int = 256,
    cache: Path | None = None,
) -> VerifiedEmbedder:
    """The onnx or static embedder of `source`, built once and kept under `cache` (default
    `embedder_cache_root()`) by a key over the source model's bytes, the kind, the dimensions and
    the builder's versions; verified (every sha256) each time it is read. A damaged entry is
    rebuilt; an unwritable cache builds into a temporary directory instead."""
    path, model_id = _source_path(source)
    root = cache if cache is not None else embedder_cache_root()
    entry = root / f"{kind}-{_build_key(kind, path, model_id, dimensions)}"
    if entry.is_dir():
        try:
            verified = read_embedder(entry)
        except ArtifactError:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            if verified.manifest.kind == kind:
                return verified
            shutil.rmtree(entry, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    except OSError:
        with tempfile.TemporaryDirectory() as temporary:
            directory = Path(temporary) / "embedder"
            build_embedder(kind, directory, source=str(path), dimensions=dimensions)
            return read_embedder(directory)
    try:
        build_embedder(kind, scratch / "embedder", source=str(path), dimensions=dimensions)
        try:
            os.rename(scratch / "embedder", entry)  # atomic; a concurrent build may have won
        except OSError:
            if not entry.is_dir():
                raise
        return read_embedder(entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_against_torch(
    path: Path, files: Mapping[str, bytes], parameters: dict[str, Any], dimension: int, model_id: str
) -> None:
    from datetime import UTC, datetime

    from routeiq_router.artifacts.manifest import FORMAT_VERSION, FileEntry
    from routeiq_router.ml.embeddings import SentenceTransformerEmbedder

    manifest = EmbedderManifest(
        format_version=FORMAT_VERSION,
        kind="onnx",
        model=model_id,
        dimension=dimension,
        created_at=datetime.now(UTC),
        parameters=parameters,
        files=[FileEntry(path=name, sha256=sha256_hex(data), size=len(data)) for name, data in files.items()],
    )
    onnx_rows = OnnxEmbedder(manifest, "0" * 64, files, threads=None).embed(CHECK_TEXTS)
    torch_rows = SentenceTransformerEmbedder(str(path)).embed(CHECK_TEXTS)
    cosine = float(np.min(np.sum(onnx_rows * torch_rows, axis=1)))
    if cosine < MIN_ONNX_COSINE:
        raise RuntimeError(
            f"the ONNX export embeds unlike torch (min cosine {cosine:.6f} < {MIN_ONNX_COSINE})"
        )
