"""`routeiq artifact ...`: inspect, verify, sign and pack router-model artifacts.

Exit codes: 0 success; 1 the artifact was refused (the reason on stderr); 2 a usage error
(a missing key file, a malformed URI or digest, an invalid setting).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from routeiq_router.artifacts.archive import TARBALL_SUFFIXES
from routeiq_router.artifacts.manifest import ArtifactError
from routeiq_router.artifacts.sources import load_artifact, parse_source
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact, normalize_digest
from routeiq_router.settings import SettingsError, load_settings

__all__ = ["artifact_app", "register"]

artifact_app = typer.Typer(
    name="artifact",
    help="Inspect, verify, sign and pack router-model artifacts (see docs/artifacts.md).",
    no_args_is_help=True,
)

SourceArgument = Annotated[
    str, typer.Argument(metavar="PATH_OR_URI", help="A directory, a .tar.gz, file://, s3:// or gs:// URI")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"routeiq: error: {message}", err=True)
    raise typer.Exit(code)


def _ssrf_policy() -> SsrfPolicy:
    try:
        return SsrfPolicy.from_settings(load_settings())
    except SettingsError as error:
        _fail(str(error))


def _crypto_missing() -> NoReturn:
    _fail("signing needs the cryptography package, from the ml extra: pip install 'routeiq[ml]'")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        _fail(f"{what} {path}: {error.strerror}")


def _load(uri: str, *, public_key: Path | None = None, digest: str | None = None) -> VerifiedArtifact:
    try:
        parse_source(uri)
        expected = normalize_digest(digest) if digest is not None else None
    except ValueError as error:
        _fail(str(error))
    key = None
    if public_key is not None:
        try:
            from routeiq_router.artifacts.signing import KeyFormatError, load_public_key
        except ImportError:
            _crypto_missing()
        try:
            key = load_public_key(_read_file(public_key, "public key"))
        except KeyFormatError as error:
            _fail(f"public key {public_key}: {error}")
    try:
        return load_artifact(uri, ssrf=_ssrf_policy(), expected_digest=expected, public_key=key)
    except ArtifactError as error:
        _fail(f"{error} [{error.reason}]", code=1)


@artifact_app.command("inspect")
def inspect(source: SourceArgument) -> None:
    """Verify every file's sha256 and print the manifest with the artifact's digest (JSON)."""
    artifact = _load(source)
    typer.echo(json.dumps({"source": source, **artifact.summary()}, indent=2))


@artifact_app.command("verify")
def verify(
    source: SourceArgument,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Require a valid manifest.sig made with this key (PEM or base64 raw key file)",
        ),
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option("--digest", metavar="SHA256", help="Require this digest (sha256 of manifest.json)"),
    ] = None,
) -> None:
    """Verify an artifact as the gateway does before loading it; prints `verified <digest>`."""
    artifact = _load(source, public_key=public_key, digest=digest)
    if public_key is None and artifact.signature_present:
        typer.echo(
            "routeiq: note: the artifact is signed; give --public-key to check the signature", err=True
        )
    typer.echo(f"verified {artifact.digest}")


@artifact_app.command("keygen")
def keygen(
    out_private: Annotated[
        Path, typer.Option("--out-private", help="Private key file to create (mode 0600)")
    ],
    out_public: Annotated[Path, typer.Option("--out-public", help="Public key file to create")],
) -> None:
    """Create an ed25519 key pair for signing artifacts (PKCS#8 and SubjectPublicKeyInfo PEM)."""
    try:
        from routeiq_router.artifacts.signing import generate_keypair, key_id, load_public_key
    except ImportError:
        _crypto_missing()
    if out_private.resolve() == out_public.resolve():
        _fail("--out-private and --out-public must be different files")
    for path in (out_private, out_public):
        if path.exists() or path.is_symlink():
            _fail(f"{path} exists; refusing to overwrite a key")
    private_pem, public_pem = generate_keypair()
    for path, data, mode in ((out_private, private_pem, 0o600), (out_public, public_pem, 0o644)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as error:
            _fail(f"{path}: {error.strerror}")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
    typer.echo(f"key id {key_id(load_public_key(public_pem))}: private {out_private}, public {out_public}")


@artifact_app.command("sign")
def sign(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The artifact directory")],
    key: Annotated[Path, typer.Option("--key", metavar="PRIVATE.pem", help="The ed25519 private key (PEM)")],
) -> None:
    """Verify the artifact in DIR, then write its manifest.sig."""
    try:
        from routeiq_router.artifacts.publish import sign_manifest
        from routeiq_router.artifacts.signing import KeyFormatError
    except ImportError:
        _crypto_missing()
    if not directory.is_dir():
        _fail(f"{directory}: not a directory (sign the artifact directory, then pack it)")
    try:
        digest = sign_manifest(directory, _read_file(key, "private key"))
    except KeyFormatError as error:
        _fail(f"private key {key}: {error}")
    except ArtifactError as error:
        _fail(f"{error} [{error.reason}]", code=1)
    typer.echo(f"signed {digest}")


@artifact_app.command("pack")
def pack(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The artifact directory")],
    out: Annotated[Path, typer.Argument(metavar="OUT.tar.gz", help="The archive to write")],
) -> None:
    """Verify the artifact in DIR and write it as a reproducible .tar.gz (same files, same bytes)."""
    from routeiq_router.artifacts.publish import pack_artifact

    if not directory.is_dir():
        _fail(f"{directory}: not a directory")
    if not out.name.endswith(TARBALL_SUFFIXES):
        _fail(f"{out}: the archive name must end with .tar.gz or .tgz")
    try:
        digest = pack_artifact(directory, out)
    except ValueError as error:
        if isinstance(error, ArtifactError):
            _fail(f"{error} [{error.reason}]", code=1)
        _fail(str(error))
    typer.echo(f"packed {digest} into {out}")


def register(app: typer.Typer) -> None:
    """Add `routeiq artifact` to the `routeiq` command."""
    app.add_typer(artifact_app, name="artifact")
