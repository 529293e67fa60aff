"""Verifying an artifact before anything in it is loaded, and decoding its files safely.

`read_artifact` checks, in this order, and refuses with an ArtifactError naming the check:

1. `manifest.json` is there; its sha256 (the artifact's **digest**) equals the expected digest,
   when one is given;
2. when a public key is given: `manifest.sig` is there and is a valid ed25519 signature of
   the exact manifest bytes (no signature, a bad one or another key's: refused);
3. the manifest parses (known format version, safe file names and suffixes);
4. the artifact holds no file that the manifest does not list (a smuggled `model.pkl` is
   refused, by name), and every listed file is there with its size and sha256.

Only then are files decoded, and only through the safe decoders of `VerifiedArtifact`:
`npz` (NumPy with `allow_pickle=False`), `skops` (an explicit list of trusted types) and
`json` (and the raw bytes of a `.onnx` graph, for ONNX Runtime). Nothing in an artifact is
ever executed. `read_embedder` verifies an embedder directory the same way.
"""

from __future__ import annotations

import io
import json as jsonlib
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from routeiq_router.artifacts.archive import DEFAULT_LIMITS, Limits, check_limits, read_path
from routeiq_router.artifacts.manifest import (
    MANIFEST,
    SIGNATURE,
    ArtifactError,
    EmbedderManifest,
    FileEntry,
    Manifest,
    parse_embedder_manifest,
    parse_manifest,
    sha256_hex,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from routeiq_router.artifacts.signing import Ed25519PublicKey

__all__ = [
    "VerifiedArtifact",
    "VerifiedEmbedder",
    "decode_json",
    "decode_npz",
    "decode_skops",
    "normalize_digest",
    "read_artifact",
    "read_embedder",
]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def normalize_digest(value: str) -> str:
    """A digest as 64 lowercase hex digits; `sha256:` prefix and case are accepted."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _DIGEST.match(digest):
        raise ValueError(f"{value!r} is not a sha256 digest (64 hex digits)")
    return digest


@dataclass(frozen=True)
class VerifiedArtifact:
    """An artifact whose digest, signature (when a key was given) and files all checked out."""

    manifest: Manifest
    digest: str  # sha256 of manifest_bytes
    manifest_bytes: bytes
    files: Mapping[str, bytes]  # the payload files the manifest lists, by name
    signature_present: bool
    signature_verified: bool  # True only when a configured public key verified manifest.sig
    limits: Limits = DEFAULT_LIMITS

    def data(self, name: str) -> bytes:
        """The bytes of a listed file."""
        self.manifest.file(name)  # ArtifactError naming the file when it is not listed
        return self.files[name]

    def json(self, name: str) -> Any:
        """A listed `.json` file, parsed."""
        return decode_json(name, self.data(name))

    def npz(self, name: str) -> dict[str, npt.NDArray[Any]]:
        """The arrays of a listed `.npz` file (see `decode_npz`)."""
        return decode_npz(name, self.data(name), self.limits)

    def skops(self, name: str, trusted: Sequence[str]) -> Any:
        """A listed `.skops` file (see `decode_skops`)."""
        return decode_skops(name, self.data(name), trusted, self.limits)

    @property
    def signature_status(self) -> str:
        """verified (by the configured key), present (not checked: no key) or absent."""
        return "verified" if self.signature_verified else "present" if self.signature_present else "absent"

    def summary(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, with the digest and the signature status."""
        document: dict[str, Any] = self.manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {
            "digest": self.digest,
            "signature": self.signature_status,
            **document,
        }


def _payload(name: str, data: bytes, suffix: str) -> bytes:
    if not name.endswith(suffix):
        raise ArtifactError(f"{name}: not a {suffix} file", reason="format")
    return data


def decode_json(name: str, data: bytes) -> Any:
    """A `.json` payload file, parsed."""
    try:
        return jsonlib.loads(_payload(name, data, ".json"))
    except (ValueError, RecursionError) as error:
        raise ArtifactError(f"{name}: not valid JSON: {error}", reason="format") from None


def decode_npz(name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, npt.NDArray[Any]]:
    """The arrays of a `.npz` payload file, loaded with `allow_pickle=False`.

    An array of Python objects (dtype=object) would need pickle: it is refused.
    """
    import numpy as np

    _check_zip(name, _payload(name, data, ".npz"), limits)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise ArtifactError(f"{name}: not a NumPy .npz archive ({error})", reason="format") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ArtifactError(f"{name}: not a NumPy .npz archive", reason="format")
    arrays: dict[str, npt.NDArray[Any]] = {}
    with loaded:
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as error:
                if "allow_pickle" in str(error):
                    raise ArtifactError(
                        f"{name}: array {key!r} holds Python objects (dtype=object), which only pickle "
                        "can load; an artifact stores numeric arrays only",
                        reason="pickle",
                    ) from None
                raise ArtifactError(f"{name}: array {key!r}: {error}", reason="format") from None
            except (OSError, EOFError, zipfile.BadZipFile) as error:
                raise ArtifactError(f"{name}: array {key!r}: {error}", reason="format") from None
    return arrays


def decode_skops(name: str, data: bytes, trusted: Sequence[str], limits: Limits = DEFAULT_LIMITS) -> Any:
    """A `.skops` payload file, loaded by skops trusting only its defaults and `trusted`.

    The file's types are audited first (`skops.io.get_untrusted_types`); any type that is
    neither a skops default nor in `trusted` is refused, by name, before anything loads.
    """
    import skops.io  # type: ignore[import-untyped,unused-ignore]

    _check_zip(name, _payload(name, data, ".skops"), limits)
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as error:
        raise ArtifactError(f"{name}: not a valid skops file: {error}", reason="format") from None
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ArtifactError(
            f"{name}: untrusted types {', '.join(refused)}: the loader trusts only skops' defaults"
            + (f" and {', '.join(trusted)}" if trusted else ""),
            reason="untrusted_type",
        )
    try:
        return skops.io.loads(data, trusted=list(trusted))
    except Exception as error:
        raise ArtifactError(f"{name}: skops could not load it: {error}", reason="format") from None


def _check_zip(name: str, data: bytes, limits: Limits) -> None:
    # .npz and .skops are zip files: bound what they decompress to before loading them
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError):
        raise ArtifactError(f"{name}: not a valid zip archive", reason="format") from None
    if declared > limits.max_file_bytes:
        raise ArtifactError(
            f"{name}: decompresses to {declared} bytes, over the limit of {limits.max_file_bytes}",
            reason="too_large",
        )


def _as_public_key(value: Ed25519PublicKey | bytes | str) -> Ed25519PublicKey:
    from routeiq_router.artifacts.signing import load_public_key

    return value if not isinstance(value, bytes | str) else load_public_key(value)


def read_artifact(
    source: Mapping[str, bytes] | Path | str,
    *,
    expected_digest: str | None = None,
    public_key: Ed25519PublicKey | bytes | str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedArtifact:
    """Verify an artifact: its files by name, or the path of a directory or `.tar.gz` on disk.

    `expected_digest`: the sha256 of manifest.json the caller pins (e.g. from a deploy config).
    `public_key`: when given (a key, or PEM / base64 raw bytes), the artifact must carry a
    valid `manifest.sig` made with its private key.
    Raises ArtifactError, whose `reason` names the failed check and message gives the detail.
    """
    files = read_path(Path(source), limits) if isinstance(source, Path | str) else dict(source)
    check_limits({name: len(data) for name, data in files.items()}, limits)
    manifest_bytes = files.get(MANIFEST)
    if manifest_bytes is None:
        found = ", ".join(sorted(files)) or "nothing"
        raise ArtifactError(f"no {MANIFEST} in the artifact (found {found})", reason="manifest")
    digest = sha256_hex(manifest_bytes)
    if expected_digest is not None and digest != normalize_digest(expected_digest):
        raise ArtifactError(
            f"digest mismatch: {MANIFEST} has sha256 {digest}, expected {normalize_digest(expected_digest)}",
            reason="digest",
        )
    verified = _check_signature(manifest_bytes, files.get(SIGNATURE), public_key)
    manifest = parse_manifest(manifest_bytes)
    _check_files(files, manifest.files, "the artifact")
    return VerifiedArtifact(
        manifest=manifest,
        digest=digest,
        manifest_bytes=manifest_bytes,
        files=MappingProxyType({entry.path: files[entry.path] for entry in manifest.files}),
        signature_present=SIGNATURE in files,
        signature_verified=verified,
        limits=limits,
    )


def _check_signature(
    manifest_bytes: bytes, signature: bytes | None, public_key: Ed25519PublicKey | bytes | str | None
) -> bool:
    """True when `public_key` verified the signature; ArtifactError when one is required and wrong."""
    if public_key is None:
        return False
    from routeiq_router.artifacts.signing import verify_signature

    key = _as_public_key(public_key)
    if signature is None:
        raise ArtifactError(
            f"no {SIGNATURE}: a public key is configured, so only signed artifacts are loaded",
            reason="signature_missing",
        )
    verify_signature(manifest_bytes, signature, key)
    return True


def _check_files(files: Mapping[str, bytes], entries: Sequence[FileEntry], what: str) -> None:
    """Nothing unlisted, and every listed file there with its size and sha256."""
    listed = {entry.path for entry in entries}
    unlisted = sorted(set(files) - listed - {MANIFEST, SIGNATURE})
    if unlisted:
        raise ArtifactError(
            f"unlisted file(s) in {what}: {', '.join(unlisted)}; every file must be listed in "
            f"{MANIFEST} with its sha256, and only .npz, .skops, .json and .onnx files exist (never pickle)",
            reason="unlisted_file",
        )
    for entry in entries:
        data = files.get(entry.path)
        if data is None:
            raise ArtifactError(f"{entry.path}: listed in {MANIFEST} but missing", reason="file_missing")
        if len(data) != entry.size:
            raise ArtifactError(
                f"{entry.path}: {len(data)} bytes, the manifest says {entry.size}", reason="size_mismatch"
            )
        actual = sha256_hex(data)
        if actual != entry.sha256:
            raise ArtifactError(
                f"{entry.path}: sha256 {actual} does not match the manifest's {entry.sha256} "
                "(the file changed after the manifest was written)",
                reason="sha256_mismatch",
            )


@dataclass(frozen=True)
class VerifiedEmbedder:
    """An embedder directory (`routeiq embedder build`) whose digest, signature and files checked out."""

    manifest: EmbedderManifest
    digest: str  # sha256 of manifest_bytes
    manifest_bytes: bytes
    files: Mapping[str, bytes]
    signature_present: bool
    signature_verified: bool

    @property
    def signature_status(self) -> str:
        return "verified" if self.signature_verified else "present" if self.signature_present else "absent"


def read_embedder(
    source: Mapping[str, bytes] | Path | str,
    *,
    expected_digest: str | None = None,
    public_key: Ed25519PublicKey | bytes | str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedEmbedder:
    """Verify an embedder (its files by name, or a directory or `.tar.gz`) with the same checks,
    in the same order, as `read_artifact`; the manifest is an `EmbedderManifest`."""
    files = read_path(Path(source), limits) if isinstance(source, Path | str) else dict(source)
    check_limits({name: len(data) for name, data in files.items()}, limits)
    manifest_bytes = files.get(MANIFEST)
    if manifest_bytes is None:
        found = ", ".join(sorted(files)) or "nothing"
        raise ArtifactError(f"no {MANIFEST} in the embedder (found {found})", reason="manifest")
    digest = sha256_hex(manifest_bytes)
    if expected_digest is not None and digest != normalize_digest(expected_digest):
        raise ArtifactError(
            f"digest mismatch: the embedder's {MANIFEST} has sha256 {digest}, "
            f"expected {normalize_digest(expected_digest)}",
            reason="digest",
        )
    verified = _check_signature(manifest_bytes, files.get(SIGNATURE), public_key)
    manifest = parse_embedder_manifest(manifest_bytes)
    _check_files(files, manifest.files, "the embedder")
    return VerifiedEmbedder(
        manifest=manifest,
        digest=digest,
        manifest_bytes=manifest_bytes,
        files=MappingProxyType({entry.path: files[entry.path] for entry in manifest.files}),
        signature_present=SIGNATURE in files,
        signature_verified=verified,
    )
