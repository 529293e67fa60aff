"""Ed25519 signatures over an artifact's manifest.json (the `cryptography` library).

`manifest.sig` holds the base64 of the raw 64-byte ed25519 signature over the exact bytes of
`manifest.json` (a trailing newline is allowed). Since the manifest pins every file's sha256,
one signature covers the whole artifact.

Keys: the private key is a PKCS#8 PEM file (`routeiq artifact keygen` writes one, mode 0600);
the public key is a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) or the base64 of
the raw 32-byte key, which fits in an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from routeiq_router.artifacts.manifest import SIGNATURE, ArtifactError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyFormatError",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign",
    "verify_signature",
]


class KeyFormatError(ValueError):
    """A key file or value that is not an ed25519 key in a supported encoding."""


def generate_keypair() -> tuple[bytes, bytes]:
    """A new ed25519 key pair: (private key as unencrypted PKCS#8 PEM, public key as SPKI PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(data: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """An ed25519 private key from PKCS#8 PEM (encrypted when `password` is given)."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyFormatError(f"not a PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"an {type(key).__name__}, not an ed25519 private key")
    return key


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """An ed25519 public key from SubjectPublicKeyInfo PEM or from base64 of the raw 32 bytes."""
    raw = data.encode() if isinstance(data, str) else data
    text = raw.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnsupportedAlgorithm) as error:
            raise KeyFormatError(f"not a PEM public key: {error}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"an {type(key).__name__}, not an ed25519 public key")
        return key
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise KeyFormatError(
            "not an ed25519 public key: expected a PEM (-----BEGIN PUBLIC KEY-----) or the base64 of 32 raw bytes"
        )
    return Ed25519PublicKey.from_public_bytes(decoded)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The content of `manifest.sig` for these manifest bytes: base64 of the signature, newline."""
    return base64.b64encode(private_key.sign(manifest_bytes)) + b"\n"


def verify_signature(manifest_bytes: bytes, signature_file: bytes, public_key: Ed25519PublicKey) -> None:
    """Raise ArtifactError (reason "signature") unless `signature_file` signs `manifest_bytes`."""
    try:
        signature = base64.b64decode(signature_file.strip(), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise ArtifactError(f"{SIGNATURE}: not the base64 of a 64-byte ed25519 signature", reason="signature")
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise ArtifactError(
            f"{SIGNATURE}: the signature does not verify with the configured public key "
            f"(key id {key_id(public_key)}): the manifest was changed or signed with another key",
            reason="signature",
        ) from None
