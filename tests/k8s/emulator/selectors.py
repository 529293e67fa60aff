"""Label and field selectors (on list, watch and deletecollection) and the filter they make."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import dig, meta_of


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = str(labels.get(self.key, ""))
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := re.fullmatch(r"!\s*([^\s=!(),]+)", part):
            requirements.append(Requirement(match.group(1), "!"))
        elif match := re.fullmatch(r"([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)", part):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(Requirement(match.group(1), op, frozenset([match.group(3)])))
        elif re.fullmatch(r"[^\s=!(),]+", part):
            requirements.append(Requirement(part, "exists"))
        else:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return requirements


def parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    requirements: list[tuple[str, str, str]] = []
    for part in _split_top_level(text):
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{part}'")
        requirements.append((match.group(1), "!=" if match.group(2) == "!=" else "=", match.group(3).strip()))
    return requirements


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Filter:
    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def make(cls, namespace: str | None, label_selector: str | None, field_selector: str | None) -> Filter:
        return cls(
            namespace=namespace,
            labels=tuple(parse_label_selector(label_selector or "")),
            fields=tuple(parse_field_selector(field_selector or "")),
        )

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = meta_of(obj)
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        for path, op, value in self.fields:
            actual = _field_text(dig(obj, path))
            if (actual == value) != (op == "="):
                return False
        return True
