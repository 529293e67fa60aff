"""Fetching an artifact's files from where it is published: a path, `file://`, `s3://`, `gs://`.

    /models/router  file:///models/router.tar.gz     a directory or a .tar.gz on disk
    s3://bucket/routers/prod.tar.gz                   one .tar.gz object (boto3, the `s3` extra)
    s3://bucket/routers/prod                          a prefix holding manifest.json and the files
    gs://bucket/routers/prod[.tar.gz]                 the same on GCS (the `gcs` extra)

Credentials and endpoints come from each SDK's standard configuration: for S3 the AWS
variables and files, including `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for S3-compatible
stores; for GCS Application Default Credentials, or `STORAGE_EMULATOR_HOST`. A caller that
holds its own settings (the operator, with credentials from a Secret) passes a `RemoteAccess`
instead: its values take precedence over the environment's. A custom endpoint (anything but
`*.amazonaws.com` / `*.googleapis.com`), from the environment or from `RemoteAccess` alike, and
a service account's custom token URI are checked against the SSRF policy before any request.
Fetching only gathers bytes: `load_artifact` verifies them.

The URI itself is parsed by `parse_source` (`routeiq_router.uris`, re-exported here), which
the settings use too.

`source_version` is a cheap identity of what the URI points at now (inode, size, mtime of files,
ETags / generations of objects), for a hot-reload loop to notice a change without downloading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from routeiq_router.artifacts.archive import (
    DEFAULT_LIMITS,
    Limits,
    check_limits,
    read_path,
    read_tarball,
)
from routeiq_router.artifacts.manifest import ArtifactError
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact, read_artifact
from routeiq_router.uris import ArtifactSource, parse_source

if TYPE_CHECKING:
    from routeiq_router.artifacts.signing import Ed25519PublicKey

__all__ = [
    "ArtifactSource",
    "RemoteAccess",
    "fetch_artifact",
    "load_artifact",
    "parse_source",
    "source_version",
]

_AWS_HOSTS: Final = (".amazonaws.com", ".amazonaws.com.cn")
_GOOGLE_HOSTS: Final = (".googleapis.com",)


@dataclass(frozen=True)
class RemoteAccess:
    """Per-call settings for s3:// and gs://, taking precedence over the SDKs' environment.

    `endpoint_url` and `region` apply to S3 (an S3-compatible store such as MinIO; the endpoint
    is checked against the SSRF policy exactly as `AWS_ENDPOINT_URL_S3` is). The AWS keys
    replace the environment's credential chain when given (the key id and the secret go
    together; the session token is optional). `gcs_credentials_info` is a service-account JSON
    document (the parsed `credentials.json`), used instead of Application Default Credentials.
    Unset fields leave the SDK's own configuration in place. Secrets are kept out of `repr`.
    """

    endpoint_url: str | None = None
    region: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    gcs_credentials_info: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("aws_access_key_id and aws_secret_access_key must be given together")
        if self.aws_session_token is not None and self.aws_access_key_id is None:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")

    def boto3_arguments(self) -> dict[str, str]:
        """The keyword arguments of `boto3.client` these settings stand for (the unset ones omitted)."""
        arguments = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "aws_session_token": self.aws_session_token,
        }
        return {name: value for name, value in arguments.items() if value is not None}


_NO_ACCESS: Final = RemoteAccess()


def _fetch_error(source: ArtifactSource, message: str) -> ArtifactError:
    return ArtifactError(f"{source.uri}: {message}", reason="fetch")


def _version_of(entries: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, identity in sorted(entries):
        digest.update(f"{name}\0{identity}\n".encode())
    return digest.hexdigest()[:32]


def _too_large(source: ArtifactSource, size: int, limits: Limits) -> ArtifactError:
    return ArtifactError(
        f"{source.uri}: {size} bytes is over the limit of {limits.max_total_bytes} bytes", reason="too_large"
    )


# -- local files -------------------------------------------------------------------------------


def _file_version(path: Path) -> str:
    try:
        if path.is_dir():
            entries = []
            for entry in sorted(path.iterdir()):
                info = entry.lstat()
                entries.append(
                    (entry.name, f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_mode}")
                )
            return "dir:" + _version_of(entries)
        info = path.stat()
    except OSError as error:
        raise ArtifactError(f"{path}: {error.strerror}", reason="fetch") from None
    return f"file:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


# -- S3 ----------------------------------------------------------------------------------------


class _S3:
    def __init__(self, source: ArtifactSource, ssrf: SsrfPolicy, access: RemoteAccess) -> None:
        try:
            import boto3  # type: ignore[import-untyped,import-not-found,unused-ignore]
            from botocore.config import Config  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise _fetch_error(source, "s3:// needs boto3: pip install 'routeiq[s3]'") from None
        self.source = source
        config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
        arguments = access.boto3_arguments()
        try:
            client = boto3.client("s3", config=config, **arguments)
        except ValueError as error:  # botocore's checks of endpoint_url and region_name
            raise _fetch_error(source, f"invalid S3 settings: {error}") from None
        endpoint = str(client.meta.endpoint_url)
        host = urlsplit(endpoint).hostname or ""
        if not host.endswith(_AWS_HOSTS):
            # an S3-compatible store: check it, and address buckets by path so the host stays the endpoint's
            ssrf.check_url(endpoint)
            client = boto3.client(
                "s3", config=config.merge(Config(s3={"addressing_style": "path"})), **arguments
            )
        self.client: Any = client

    @contextmanager
    def errors(self) -> Iterator[None]:
        from botocore.exceptions import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            BotoCoreError,
            ClientError,
        )

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise _fetch_error(self.source, "no such object") from None
            if code == "NoSuchBucket":
                raise _fetch_error(self.source, "no such bucket") from None
            raise _fetch_error(self.source, f"S3 error {code}: {error}") from None
        except BotoCoreError as error:
            raise _fetch_error(self.source, f"{type(error).__name__}: {error}") from None

    def listing(self) -> dict[str, tuple[int, str]]:
        """name -> (size, etag) of the objects directly under the prefix."""
        objects: dict[str, tuple[int, str]] = {}
        with self.errors():
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.source.bucket, Prefix=self.source.prefix, Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    raise ArtifactError(
                        f"{self.source.uri}: {common['Prefix']!r}: a folder inside the artifact; an artifact "
                        "holds plain files only, each listed in manifest.json",
                        reason="unlisted_file",
                    )
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(self.source.prefix) :]
                    if name:  # "prefix/" itself is a folder marker
                        objects[name] = (int(item["Size"]), str(item.get("ETag", "")))
        if not objects:
            raise _fetch_error(self.source, "no objects under this prefix")
        return objects

    def head(self, key: str) -> dict[str, Any]:
        with self.errors():
            response: dict[str, Any] = self.client.head_object(Bucket=self.source.bucket, Key=key)
            return response

    def get(self, key: str, limit: int) -> bytes:
        with self.errors():
            body = self.client.get_object(Bucket=self.source.bucket, Key=key)["Body"]
            try:
                data: bytes = body.read(limit + 1)
            finally:
                body.close()
        if len(data) > limit:
            raise ArtifactError(f"s3://{self.source.bucket}/{key}: over {limit} bytes", reason="too_large")
        return data

    def fetch(self, limits: Limits) -> dict[str, bytes]:
        if self.source.is_tarball:
            size = int(self.head(self.source.key).get("ContentLength", 0))
            if size > limits.max_total_bytes:
                raise _too_large(self.source, size, limits)
            return read_tarball(self.get(self.source.key, limits.max_total_bytes), limits)
        listing = self.listing()
        check_limits({name: size for name, (size, _) in listing.items()}, limits)
        return {name: self.get(self.source.prefix + name, limits.max_file_bytes) for name in listing}

    def version(self) -> str:
        if self.source.is_tarball:
            head = self.head(self.source.key)
            return f"s3:{head.get('ETag', '')}:{head.get('LastModified', '')}:{head.get('ContentLength', '')}"
        return "s3:" + _version_of(
            [(name, f"{size}:{etag}") for name, (size, etag) in self.listing().items()]
        )


# -- GCS ---------------------------------------------------------------------------------------


class _GCS:
    def __init__(self, source: ArtifactSource, ssrf: SsrfPolicy, access: RemoteAccess) -> None:
        try:
            from google.cloud import storage  # type: ignore[import-untyped,import-not-found,attr-defined,unused-ignore]
        except ImportError:
            raise _fetch_error(
                source, "gs:// needs google-cloud-storage, from the gcs extra: pip install 'routeiq[gcs]'"
            ) from None
        self.source = source
        info = access.gcs_credentials_info
        with self.errors():
            if info is None:
                self.client: Any = storage.Client()
            else:
                self.client = storage.Client(
                    credentials=self._service_account(info, ssrf), project=info.get("project_id")
                )
        endpoint = str(self.client.api_endpoint or "")
        host = urlsplit(endpoint).hostname or ""
        if endpoint and not host.endswith(_GOOGLE_HOSTS):
            ssrf.check_url(endpoint)
        self.bucket: Any = self.client.bucket(source.bucket)

    def _service_account(self, info: Mapping[str, Any], ssrf: SsrfPolicy) -> Any:
        from google.oauth2 import service_account  # type: ignore[import-untyped,import-not-found,unused-ignore]

        try:
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call,unused-ignore]
                dict(info), scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
            )
        except (ValueError, TypeError, KeyError) as error:  # no key material in the message
            raise _fetch_error(
                self.source, f"invalid GCS service-account credentials: {type(error).__name__}: {error}"
            ) from None
        token_uri = str(info.get("token_uri") or "")
        if token_uri and not (urlsplit(token_uri).hostname or "").endswith(_GOOGLE_HOSTS):
            # the credentials POST a signed assertion to token_uri: a custom one is an endpoint too
            ssrf.check_url(token_uri)
        return credentials

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except ArtifactError:
            raise
        except Exception as error:  # google-api-core, google-auth and requests errors alike
            code = getattr(error, "code", None)
            if code == 404:
                raise _fetch_error(self.source, "no such object or bucket") from None
            raise _fetch_error(self.source, f"GCS error: {type(error).__name__}: {error}") from None

    def blob(self, key: str) -> Any:
        with self.errors():
            blob = self.bucket.get_blob(key)
        if blob is None:
            raise _fetch_error(self.source, "no such object")
        return blob

    def listing(self) -> dict[str, Any]:
        blobs: dict[str, Any] = {}
        with self.errors():
            iterator = self.client.list_blobs(self.source.bucket, prefix=self.source.prefix, delimiter="/")
            for blob in iterator:
                name = str(blob.name)[len(self.source.prefix) :]
                if name:
                    blobs[name] = blob
            folders = sorted(iterator.prefixes)
        if folders:
            raise ArtifactError(
                f"{self.source.uri}: {folders[0]!r}: a folder inside the artifact; an artifact holds plain "
                "files only, each listed in manifest.json",
                reason="unlisted_file",
            )
        if not blobs:
            raise _fetch_error(self.source, "no objects under this prefix")
        return blobs

    def download(self, blob: Any, limit: int) -> bytes:
        size = int(blob.size or 0)
        if size > limit:
            raise ArtifactError(
                f"gs://{self.source.bucket}/{blob.name}: over {limit} bytes", reason="too_large"
            )
        with self.errors():
            data: bytes = blob.download_as_bytes()
        if len(data) > limit:
            raise ArtifactError(
                f"gs://{self.source.bucket}/{blob.name}: over {limit} bytes", reason="too_large"
            )
        return data

    def fetch(self, limits: Limits) -> dict[str, bytes]:
        if self.source.is_tarball:
            blob = self.blob(self.source.key)
            return read_tarball(self.download(blob, limits.max_total_bytes), limits)
        listing = self.listing()
        check_limits({name: int(blob.size or 0) for name, blob in listing.items()}, limits)
        return {name: self.download(blob, limits.max_file_bytes) for name, blob in listing.items()}

    def version(self) -> str:
        if self.source.is_tarball:
            blob = self.blob(self.source.key)
            return f"gs:{blob.generation}:{blob.metageneration}:{blob.size}"
        listing = self.listing()
        return "gs:" + _version_of(
            [(name, f"{blob.size}:{blob.generation}") for name, blob in listing.items()]
        )


# -- the API -----------------------------------------------------------------------------------


def _remote(source: ArtifactSource, ssrf: SsrfPolicy, access: RemoteAccess | None) -> _S3 | _GCS:
    access = access or _NO_ACCESS
    return _S3(source, ssrf, access) if source.scheme == "s3" else _GCS(source, ssrf, access)


def _parse(uri: str) -> ArtifactSource:
    try:
        return parse_source(uri)
    except ValueError as error:
        raise ArtifactError(str(error), reason="fetch") from None


def fetch_artifact(
    uri: str, *, ssrf: SsrfPolicy, limits: Limits = DEFAULT_LIMITS, access: RemoteAccess | None = None
) -> dict[str, bytes]:
    """The artifact's files by name, unverified: pass them to `read_artifact` (or use `load_artifact`).

    `access`: endpoint, region and credentials for s3:// / gs:// instead of the environment's
    (ignored for files). Raises ArtifactError: reason "fetch" (unreachable, missing, unsupported
    URI), "ssrf" (a refused endpoint), "too_large", or the archive's own reasons.
    """
    source = _parse(uri)
    if source.path is not None:
        return read_path(source.path, limits)
    return _remote(source, ssrf, access).fetch(limits)


def source_version(uri: str, *, ssrf: SsrfPolicy, access: RemoteAccess | None = None) -> str:
    """A cheap identity of what `uri` holds now; it changes when the artifact is replaced.

    `access` as for `fetch_artifact`. Files: inode, size and mtime (every entry of a directory). S3: ETag, LastModified, size (every
    object of a prefix). GCS: generations. Nothing is downloaded.
    """
    source = _parse(uri)
    if source.path is not None:
        return _file_version(source.path)
    return _remote(source, ssrf, access).version()


def load_artifact(
    uri: str,
    *,
    ssrf: SsrfPolicy,
    expected_digest: str | None = None,
    public_key: Ed25519PublicKey | bytes | str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    access: RemoteAccess | None = None,
) -> VerifiedArtifact:
    """Fetch and verify the artifact at `uri` (see `read_artifact` for what is checked)."""
    files = fetch_artifact(uri, ssrf=ssrf, limits=limits, access=access)
    return read_artifact(files, expected_digest=expected_digest, public_key=public_key, limits=limits)
