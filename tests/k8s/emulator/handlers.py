"""The HTTP verbs' work beyond the store: request bodies, PATCH and apply, scale, list pages, deletes.

The server routes requests to these functions (they take the store's lock, or are called under
it) and turns what they return, or the `ApiError` they raise, into the response.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping
from typing import Any

import yaml

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj, dig, meta_of
from tests.k8s.emulator.patches import (
    apply_forget,
    apply_merge,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tests.k8s.emulator.protobuf import PROTOBUF, decode_protobuf
from tests.k8s.emulator.resources import ResourceType
from tests.k8s.emulator.schemas import OBJECT_META_REF, kind_schema, resolver
from tests.k8s.emulator.selectors import Filter
from tests.k8s.emulator.store import Store

Reply = tuple[Obj, int]  # a body and its HTTP status


def parse_json(body: bytes, content_type: str) -> Obj:
    """A request body: JSON, YAML, or protobuf for the kinds kubectl's typed generators send."""
    if content_type == PROTOBUF:  # kubectl's typed generators (`kubectl create namespace x`) send it
        return decode_protobuf(body)
    if content_type not in ("", "application/json", "application/yaml", "*/*"):
        raise ApiError(
            415,
            f"the body of the request was in an unknown format ({content_type}) - accepted media types include: "
            "application/json, application/yaml",
        )
    try:
        data = (
            yaml.safe_load(body or b"null")
            if content_type == "application/yaml"
            else json.loads(body or b"null")
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body of the request must be a JSON object")
    return data


def patch(
    store: Store,
    content_type: str,
    body: bytes,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    subresource: str | None,
    query: Mapping[str, str],
    warnings: list[str],
) -> Reply:
    """PATCH: merge, JSON, strategic merge (built-in kinds only, as on a real server) or apply."""
    dry_run = query.get("dryRun") == "All"
    strict_fields = query.get("fieldValidation") == "Strict"
    if content_type == "application/apply-patch+yaml":
        try:
            data = yaml.safe_load(body.decode() or "null")
        except yaml.YAMLError as exc:
            raise ApiError(400, f"error decoding YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the apply configuration must be an object")
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(400, "PATCH, application/apply-patch+yaml requests must supply fieldManager")
        with store.lock:
            return server_side_apply(
                store,
                rt,
                namespace,
                name,
                subresource,
                data,
                manager,
                warnings,
                strict_fields=strict_fields,
                dry_run=dry_run,
            )
    if content_type not in (
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ) or (content_type == "application/strategic-merge-patch+json" and rt.is_custom):
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            f"{'' if rt.is_custom else ', application/strategic-merge-patch+json'}",
        )
    try:
        patch = json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"error decoding patch: {exc}") from exc
    with store.lock:
        old = store.require(rt, namespace, name)
        if subresource == "scale":
            return write_scale(store, rt, namespace, name, None, (content_type, patch)), 200
        base = copy.deepcopy(old)
        if content_type == "application/json-patch+json":
            new = json_patch(base, patch)
        elif content_type == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            new = merge_patch(base, patch)
        else:
            if not isinstance(patch, dict):
                raise ApiError(400, "a strategic merge patch must be a JSON object")
            resolve = resolver(store.kube_version)
            new = strategic_merge_patch(
                base, patch, kind_schema(store.kube_version, rt.api_version, rt.kind), resolve
            )
        if not isinstance(new, dict):
            raise ApiError(422, "the patch did not produce an object", "Invalid")
        updated = store.update(
            rt, old, new, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run
        )
        return store.present(rt, updated), 200


def server_side_apply(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    subresource: str | None,
    data: Obj,
    manager: str,
    warnings: list[str],
    *,
    strict_fields: bool,
    dry_run: bool,
) -> Reply:
    """Server-side apply as create-or-update: fields this manager applied before and now omits are removed."""
    if not data.get("apiVersion") or not data.get("kind"):
        raise ApiError(400, "apiVersion and kind must be set in an apply configuration")
    if meta_of(data).get("name") not in (None, name):
        raise ApiError(400, "the name of the object does not match the name on the URL")
    okey = store.okey(rt, namespace, name)
    applied_key = (rt.key, okey, manager, subresource or "")
    old = store.objects.get(rt.key, {}).get(okey)
    if old is None:
        if subresource is not None:
            raise ApiError(
                404,
                f'{rt.qualified} "{name}" not found',
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        body = copy.deepcopy(data)
        body.setdefault("metadata", {})["name"] = name
        created = store.create(rt, namespace, body, warnings, strict_fields=strict_fields, dry_run=dry_run)
        if not dry_run:
            store.applied[applied_key] = copy.deepcopy(data)
        return store.present(rt, created), 201
    if rt.is_custom:
        schema: Any = dict(rt.schema or {})
        schema["properties"] = {
            **(schema.get("properties") or {}),
            "metadata": {"$ref": OBJECT_META_REF},
        }
    else:
        schema = kind_schema(store.kube_version, rt.api_version, rt.kind)
    resolve = resolver(store.kube_version)
    current = copy.deepcopy(old)
    before = store.applied.get(applied_key)
    if before is not None:
        current = apply_forget(current, before, data, schema, resolve)
    new = apply_merge(current, data, schema, resolve)
    updated = store.update(rt, old, new, subresource, warnings, strict_fields=strict_fields, dry_run=dry_run)
    if not dry_run:
        store.applied[applied_key] = copy.deepcopy(data)
    return store.present(rt, updated), 200


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    """The Scale (autoscaling/v1) of an object with the scale subresource."""
    spec_path, status_path, selector_path = rt.scale_paths
    meta = obj["metadata"]
    selector = dig(obj, selector_path)
    if selector is None and not rt.is_custom:
        match = dig(obj, "spec.selector.matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": dig(obj, spec_path) or 0},
        "status": {"replicas": dig(obj, status_path) or 0, "selector": selector or ""},
    }


def write_scale(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    name: str,
    body: Obj | None,
    patch: tuple[str, Any] | None,
) -> Obj:
    old = store.require(rt, namespace, name)
    scale = scale_of(rt, old)
    if patch is not None:
        content_type, document = patch
        scale = (
            json_patch(scale, document)
            if content_type == "application/json-patch+json"
            else merge_patch(scale, document)
        )
    elif body is not None:
        scale = body
    replicas = dig(scale, "spec.replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise ApiError(
            422,
            f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}',
            "Invalid",
        )
    new = copy.deepcopy(old)
    node = new
    *parents, last = rt.scale_paths[0].split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = replicas
    sent_rv = meta_of(scale).get("resourceVersion")
    if sent_rv:
        new["metadata"]["resourceVersion"] = sent_rv
    return scale_of(rt, store.update(rt, old, new, None, []))


def delete_options(body: bytes, query: Mapping[str, str]) -> Obj:
    options: Obj = {}
    if body.strip():
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"invalid DeleteOptions: {exc}") from exc
        if isinstance(parsed, dict):
            options.update(parsed)
    if "propagationPolicy" in query:
        options["propagationPolicy"] = query["propagationPolicy"]
    if options.get("orphanDependents") is True:
        options.setdefault("propagationPolicy", "Orphan")
    return options


def check_preconditions(rt: ResourceType, obj: Obj, options: Obj) -> None:
    pre = options.get("preconditions") or {}
    meta = obj["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        if pre.get(field) and str(pre[field]) != str(meta[field]):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{meta["name"]}": Precondition failed: '
                f"{label} in precondition: {pre[field]}, {label} in object meta: {meta[field]}",
                "Conflict",
                {"name": meta["name"], "group": rt.group, "kind": rt.plural},
            )


def delete_collection(store: Store, rt: ResourceType, selection: Filter, options: Obj, dry_run: bool) -> Obj:
    deleted: list[Obj] = []
    for _, obj in sorted(store.objects.get(rt.key, {}).items()):
        if selection.matches(obj):
            deleted.append(store.present(rt, obj))
            current = store.objects.get(rt.key, {}).get(
                (meta_of(obj).get("namespace", ""), meta_of(obj)["name"])
            )
            if current is not None:
                store.delete(
                    rt, current, str(options.get("propagationPolicy") or "Background"), dry_run=dry_run
                )
    return {
        "kind": f"{rt.kind}List",
        "apiVersion": rt.api_version,
        "metadata": {"resourceVersion": str(store.rv)},
        "items": deleted,
    }


def list_page(store: Store, rt: ResourceType, selection: Filter, query: Mapping[str, str]) -> Obj:
    """A list, paginated with `limit` and `continue`."""
    with store.lock:
        items = [(k, o) for k, o in sorted(store.objects.get(rt.key, {}).items()) if selection.matches(o)]
        rv = str(store.rv)
    start_after: list[str] | None = None
    if query.get("continue"):
        try:
            start_after = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
        except (ValueError, binascii.Error) as exc:
            raise ApiError(400, "continue key is not valid") from exc
        items = [(k, o) for k, o in items if list(k) > list(start_after or [])]
    meta: Obj = {"resourceVersion": rv}
    limit = int(query.get("limit") or 0)
    if limit and len(items) > limit:
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
        meta["continue"] = base64.urlsafe_b64encode(json.dumps(list(items[-1][0])).encode()).decode()
    return {
        "kind": f"{rt.kind}List",
        "apiVersion": rt.api_version,
        "metadata": meta,
        "items": [store.present(rt, o) for _, o in items],
    }
