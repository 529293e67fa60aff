"""Offline checks of a gateway's LiteLLM settings (`spec.litellm`), as strict as the pod.

Two rules, both pure and value-free (a problem names the path and the rule, never the value):

- credentials: a key that looks like a credential (`is_credential_key`), anywhere in a
  `modelList` entry or in `routerSettings`, must hold an `os.environ/<VARIABLE>` reference;
  a literal would be rendered into the gateway's ConfigMap. Any string holding a URL with a
  password (`scheme://user:password@host`) is refused for the same reason.
- shape: `modelList` entries and `routerSettings` against LiteLLM's config shape, a JSON Schema
  generated from LiteLLM on the router side (`routeiq_router.gateway.config_schema`) and shipped
  here as `litellm_config_shape.json`: unknown keys of an entry or of routerSettings are refused
  with the closest known key; an unknown `litellm_params` key close to a known one is refused as
  a typo (other keys are provider arguments LiteLLM passes through).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

__all__ = [
    "CEL_URL_PASSWORD",
    "CREDENTIAL_KEYS",
    "ENV_PREFIX",
    "LITERAL_CREDENTIAL",
    "URL_WITH_PASSWORD",
    "config_shape",
    "credential_keys",
    "credential_problems",
    "has_url_password",
    "is_credential_key",
    "shape_problems",
]

ENV_PREFIX: Final = "os.environ/"
LITERAL_CREDENTIAL: Final = (
    "a literal credential; use os.environ/<VARIABLE> and set the variable from secrets.providerKeys "
    "(a literal would land in a ConfigMap)"
)
URL_WITH_PASSWORD: Final = (
    "a URL with a password; keep the whole URL in a Secret and use os.environ/<VARIABLE> "
    "(a literal would land in a ConfigMap)"
)

# credentials LiteLLM knows by name (litellm_params, router_settings) whatever the patterns say
CREDENTIAL_KEYS: Final = frozenset(
    {
        "api_key",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_web_identity_token",
        "azure_ad_token",
        "azure_password",
        "client_secret",
        "credentials",
        "master_key",
        "password",
        "private_key",
        "redis_password",
        "s3_access_key_id",
        "secret",
        "token",
        "vertex_credentials",
    }
)
# words that make a key a credential wherever they stand in it (split on _ - . and camelCase)
_SECRET_WORDS: Final = frozenset({"password", "passwd", "secret", "credential", "credentials", "apikey"})
# a key ending in one of these names a credential's location or handle, not the credential
_HANDLE_WORDS: Final = frozenset(
    {"ref", "name", "file", "path", "id", "arn", "url", "uri", "env", "region", "fields", "provider"}
)
# "<x>_key" keys that are not secrets
_PLAIN_KEYS: Final = frozenset({"cache", "public", "idempotency", "partition", "sort", "routing", "group"})
# "<x>_token" keys that count tokens, price them or name a prompt template's special tokens
_TOKEN_COUNTS: Final = frozenset({"per", "cost", "max", "min", "tokens", "count", "bos", "eos", "pad", "unk"})

_URL_PASSWORD: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@\s:]*:[^/?#@\s]+@")
# the same test in CEL (RE2), for admission: a scheme, userinfo with a colon and a password, an @
CEL_URL_PASSWORD: Final = "^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@:]*:[^/?#@]+@"


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [word for word in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if word]


def is_credential_key(key: str) -> bool:
    """Whether a settings key names a credential: an explicit name (api_key, azure_password,
    vertex_credentials, aws_secret_access_key, redis_password, ...) or a key whose words say so
    (*password*, *secret*, *credential(s)*, *_key, *_token), unless it names a handle (…_ref,
    …_name, …_file, …_path, …_id) or counts tokens (max_tokens, input_cost_per_token)."""
    if key.lower() in CREDENTIAL_KEYS:
        return True
    words = _words(key)
    if not words or words[-1] in _HANDLE_WORDS:
        return False
    if _SECRET_WORDS.intersection(words):
        return True
    if words[-1] == "key":
        return len(words) > 1 and words[-2] not in _PLAIN_KEYS
    if words[-1] == "token":
        return not _TOKEN_COUNTS.intersection(words)
    return False


def has_url_password(value: str) -> bool:
    """Whether a string holds a URL whose userinfo carries a password."""
    return _URL_PASSWORD.search(value) is not None


def _is_reference(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.startswith(ENV_PREFIX))


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def credential_problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, rule) for every literal credential and URL with a password in `value`, nested."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = _join(path, str(key))
            if is_credential_key(str(key)):
                if not _is_reference(item):
                    yield where, LITERAL_CREDENTIAL
            else:
                yield from credential_problems(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from credential_problems(item, _join(path, index))
    elif isinstance(value, str) and has_url_password(value):
        yield path, URL_WITH_PASSWORD


@cache
def config_shape() -> dict[str, Any]:
    """LiteLLM's config shape (generated on the router side, shipped with the operator)."""
    text = (
        resources.files("routeiq_operator.gateway").joinpath("litellm_config_shape.json").read_text("utf-8")
    )
    shape: dict[str, Any] = json.loads(text)
    return shape


def credential_keys(section: str) -> list[str]:
    """The credential keys LiteLLM knows by name in `section` (litellm_params, router_settings)."""
    return sorted(key for key in config_shape()["$defs"][section]["properties"] if is_credential_key(key))


def _unknown(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key (LiteLLM has no such setting){hint}"


def _keys(
    value: Mapping[str, Any], schema: Mapping[str, Any], path: str, strict: bool
) -> Iterator[tuple[str, str]]:
    known: Mapping[str, Any] = schema["properties"]
    for key in schema.get("required", ()):
        if key not in value:
            yield _join(path, key), "required by LiteLLM"
    for key in value:
        if str(key) in known:
            continue
        if strict:
            yield _join(path, str(key)), _unknown(str(key), known)
        elif difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.85):
            yield (
                _join(path, str(key)),
                _unknown(str(key), known) + " (provider arguments pass through, this one looks like a typo)",
            )


def shape_problems(
    model_list: list[dict[str, Any]] | None, router_settings: Mapping[str, Any] | None, prefix: str = ""
) -> Iterator[tuple[str, str]]:
    """(path, rule) for every key of `model_list` entries and `router_settings` that LiteLLM's
    config shape refuses; paths start with `prefix` (e.g. modelList, routerSettings)."""
    definitions = config_shape()["$defs"]
    for index, entry in enumerate(model_list or []):
        where = _join(_join(prefix, "modelList"), index)
        if not isinstance(entry, Mapping):
            yield where, "must be a mapping (model_name, litellm_params, model_info)"
            continue
        yield from _keys(entry, definitions["deployment"], where, strict=True)
        name = entry.get("model_name")
        if "model_name" in entry and not (isinstance(name, str) and name):
            yield _join(where, "model_name"), "must be a non-empty string"
        params = entry.get("litellm_params")
        if "litellm_params" in entry:
            if not isinstance(params, Mapping):
                yield _join(where, "litellm_params"), "must be a mapping"
            else:
                yield from _keys(
                    params, definitions["litellm_params"], _join(where, "litellm_params"), strict=False
                )
                model = params.get("model")
                if "model" in params and not (isinstance(model, str) and model):
                    yield _join(where, "litellm_params.model"), "must be a non-empty string"
        info = entry.get("model_info")
        if "model_info" in entry and info is not None and not isinstance(info, Mapping):
            yield _join(where, "model_info"), "must be a mapping"
    if router_settings is not None:
        yield from _keys(
            router_settings, definitions["router_settings"], _join(prefix, "routerSettings"), strict=True
        )
