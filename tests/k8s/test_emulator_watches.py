"""Watches over raw HTTP: resourceVersions, namespaces and selectors, timeouts, expired history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import NS


async def next_event(lines: AsyncIterator[str]) -> tuple[str, str]:
    async with asyncio.timeout(5):
        line = await anext(lines)
    event = json.loads(line)
    return event["type"], event["object"]["metadata"]["name"]


async def test_watch_streams_events_after_a_resource_version(
    k8s_emulator: KubeEmulator, http: httpx.AsyncClient
) -> None:
    base = f"/api/v1/namespaces/{NS}/configmaps"
    assert (await http.post(base, json={"metadata": {"name": "before"}})).status_code == 201
    listed = (await http.get(base)).json()
    params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"]}
    async with http.stream("GET", base, params=params) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        await http.post(base, json={"metadata": {"name": "one"}})
        assert await next_event(lines) == ("ADDED", "one")  # not "before": only events after the RV
        await http.patch(
            f"{base}/one", json={"data": {"a": "b"}}, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert await next_event(lines) == ("MODIFIED", "one")
        k8s_emulator.patch_object("configmaps", "one", {"data": {"a": "c"}}, NS)  # as if from another client
        assert await next_event(lines) == ("MODIFIED", "one")
        await http.delete(f"{base}/one")
        assert await next_event(lines) == ("DELETED", "one")

    async with http.stream("GET", base, params={"watch": "true"}) as fresh:
        assert await next_event(fresh.aiter_lines()) == ("ADDED", "before")  # the current state, synthesised


async def test_watch_honours_namespace_and_label_selector(
    k8s_emulator: KubeEmulator, http: httpx.AsyncClient
) -> None:
    k8s_emulator.create_object("namespaces", {"metadata": {"name": "other"}})
    merge = {"Content-Type": "application/merge-patch+json"}
    params = {
        "watch": "true",
        "labelSelector": "app in (web)",
        "resourceVersion": str(k8s_emulator.resource_version),
    }
    async with (
        http.stream("GET", f"/api/v1/namespaces/{NS}/configmaps", params=params) as scoped,
        http.stream("GET", "/api/v1/configmaps", params=params) as everywhere,
    ):
        scoped_lines, all_lines = scoped.aiter_lines(), everywhere.aiter_lines()
        await http.post(
            f"/api/v1/namespaces/{NS}/configmaps", json={"metadata": {"name": "db", "labels": {"app": "db"}}}
        )
        await http.post(
            "/api/v1/namespaces/other/configmaps",
            json={"metadata": {"name": "far", "labels": {"app": "web"}}},
        )
        await http.post(
            f"/api/v1/namespaces/{NS}/configmaps",
            json={"metadata": {"name": "near", "labels": {"app": "web"}}},
        )
        assert await next_event(all_lines) == ("ADDED", "far")
        assert await next_event(all_lines) == ("ADDED", "near")
        assert await next_event(scoped_lines) == ("ADDED", "near")
        await http.patch(
            f"/api/v1/namespaces/{NS}/configmaps/db",
            json={"metadata": {"labels": {"app": "web"}}},
            headers=merge,
        )
        assert await next_event(scoped_lines) == ("ADDED", "db")  # started matching
        await http.patch(
            f"/api/v1/namespaces/{NS}/configmaps/db",
            json={"metadata": {"labels": {"app": "x"}}},
            headers=merge,
        )
        assert await next_event(scoped_lines) == ("DELETED", "db")  # stopped matching


async def test_watch_timeout_and_expired_history(k8s_emulator: KubeEmulator, http: httpx.AsyncClient) -> None:
    base = f"/api/v1/namespaces/{NS}/configmaps"
    old_rv = str(k8s_emulator.resource_version)
    async with asyncio.timeout(5):
        response = await http.get(
            base, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": old_rv}
        )
    assert response.status_code == 200
    assert response.text == ""

    await http.post(base, json={"metadata": {"name": "x"}})
    k8s_emulator.expire_watch_history()
    response = await http.get(base, params={"watch": "true", "resourceVersion": old_rv})
    event = json.loads(response.text.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
