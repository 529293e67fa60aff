"""The router-model artifact: a directory (or `.tar.gz` of one) with `manifest.json`.

    my-router/
      manifest.json     format version, strategy, embedding model, candidates, training-data
                        digest, evaluation metrics, parameters, and every file with its sha256
      manifest.sig      optional: base64 ed25519 signature over the exact bytes of manifest.json
      model.npz ...     the payload, in safe formats only: NumPy .npz (loaded with
                        allow_pickle=False), skops (.skops, loaded with an explicit list of
                        trusted types), JSON, and ONNX (.onnx, the graph of an onnx embedder,
                        read by ONNX Runtime, never executed as code)
      embedder-*        an onnx or static embedder the artifact was trained with, when it names
                        one: its own manifest (`embedder-manifest.json`) and files

An **embedder** (`routeiq embedder build`) is a directory of the same shape: `manifest.json`
(`EmbedderManifest`: its kind, the model it was made from, its dimension, every file's
sha256), an optional `manifest.sig`, and its files (`model.onnx` or `embeddings.npz`, and
`tokenizer.json`).

The artifact's **digest** is the sha256 of `manifest.json`'s bytes: the manifest pins every
file's sha256, so one digest (and one signature) covers the whole artifact. Nothing in an
artifact is ever executed: there is no pickle, and loaders refuse any other file type.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ALLOWED_SUFFIXES",
    "EMBEDDER_KINDS",
    "FORMAT_VERSION",
    "MANIFEST",
    "SIGNATURE",
    "ArtifactError",
    "EmbedderManifest",
    "EmbedderRef",
    "EmbeddingInfo",
    "FileEntry",
    "Manifest",
    "TrainingData",
    "parse_embedder_manifest",
    "parse_manifest",
    "sha256_hex",
    "write_artifact",
    "write_embedder",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ALLOWED_SUFFIXES = (".npz", ".skops", ".json", ".onnx")
EMBEDDER_KINDS = ("torch", "onnx", "static")
_ParsedT = TypeVar("_ParsedT", bound="_Model")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ArtifactError(ValueError):
    """An artifact that must not be loaded; the message says which check failed and where.

    `reason` is a short, fixed code for the failed check (`"manifest"`, `"digest"`,
    `"signature"`, `"unlisted_file"`, ...), fit for a metric label; the message has the detail.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _supported_version(value: int) -> int:
    if value != FORMAT_VERSION:
        raise ValueError(f"format version {value} is not supported (this RouteIQ reads {FORMAT_VERSION})")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class EmbedderRef(_Model):
    """The embedder an artifact was trained with: `torch` (sentence-transformers, named by
    `EmbeddingInfo.model`), or an `onnx` / `static` embedder pinned by `digest`, the sha256 of
    its manifest.json, whose files the artifact holds (`embedder-manifest.json`, `embedder-<file>`)."""

    kind: Literal["torch", "onnx", "static"]
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _pinned(self) -> EmbedderRef:
        if (self.kind == "torch") != (self.digest is None):
            raise ValueError(
                "an onnx or static embedder is pinned by its digest; a torch embedder has none"
                f" (kind {self.kind!r}, digest {self.digest!r})"
            )
        return self


class EmbeddingInfo(_Model):
    model: str = Field(min_length=1, description="Embedding model id, e.g. all-MiniLM-L6-v2")
    dimension: int = Field(gt=0)
    normalized: bool = True
    embedder: EmbedderRef | None = None  # None: torch (artifacts written before embedders were named)

    @property
    def embedder_kind(self) -> str:
        return "torch" if self.embedder is None else self.embedder.kind


class TrainingData(_Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    examples: int = Field(ge=0)


class FileEntry(_Model):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _FILE_NAME.match(value) or value in {MANIFEST, SIGNATURE}:
            raise ValueError(f"{value!r} is not a plain file name in the artifact")
        if not value.endswith(ALLOWED_SUFFIXES):
            raise ValueError(f"{value!r}: only {', '.join(ALLOWED_SUFFIXES)} files are allowed (no pickle)")
        return value


class Manifest(_Model):
    format_version: int = Field(alias="formatVersion")
    strategy: str = Field(min_length=1)
    created_at: datetime = Field(alias="createdAt")
    embedding: EmbeddingInfo | None = None  # None for strategies that ignore the prompt (ELO)
    candidates: list[str] = Field(min_length=1, description="Model names the router chooses among")
    training_data: TrainingData = Field(alias="trainingData")
    metrics: dict[str, float] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry] = Field(min_length=1)

    @field_validator("format_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        return _supported_version(value)

    @field_validator("candidates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("candidate model names must be unique")
        return value

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ArtifactError(f"{MANIFEST}: no file {path!r} in the artifact", reason="file_missing")

    def to_bytes(self) -> bytes:
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


class EmbedderManifest(_Model):
    """The manifest.json of an embedder built by `routeiq embedder build`."""

    format_version: int = Field(alias="formatVersion")
    kind: Literal["onnx", "static"]
    model: str = Field(min_length=1, description="The sentence-transformer it was made from")
    dimension: int = Field(gt=0)
    created_at: datetime = Field(alias="createdAt")
    parameters: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry] = Field(min_length=1)

    @field_validator("format_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        return _supported_version(value)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ArtifactError(f"{MANIFEST}: no file {path!r} in the embedder", reason="file_missing")

    def to_bytes(self) -> bytes:
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _parse(model: type[_ParsedT], data: bytes) -> _ParsedT:
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise ArtifactError(f"{MANIFEST}: {where}: {first['msg']}", reason="manifest") from None


def parse_manifest(data: bytes) -> Manifest:
    """The manifest from its bytes; ArtifactError naming the field on anything wrong."""
    return _parse(Manifest, data)


def parse_embedder_manifest(data: bytes) -> EmbedderManifest:
    """An embedder's manifest from its bytes; ArtifactError naming the field on anything wrong."""
    return _parse(EmbedderManifest, data)


def write_artifact(
    directory: Path,
    *,
    strategy: str,
    files: Mapping[str, bytes],
    candidates: list[str],
    training_data: TrainingData,
    embedding: EmbeddingInfo | None = None,
    metrics: Mapping[str, float] | None = None,
    parameters: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> Manifest:
    """Write the payload files and their manifest into `directory` (created, must be empty)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise ArtifactError(f"{directory}: the output directory must be empty")
    entries = [
        FileEntry(path=name, sha256=sha256_hex(data), size=len(data)) for name, data in sorted(files.items())
    ]
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        strategy=strategy,
        created_at=created_at or datetime.now(UTC),
        embedding=embedding,
        candidates=list(candidates),
        training_data=training_data,
        metrics=dict(metrics or {}),
        parameters=dict(parameters or {}),
        files=entries,
    )
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / MANIFEST).write_bytes(manifest.to_bytes())
    return manifest


def write_embedder(
    directory: Path,
    *,
    kind: Literal["onnx", "static"],
    model: str,
    dimension: int,
    files: Mapping[str, bytes],
    parameters: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> EmbedderManifest:
    """Write an embedder's files and their manifest into `directory` (created, must be empty)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise ArtifactError(f"{directory}: the output directory must be empty")
    manifest = EmbedderManifest(
        format_version=FORMAT_VERSION,
        kind=kind,
        model=model,
        dimension=dimension,
        created_at=created_at or datetime.now(UTC),
        parameters=dict(parameters or {}),
        files=[
            FileEntry(path=name, sha256=sha256_hex(data), size=len(data))
            for name, data in sorted(files.items())
        ],
    )
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / MANIFEST).write_bytes(manifest.to_bytes())
    return manifest
