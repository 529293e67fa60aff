"""Object and path helpers shared by the emulator's modules."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]
RKey = tuple[str, str]  # (group, plural): one store per resource, shared by all its versions
OKey = tuple[str, str]  # (namespace or "", name)


def meta_of(obj: Mapping[str, Any]) -> Obj:
    """An object's `metadata`, or an empty dict when it has none (or not a dict)."""
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def dig(obj: Any, dotted: str) -> Any:
    """The value at a dotted path (`spec.replicas`), or None."""
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def join_path(path: str, key: str | int) -> str:
    """A field path as Kubernetes writes it in causes: `spec.containers[0].image`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def format_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = join_path(path, part)
    return path


def timestamp() -> str:
    """Now, as a Kubernetes timestamp (creationTimestamp, deletionTimestamp...)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
