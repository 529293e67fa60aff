"""Where an artifact is published: parsing a path, `file://`, `s3://` or `gs://` URI.

    /models/router  file:///models/router.tar.gz     a directory or a .tar.gz on disk
    s3://bucket/routers/prod.tar.gz                   one .tar.gz object
    s3://bucket/routers/prod                          a prefix holding manifest.json and the files
    gs://bucket/routers/prod[.tar.gz]                 the same on GCS

Standard library only and importing nothing of RouteIQ: the settings validate the URIs of
`ROUTEIQ_VARIANT_MODELS` with it, and `routeiq_router.artifacts.sources` fetches what it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["TARBALL_SUFFIXES", "ArtifactSource", "is_tarball_name", "parse_source"]

TARBALL_SUFFIXES: Final = (".tar.gz", ".tgz")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def is_tarball_name(name: str) -> bool:
    return name.endswith(TARBALL_SUFFIXES)


@dataclass(frozen=True)
class ArtifactSource:
    """A parsed artifact URI."""

    uri: str
    scheme: Literal["file", "s3", "gs"]
    path: Path | None = None  # file
    bucket: str = ""  # s3, gs
    key: str = ""  # s3, gs: an object key ending .tar.gz/.tgz, or a prefix (no trailing slash)

    @property
    def is_tarball(self) -> bool:
        return is_tarball_name(self.path.name if self.path is not None else self.key)

    @property
    def prefix(self) -> str:
        return f"{self.key}/" if self.key else ""


def parse_source(uri: str) -> ArtifactSource:
    """Parse `uri`; ValueError naming the problem for an unsupported or malformed one."""
    if "://" not in uri:
        if not uri.strip():
            raise ValueError("empty artifact location")
        return ArtifactSource(uri=uri, scheme="file", path=Path(uri))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise ValueError(
                f"{uri}: a file:// URI names a local path (file:///abs/path), not host {parts.netloc!r}"
            )
        if not parts.path.startswith("/"):
            raise ValueError(f"{uri}: a file:// URI needs an absolute path (file:///abs/path)")
        return ArtifactSource(uri=uri, scheme="file", path=Path(unquote(parts.path)))
    if scheme in {"s3", "gs"}:
        bucket = parts.netloc
        if not _BUCKET.match(bucket):
            raise ValueError(f"{uri}: {bucket!r} is not a valid bucket name")
        if parts.query or parts.fragment:
            raise ValueError(f"{uri}: query strings and fragments are not supported")
        key = parts.path.strip("/")
        return ArtifactSource(uri=uri, scheme="s3" if scheme == "s3" else "gs", bucket=bucket, key=key)
    raise ValueError(f"{uri}: unsupported scheme {parts.scheme!r} (use a path, file://, s3:// or gs://)")
