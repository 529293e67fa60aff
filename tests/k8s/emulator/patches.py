"""Patches: JSON merge patch, strategic merge patch, JSON patch, and server-side apply's merge and forget."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj
from tests.k8s.emulator.schemas import child_schema, items_schema


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [
            _strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")
        ]
    return copy.deepcopy(value)


def _same_keys(a: Any, b: Any, keys: Sequence[str]) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and all(a.get(k) == b.get(k) for k in keys)


def strategic_merge_patch(target: Any, patch: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Strategic merge patch, guided by the upstream schemas' x-kubernetes-patch-strategy/-merge-key."""
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            existing = result.get(field)
            if isinstance(existing, list) and isinstance(value, list):
                result[field] = [item for item in existing if item not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = child_schema(schema, key, resolve)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, sub, resolve)
        elif isinstance(value, list):
            strategy = str(sub.get("x-kubernetes-patch-strategy", "")).split(",")
            merge_key = sub.get("x-kubernetes-patch-merge-key")
            existing = result.get(key)
            if "merge" not in strategy or not isinstance(existing, list):
                result[key] = _strip_directives(value)
            elif merge_key:
                merged = list(existing)
                item_schema = items_schema(sub, resolve)
                for item in value:
                    index = next(
                        (i for i, old in enumerate(merged) if _same_keys(old, item, [merge_key])), None
                    )
                    if isinstance(item, dict) and item.get("$patch") == "delete":
                        if index is not None:
                            merged.pop(index)
                    elif index is None:
                        merged.append(_strip_directives(item))
                    else:
                        merged[index] = strategic_merge_patch(merged[index], item, item_schema, resolve)
                result[key] = merged
            else:
                result[key] = list(existing) + [copy.deepcopy(v) for v in value if v not in existing]
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k not in (target or {})}
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer: {path!r}", "Invalid")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _container(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            raise ApiError(422, f"jsonpatch: path not found: /{'/'.join(tokens)}", "Invalid")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)

    def get(path: str) -> Any:
        tokens = _pointer(path)
        return copy.deepcopy(_container(doc, tokens))

    def remove(path: str) -> None:
        tokens = _pointer(path)
        parent = _container(doc, tokens[:-1])
        if isinstance(parent, dict) and tokens[-1] in parent:
            del parent[tokens[-1]]
        elif isinstance(parent, list) and tokens[-1].isdigit() and int(tokens[-1]) < len(parent):
            parent.pop(int(tokens[-1]))
        else:
            raise ApiError(
                422, f"jsonpatch remove operation does not apply: doc is missing path: {path}", "Invalid"
            )

    def add(path: str, value: Any, replace: bool = False) -> None:
        nonlocal doc
        tokens = _pointer(path)
        if not tokens:
            doc = copy.deepcopy(value)
            return
        parent = _container(doc, tokens[:-1])
        last = tokens[-1]
        if isinstance(parent, dict):
            if replace and last not in parent:
                raise ApiError(
                    422, f"jsonpatch replace operation does not apply: doc is missing key: {path}", "Invalid"
                )
            parent[last] = copy.deepcopy(value)
        elif isinstance(parent, list):
            if last == "-" and not replace:
                parent.append(copy.deepcopy(value))
            elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
                if replace:
                    parent[int(last)] = copy.deepcopy(value)
                else:
                    parent.insert(int(last), copy.deepcopy(value))
            else:
                raise ApiError(422, f"jsonpatch: index out of range: {path}", "Invalid")
        else:
            raise ApiError(422, f"jsonpatch: cannot address {path}", "Invalid")

    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise ApiError(400, f"invalid JSON patch operation: {op!r}")
        name, path = op.get("op"), str(op["path"])
        if name == "add":
            add(path, op.get("value"))
        elif name == "replace":
            add(path, op.get("value"), replace=True)
        elif name == "remove":
            remove(path)
        elif name in ("move", "copy"):
            value = get(str(op.get("from", "")))
            if name == "move":
                remove(str(op.get("from", "")))
            add(path, value)
        elif name == "test":
            if get(path) != op.get("value"):
                raise ApiError(422, f"jsonpatch test operation does not apply: is: {get(path)!r}", "Invalid")
        else:
            raise ApiError(400, f"Unexpected kind: {name}")
    return doc


def _list_keys(schema: Obj) -> list[str] | None:
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys")
        if isinstance(keys, list) and keys:
            return [str(k) for k in keys]
    if schema.get("x-kubernetes-patch-strategy") and schema.get("x-kubernetes-patch-merge-key"):
        return [str(schema["x-kubernetes-patch-merge-key"])]
    return None


def apply_merge(current: Any, applied: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Server-side apply, approximated: maps merge, map-lists merge by keys, sets union, the rest is replaced."""
    if isinstance(applied, dict):
        base: Obj = dict(current) if isinstance(current, dict) else {}
        for key, value in applied.items():
            base[key] = apply_merge(base.get(key), value, child_schema(schema, key, resolve), resolve)
        return base
    if isinstance(applied, list) and isinstance(current, list):
        node = resolve(schema)
        keys = _list_keys(node)
        if keys:
            merged = list(current)
            for item in applied:
                index = next((i for i, old in enumerate(merged) if _same_keys(old, item, keys)), None)
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = apply_merge(merged[index], item, items_schema(node, resolve), resolve)
            return merged
        if node.get("x-kubernetes-list-type") == "set":
            return list(current) + [copy.deepcopy(v) for v in applied if v not in current]
    return copy.deepcopy(applied)


def apply_forget(current: Any, before: Any, now: Any, schema: Any, resolve: Callable[[Any], Obj]) -> Any:
    """Remove what a field manager applied before and no longer applies."""
    if isinstance(before, dict) and isinstance(current, dict):
        result = dict(current)
        for key, old in before.items():
            if not isinstance(now, dict) or key not in now:
                result.pop(key, None)
            elif key in result:
                result[key] = apply_forget(
                    result[key], old, now[key], child_schema(schema, key, resolve), resolve
                )
        return result
    if isinstance(before, list) and isinstance(current, list) and isinstance(now, list):
        node = resolve(schema)
        keys = _list_keys(node)
        if keys:
            gone = [b for b in before if not any(_same_keys(b, n, keys) for n in now)]
            return [c for c in current if not any(_same_keys(c, g, keys) for g in gone)]
        if node.get("x-kubernetes-list-type") == "set":
            return [c for c in current if c in now or c not in before]
    return current
