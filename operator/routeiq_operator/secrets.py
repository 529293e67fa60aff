"""Reading a value out of a Secret: one reader, one error policy.

A value is read from `data` (base64, as the API server stores it) or, failing that, `stringData`
(an object written by a client that never went through an API server's conversion). Every way it
can fail raises `SecretError` with a reason and the detail, never the value; the caller decides
what the failure means for its resource (a Pending phase, a False condition) and names the field
that referenced the Secret.

    >>> secret_text({"data": {"url": "cmVkaXM6Ly9yZWRpczo2Mzc5"}}, "url")
    'redis://redis:6379'
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

from routeiq_operator.kube import KubeClient

__all__ = ["SecretError", "read_secret", "secret_bytes", "secret_text"]

Reason = Literal["SecretNotFound", "SecretKeyNotFound", "SecretValueInvalid"]


class SecretError(Exception):
    """`detail` completes "Secret <namespace>/<name> ...": "not found", "has no key K", ..."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail


async def read_secret(kube: KubeClient, namespace: str, name: str) -> Mapping[str, Any]:
    secret = await kube.get("Secret", namespace, name)
    if secret is None:
        raise SecretError("SecretNotFound", "not found")
    return secret


def secret_bytes(secret: Mapping[str, Any] | None, key: str) -> bytes:
    if secret is None:
        raise SecretError("SecretNotFound", "not found")
    encoded = (secret.get("data") or {}).get(key)
    if encoded is not None:
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise SecretError("SecretValueInvalid", f"key {key} is not valid base64") from None
    plain = (secret.get("stringData") or {}).get(key)
    if plain is None:
        raise SecretError("SecretKeyNotFound", f"has no key {key}")
    return str(plain).encode()


def secret_text(secret: Mapping[str, Any] | None, key: str) -> str:
    """The value as text, surrounding whitespace dropped (a trailing newline from `echo` is common)."""
    try:
        text = secret_bytes(secret, key).decode().strip()
    except UnicodeDecodeError:
        raise SecretError("SecretValueInvalid", f"key {key} is not UTF-8 text") from None
    if not text:
        raise SecretError("SecretValueInvalid", f"key {key} is empty")
    return text
