"""A real cluster behind the same small API the emulator offers the scenarios (tests/operator/scenarios.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

Obj = dict[str, Any]


class RealCluster:
    """get/list/create/patch/replace/delete/wait_for by resource name, as `KubeEmulator` has them."""

    # the controllers of a real cluster fill Deployment status; faults cannot be injected
    emulated = False

    def __init__(self, kubeconfig: str | None = None) -> None:
        config.load_kube_config(config_file=kubeconfig)
        self.api = client.ApiClient()
        self.dynamic = dynamic.DynamicClient(self.api)

    @staticmethod
    def reachable(kubeconfig: str | None = None) -> str | None:
        """None when a cluster answers, else why not (the e2e suite's skip reason)."""
        try:
            config.load_kube_config(config_file=kubeconfig)
            client.VersionApi(client.ApiClient()).get_code(_request_timeout=5)
        except Exception as error:  # any failure means: no cluster to test against
            return f"no Kubernetes cluster reachable through KUBECONFIG ({type(error).__name__}: {error})"
        return None

    def _resource(self, resource: str) -> Any:
        plural, _, group = resource.partition(".")
        for candidate in self.dynamic.resources.search(name=plural):
            if not group or candidate.group == group:
                return candidate
        raise KeyError(f"resource {resource!r} is not served")

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            found: Obj = self._resource(resource).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        return found

    def list_objects(
        self, resource: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[Obj]:
        items: list[Obj] = (
            self._resource(resource)
            .get(namespace=namespace, label_selector=label_selector)
            .to_dict()["items"]
        )
        return items

    def create_object(self, resource: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        namespace = namespace or body.get("metadata", {}).get("namespace")
        created: Obj = self._resource(resource).create(body=dict(body), namespace=namespace).to_dict()
        return created

    def patch_object(
        self, resource: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        patched: Obj = (
            self._resource(resource)
            .patch(
                body=dict(patch), name=name, namespace=namespace, content_type="application/merge-patch+json"
            )
            .to_dict()
        )
        return patched

    def replace_object(
        self, resource: str, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        replaced: Obj = (
            self._resource(resource).replace(body=dict(body), name=name, namespace=namespace).to_dict()
        )
        return replaced

    def delete_object(self, resource: str, name: str, namespace: str | None = None) -> None:
        try:
            self._resource(resource).delete(name=name, namespace=namespace)
        except (NotFoundError, ApiException) as error:
            if getattr(error, "status", 404) != 404:
                raise

    def wait_for(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,
    ) -> Obj | None:
        deadline = time.monotonic() + timeout * 6  # a real cluster is slower than the emulator
        while True:
            obj = self.get_object(resource, name, namespace)
            if condition(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource} {namespace}/{name} never met the condition; last: {obj!r}")
            time.sleep(0.5)
