"""Publishing an artifact: sign its manifest, pack it into a reproducible `.tar.gz`.

Both verify the artifact directory first (every file listed, every sha256 right), so a
tampered or incomplete artifact is never signed or packed.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

from routeiq_router.artifacts.archive import DEFAULT_LIMITS, Limits, is_tarball_name, read_directory
from routeiq_router.artifacts.manifest import MANIFEST, SIGNATURE
from routeiq_router.artifacts.verify import read_artifact

__all__ = ["pack_artifact", "sign_manifest", "tarball_bytes"]


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sign_manifest(directory: Path, private_key_pem: bytes, password: bytes | None = None) -> str:
    """Verify the artifact in `directory`, then write its `manifest.sig`; returns the signed digest.

    An existing `manifest.sig` is replaced.
    """
    from routeiq_router.artifacts.signing import load_private_key, sign

    key = load_private_key(private_key_pem, password)
    files = read_directory(directory)
    files.pop(SIGNATURE, None)
    artifact = read_artifact(files)
    _write_atomically(directory / SIGNATURE, sign(artifact.manifest_bytes, key))
    return artifact.digest


def tarball_bytes(files: dict[str, bytes]) -> bytes:
    """A deterministic `.tar.gz` of `files` at the archive root: the same files, the same bytes.

    manifest.json comes first, then manifest.sig, then the payload by name; every entry has
    mode 0644, uid/gid 0, no owner names and mtime 0; the gzip header has no name and mtime 0.
    """
    order = sorted(files, key=lambda name: (name != MANIFEST, name != SIGNATURE, name))
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in order:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as compressed:
        compressed.write(tar_buffer.getvalue())
    return out.getvalue()


def pack_artifact(directory: Path, out_tar_gz: Path, limits: Limits = DEFAULT_LIMITS) -> str:
    """Verify the artifact in `directory` and write it as a reproducible `.tar.gz`; returns its digest."""
    if not is_tarball_name(out_tar_gz.name):
        raise ValueError(f"{out_tar_gz}: the output must end with .tar.gz or .tgz")
    if out_tar_gz.resolve().parent == directory.resolve():
        raise ValueError(f"{out_tar_gz}: write the archive outside the artifact directory")
    files = read_directory(directory, limits)
    artifact = read_artifact(files, limits=limits)
    if not out_tar_gz.parent.is_dir():
        raise ValueError(f"{out_tar_gz.parent}: no such directory")
    _write_atomically(out_tar_gz, tarball_bytes(files))
    return artifact.digest
