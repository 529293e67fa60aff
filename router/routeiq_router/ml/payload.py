"""Safe decoding of an artifact's payload files: NumPy `.npz` without pickle, skops with an
explicit list of trusted types, JSON. Nothing in a payload is ever executed.

`PayloadReader` is the interface the router models load from. `FilesReader` implements it
over the files' bytes (`Mapping[str, bytes]`, as `write_artifact` wrote them); the verified
artifact of `routeiq_router.artifacts` offers the same three methods, so a model loads from
either. `read_directory` reads an artifact directory for development and tests: it checks
each file against the manifest's sha256 but verifies no signature.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from routeiq_router.artifacts.manifest import MANIFEST, ArtifactError, Manifest, parse_manifest, sha256_hex

__all__ = ["FilesReader", "PayloadReader", "read_directory"]


class PayloadReader(Protocol):
    def npz(self, name: str) -> Mapping[str, npt.NDArray[Any]]: ...

    def skops(self, name: str, trusted: Sequence[str]) -> Any: ...

    def json(self, name: str) -> Any: ...


class FilesReader:
    """Decodes payload files given as bytes by name."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def _bytes(self, name: str, suffix: str) -> bytes:
        if not name.endswith(suffix):
            raise ArtifactError(f"{name}: expected a {suffix} file")
        try:
            return self._files[name]
        except KeyError:
            raise ArtifactError(f"{name}: missing from the artifact") from None

    def npz(self, name: str) -> Mapping[str, npt.NDArray[Any]]:
        data = self._bytes(name, ".npz")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise ArtifactError(f"{name}: not a NumPy archive without pickled objects: {error}") from None

    def skops(self, name: str, trusted: Sequence[str]) -> Any:
        import skops.io  # type: ignore[import-untyped]

        data = self._bytes(name, ".skops")
        try:
            return skops.io.loads(data, trusted=list(trusted))
        except Exception as error:  # skops raises UntrustedTypesFoundException, zip and type errors
            raise ArtifactError(f"{name}: cannot be loaded safely: {type(error).__name__}: {error}") from None

    def json(self, name: str) -> Any:
        data = self._bytes(name, ".json")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ArtifactError(f"{name}: not valid JSON: {error}") from None


def read_directory(directory: Path) -> tuple[dict[str, bytes], Manifest]:
    """The payload files and manifest of an artifact directory, each file checked against the
    manifest's sha256 (no signature check: for development and tests)."""
    manifest = parse_manifest((directory / MANIFEST).read_bytes())
    files: dict[str, bytes] = {}
    for entry in manifest.files:
        data = (directory / entry.path).read_bytes()
        if sha256_hex(data) != entry.sha256:
            raise ArtifactError(f"{entry.path}: sha256 differs from the manifest")
        files[entry.path] = data
    return files, manifest
