"""Safe decoding of an artifact's payload files: NumPy `.npz` without pickle, skops with an
explicit list of trusted types, JSON. Nothing in a payload is ever executed.

`PayloadReader` is the interface the router models and embedders load from. `FilesReader`
implements it over the files' bytes (`Mapping[str, bytes]`, as `write_artifact` wrote them;
`data` gives a file's raw bytes, e.g. an ONNX graph); the verified
artifact of `routeiq_router.artifacts` offers the same four methods, so a model loads from
either. `read_directory` reads an artifact directory for development and tests through the same
verification, without a signature key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy.typing as npt

from routeiq_router.artifacts.manifest import ArtifactError, Manifest
from routeiq_router.artifacts.verify import decode_json, decode_npz, decode_skops, read_artifact

__all__ = ["FilesReader", "PayloadReader", "read_directory"]


class PayloadReader(Protocol):
    def data(self, name: str) -> bytes: ...

    def npz(self, name: str) -> Mapping[str, npt.NDArray[Any]]: ...

    def skops(self, name: str, trusted: Sequence[str]) -> Any: ...

    def json(self, name: str) -> Any: ...


class FilesReader:
    """Decodes payload files given as bytes by name, with the verified artifact's decoders."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def data(self, name: str) -> bytes:
        try:
            return self._files[name]
        except KeyError:
            raise ArtifactError(f"{name}: missing from the artifact", reason="file_missing") from None

    def npz(self, name: str) -> Mapping[str, npt.NDArray[Any]]:
        return decode_npz(name, self.data(name))

    def skops(self, name: str, trusted: Sequence[str]) -> Any:
        return decode_skops(name, self.data(name), trusted)

    def json(self, name: str) -> Any:
        return decode_json(name, self.data(name))


def read_directory(directory: Path) -> tuple[dict[str, bytes], Manifest]:
    """The payload files and manifest of an artifact directory, verified as the gateway verifies
    them (every file's sha256, nothing unlisted) but without a signature key or a digest pin."""
    artifact = read_artifact(directory)
    return dict(artifact.files), artifact.manifest
