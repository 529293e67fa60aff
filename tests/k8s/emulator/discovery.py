"""Discovery: `/version`, `/`, `/apis`, `/apis/<group>`, and the resource lists of each group version."""

from __future__ import annotations

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj
from tests.k8s.emulator.resources import version_priority
from tests.k8s.emulator.state import StoreState


def version_info(kube_version: str) -> Obj:
    """`/version`: the emulated Kubernetes version."""
    major, minor = [*kube_version.split("."), "0"][:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.0-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _group_versions(store: StoreState) -> dict[str, list[str]]:
    with store.lock:
        groups: dict[str, set[str]] = {}
        for rt in store.types.values():
            groups.setdefault(rt.group, set()).add(rt.version)
    return {g: sorted(vs, key=version_priority, reverse=True) for g, vs in groups.items()}


def root_paths(store: StoreState) -> list[str]:
    """`/`: the API paths served."""
    paths = {"/api", "/api/v1", "/apis", "/version", "/healthz"}
    for group, versions in _group_versions(store).items():
        if group:
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{v}" for v in versions)
    return sorted(paths)


def _group_entry(group: str, versions: list[str]) -> Obj:
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def api_group_list(store: StoreState) -> Obj:
    """`/apis`: every named group with its versions, the highest priority preferred."""
    groups = [_group_entry(g, vs) for g, vs in sorted(_group_versions(store).items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(store: StoreState, group: str) -> Obj:
    """`/apis/<group>`."""
    versions = _group_versions(store).get(group) if group else None
    if not versions:
        raise ApiError(404, "the server could not find the requested resource")
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def api_resource_list(store: StoreState, group: str, version: str) -> Obj:
    """`/api/v1` or `/apis/<group>/<version>`: the resources served, with their subresources."""
    with store.lock:
        types = [t for t in store.types.values() if t.group == group and t.version == version]
    if not types:
        raise ApiError(404, "the server could not find the requested resource")
    resources = [entry for rt in sorted(types, key=lambda t: t.plural) for entry in rt.discovery()]
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
