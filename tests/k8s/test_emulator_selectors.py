"""Label and field selectors, and list pagination."""

from __future__ import annotations

from typing import Any

import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.samples import NS


def test_label_and_field_selectors(api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for name, labels in {
        "a": {"app": "a", "tier": "web"},
        "b": {"app": "b"},
        "c": {"app": "c", "tier": "db"},
    }.items():
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names(label_selector="app=a") == ["a"]
    assert names(label_selector="app==b") == ["b"]
    assert names(label_selector="app!=a") == ["b", "c"]
    assert names(label_selector="app in (a, c)") == ["a", "c"]
    assert names(label_selector="app notin (a,c)") == ["b"]
    assert names(label_selector="tier") == ["a", "c"]
    assert names(label_selector="!tier") == ["b"]
    assert names(label_selector="tier,app=c") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert [
        cm.metadata.name for cm in core.list_config_map_for_all_namespaces(label_selector="app=c").items
    ] == ["c"]
    with pytest.raises(ApiException) as bad:
        names(label_selector="app in a")
    assert bad.value.status == 400
    page = core.list_namespaced_config_map(NS, limit=2)
    assert [cm.metadata.name for cm in page.items] == ["a", "b"]
    rest = core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
    assert [cm.metadata.name for cm in rest.items] == ["c"]
    assert rest.metadata._continue is None
    core.delete_collection_namespaced_config_map(NS, label_selector="tier")
    assert names() == ["b"]
