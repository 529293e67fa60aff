"""Reading an artifact's files from a directory or a `.tar.gz`, safely and within size limits.

Both readers return `{file name: bytes}` for `read_artifact` to verify; neither writes to disk.
A tarball is decompressed in memory (bounded, so a gzip bomb stops at the limit) and parsed
with `tarfile`; its entries must be regular files with plain names, optionally under one
top-level directory. Links, devices, absolute paths, `..` and nested directories are refused.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from routeiq_router.artifacts.manifest import ArtifactError
from routeiq_router.uris import TARBALL_SUFFIXES, is_tarball_name

__all__ = [
    "DEFAULT_LIMITS",
    "TARBALL_SUFFIXES",
    "Limits",
    "check_limits",
    "gunzip",
    "is_tarball_name",
    "read_directory",
    "read_path",
    "read_tarball",
]

GiB: Final = 1024**3
MiB: Final = 1024**2
CORRUPT: Final = "truncated or corrupt archive"


@dataclass(frozen=True)
class Limits:
    """How much an artifact may hold; anything larger is refused before it is read whole."""

    max_total_bytes: int = 2 * GiB
    max_file_bytes: int = 1 * GiB
    max_files: int = 256

    def __post_init__(self) -> None:
        if min(self.max_total_bytes, self.max_file_bytes, self.max_files) <= 0:
            raise ValueError("artifact limits must be positive")


DEFAULT_LIMITS: Final = Limits()


def _too_large(what: str, size: int, limit: int) -> ArtifactError:
    return ArtifactError(f"{what}: {size} bytes is over the limit of {limit} bytes", reason="too_large")


def check_limits(sizes: dict[str, int], limits: Limits) -> None:
    """Refuse, before downloading or reading, an artifact with too many or too large files."""
    if len(sizes) > limits.max_files:
        raise ArtifactError(
            f"the artifact has {len(sizes)} files, over the limit of {limits.max_files}", reason="too_large"
        )
    for name, size in sorted(sizes.items()):
        if size > limits.max_file_bytes:
            raise _too_large(name, size, limits.max_file_bytes)
    total = sum(sizes.values())
    if total > limits.max_total_bytes:
        raise _too_large("the artifact", total, limits.max_total_bytes)


def read_directory(directory: Path, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Every entry of `directory` (not recursive): regular files only, within `limits`. A file that
    vanishes, cannot be read or is swapped for a link meanwhile is an ArtifactError (reason fetch)."""
    try:
        return _read_directory(directory, limits)
    except OSError as error:
        raise ArtifactError(f"{directory}: cannot read the artifact: {error}", reason="fetch") from None


def _read_directory(directory: Path, limits: Limits) -> dict[str, bytes]:
    entries = sorted(directory.iterdir())
    sizes: dict[str, int] = {}
    for entry in entries:
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ArtifactError(
                f"{entry.name}: a symbolic link; an artifact holds regular files only", "unsafe_entry"
            )
        if stat.S_ISDIR(mode):
            raise ArtifactError(
                f"{entry.name}/: a directory inside the artifact; an artifact holds regular files only, "
                "each listed in manifest.json",
                reason="unlisted_file",
            )
        if not stat.S_ISREG(mode):
            raise ArtifactError(f"{entry.name}: not a regular file", reason="unsafe_entry")
        sizes[entry.name] = entry.lstat().st_size
    check_limits(sizes, limits)
    files: dict[str, bytes] = {}
    for name, size in sizes.items():
        # O_NOFOLLOW: the entry was a regular file a moment ago; never follow a link swapped in since
        fd = os.open(directory / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
        if len(data) != size:
            raise ArtifactError(f"{name}: the file changed while it was read", reason="fetch")
        files[name] = data
    return files


def gunzip(data: bytes, limit: int) -> bytes:
    """The decompressed bytes of a complete gzip stream, refused past `limit` bytes."""
    out = bytearray()
    rest = data
    try:
        while True:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            # max_length is at least 1 here: 0 would mean "no limit" to zlib
            out += decompressor.decompress(rest, limit + 1 - len(out))
            while decompressor.unconsumed_tail and len(out) <= limit:
                out += decompressor.decompress(decompressor.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise ArtifactError(f"the archive decompresses to over {limit} bytes", reason="too_large")
            if not decompressor.eof:
                raise ArtifactError(CORRUPT, reason="archive_corrupt")
            rest = decompressor.unused_data
            if not rest.strip(b"\0"):  # end of the last gzip member (zero padding allowed)
                return bytes(out)
    except zlib.error:
        raise ArtifactError(CORRUPT, reason="archive_corrupt") from None


def _entry_parts(name: str) -> list[str]:
    if name.startswith("/") or "\\" in name:
        raise ArtifactError(f"{name!r}: an absolute or non-POSIX path in the archive", reason="unsafe_entry")
    parts = [part for part in name.split("/") if part not in {"", "."}]
    if ".." in parts:
        raise ArtifactError(f"{name!r}: a path with '..' in the archive", reason="unsafe_entry")
    if len(parts) > 2:
        raise ArtifactError(
            f"{name!r}: a nested path; an archive holds the artifact's files, optionally under one "
            "top-level directory",
            reason="unsafe_entry",
        )
    return parts


def read_tarball(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """The files of a `.tar.gz` artifact, read in memory; nothing is extracted to disk."""
    # tar adds a 512-byte header (more with pax records) per entry and up to 10 KiB at the end
    raw = gunzip(data, limits.max_total_bytes + limits.max_files * 4096 + MiB)
    files: dict[str, bytes] = {}
    top: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for member in archive:
                if member.issym() or member.islnk():
                    raise ArtifactError(f"{member.name!r}: a link in the archive", reason="unsafe_entry")
                parts = _entry_parts(member.name)
                if member.isdir():
                    if len(parts) > 1:
                        raise ArtifactError(
                            f"{member.name!r}: a nested directory in the archive", "unsafe_entry"
                        )
                    top.update(parts)
                    continue
                if not member.isreg():
                    raise ArtifactError(f"{member.name!r}: not a regular file in the archive", "unsafe_entry")
                if not parts:
                    raise ArtifactError(
                        f"{member.name!r}: a file without a name in the archive", "unsafe_entry"
                    )
                top.add(parts[0] if len(parts) == 2 else "")
                name = parts[-1]
                if name in files:
                    raise ArtifactError(f"{name!r}: twice in the archive", reason="unsafe_entry")
                if len(files) >= limits.max_files:
                    raise ArtifactError(f"the archive has over {limits.max_files} files", reason="too_large")
                if member.size > limits.max_file_bytes:
                    raise _too_large(name, member.size, limits.max_file_bytes)
                total += member.size
                if total > limits.max_total_bytes:
                    raise _too_large("the artifact", total, limits.max_total_bytes)
                handle = archive.extractfile(member)
                content = handle.read() if handle is not None else b""
                if len(content) != member.size:
                    raise ArtifactError(CORRUPT, reason="archive_corrupt")
                files[name] = content
    except (tarfile.TarError, EOFError):
        raise ArtifactError(CORRUPT, reason="archive_corrupt") from None
    if len(top) > 1:
        raise ArtifactError(
            "the archive's files are not all at its root or all under one top-level directory "
            f"(found {', '.join(sorted(repr(t or '.') for t in top))})",
            reason="unsafe_entry",
        )
    return files


def read_path(path: Path, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """An artifact on disk: a directory, or a `.tar.gz` file."""
    if path.is_dir():
        return read_directory(path, limits)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or directory", reason="fetch")
    if not is_tarball_name(path.name):
        raise ArtifactError(
            f"{path}: not an artifact (a directory with manifest.json, or a .tar.gz of one)", reason="fetch"
        )
    try:
        size = path.stat().st_size
        if size > limits.max_total_bytes:
            raise _too_large(str(path), size, limits.max_total_bytes)
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the artifact: {error}", reason="fetch") from None
    return read_tarball(data, limits)
