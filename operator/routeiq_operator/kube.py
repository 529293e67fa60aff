"""The operator's access to the API server, through the official `kubernetes` client.

Children are written with server-side apply (field manager `routeiq-operator`, conflicts
forced: the operator owns what it renders); reads and deletes are plain REST calls. The
client is synchronous, so every call runs in a worker thread and never blocks kopf's loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from routeiq_operator.metrics import api_error
from routeiq_operator.naming import FIELD_MANAGER

__all__ = [
    "KIND_PATHS",
    "ClusterUnavailable",
    "KubeClient",
    "ResourcePath",
    "api_server_problem",
    "load_client",
]


@dataclass(frozen=True, slots=True)
class ResourcePath:
    group: str  # "" for the core group
    version: str
    plural: str

    def collection(self, namespace: str) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"


KIND_PATHS: dict[str, ResourcePath] = {
    "ServiceAccount": ResourcePath("", "v1", "serviceaccounts"),
    "ConfigMap": ResourcePath("", "v1", "configmaps"),
    "Secret": ResourcePath("", "v1", "secrets"),
    "Service": ResourcePath("", "v1", "services"),
    "Deployment": ResourcePath("apps", "v1", "deployments"),
    "HorizontalPodAutoscaler": ResourcePath("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ResourcePath("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": ResourcePath("networking.k8s.io", "v1", "networkpolicies"),
    "ExternalSecret": ResourcePath("external-secrets.io", "v1", "externalsecrets"),
    "ServiceMonitor": ResourcePath("monitoring.coreos.com", "v1", "servicemonitors"),
    "PrometheusRule": ResourcePath("monitoring.coreos.com", "v1", "prometheusrules"),
    "RouteIQGateway": ResourcePath("routeiq.io", "v1alpha1", "routeiqgateways"),
    "RoutingExperiment": ResourcePath("routeiq.io", "v1alpha1", "routingexperiments"),
    "ModelArtifact": ResourcePath("routeiq.io", "v1alpha1", "modelartifacts"),
}


class ClusterUnavailable(Exception):
    """No Kubernetes cluster to talk to; the message is one line for the user."""


def load_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG).

    Raises ClusterUnavailable, saying why in one line, when there is neither."""
    try:
        config.load_incluster_config()
    except config.ConfigException as in_cluster:
        # read KUBECONFIG now: the kubernetes package fixed its default path when it was imported
        path = os.environ.get("KUBECONFIG") or None
        try:
            config.load_kube_config(config_file=path)
        except config.ConfigException as error:
            raise ClusterUnavailable(
                f"no Kubernetes cluster configured: not in a pod ({in_cluster}) and no usable kubeconfig "
                f"at {path or '~/.kube/config'} ({_first_line(error)}); set KUBECONFIG or run in a pod"
            ) from None
        except Exception as error:  # a malformed file: name the kind of error, never the content
            raise ClusterUnavailable(
                f"no Kubernetes cluster configured: the kubeconfig at {path or '~/.kube/config'} cannot be "
                f"read ({type(error).__name__}); set KUBECONFIG or run in a pod"
            ) from None
    return client.ApiClient()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def api_server_problem(api: client.ApiClient, timeout: float) -> str | None:
    """None when the API server answers (any HTTP status: credentials are kopf's concern), else
    why not, in one line. One attempt, bounded by `timeout` seconds."""
    probe_config = copy.copy(api.configuration)
    probe_config.retries = 0  # one attempt: the caller decides when to try again
    with client.ApiClient(probe_config) as probe:
        try:
            client.VersionApi(probe).get_code(_request_timeout=(timeout, timeout))
        except ApiException:
            return None
        except urllib3.exceptions.HTTPError as error:
            reason = getattr(error, "reason", None) or error
            text = _first_line(reason)
            # urllib3: "<pool>: Failed to establish a new connection: [Errno 111] Connection refused"
            text = text.rpartition("Failed to establish a new connection: ")[2] or text
            timed_out = isinstance(reason, urllib3.exceptions.TimeoutError)
            # NewConnectionError derives from ConnectTimeoutError, but it is a refusal or a DNS failure
            if timed_out and not isinstance(reason, urllib3.exceptions.NewConnectionError):
                text = f"no answer within {timeout:g} s"
            return f"the Kubernetes API server at {probe_config.host} does not answer: {text}"
    return None


def _retryable(error: ApiException, what: str) -> Exception:
    # 409 (a concurrent writer), 429 and 5xx pass; kopf retries the handler after the delay
    status: int = error.status or 0
    retryable = status in {409, 429} or status >= 500
    api_error(status, retryable)
    if retryable:
        return kopf.TemporaryError(f"{what}: {status} {error.reason}", delay=5)
    return kopf.PermanentError(f"{what}: {status} {error.reason}: {_status_message(error.body)}")


def _status_message(body: Any) -> str:
    """The API server's own sentence from an error body (a Status object), not the whole JSON
    (which repeats the request's details); the first 500 characters of anything else."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        status = json.loads(text)
    except ValueError:
        return text[:500]
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) and message else text[:500]


class KubeClient:
    def __init__(self, api: client.ApiClient, crd_cache_seconds: float = 30.0) -> None:
        self.api = api
        # whether an optional CRD is installed changes rarely; asking on every pass would add reads
        self.crd_cache_seconds = crd_cache_seconds
        self._crds: dict[str, tuple[float, bool]] = {}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        def call() -> Any:
            return self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
            )

        return await asyncio.to_thread(call)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"{KIND_PATHS[kind].collection(namespace)}/{name}"
        try:
            result: dict[str, Any] = await self._call("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _retryable(error, f"reading {kind}/{name}") from error
        return result

    async def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        try:
            result = await self._call(
                "GET", KIND_PATHS[kind].collection(namespace), query=[("labelSelector", label_selector)]
            )
        except ApiException as error:
            if error.status == 404:  # the kind's CRD is not installed: nothing of it exists
                return []
            raise _retryable(error, f"listing {kind}") from error
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a whole desired object."""
        kind = manifest["kind"]
        metadata = manifest["metadata"]
        path = f"{KIND_PATHS[kind].collection(metadata['namespace'])}/{metadata['name']}"
        try:
            result: dict[str, Any] = await self._call(
                "PATCH",
                path,
                body=dict(manifest),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                content_type="application/apply-patch+yaml",
            )
        except ApiException as error:
            raise _retryable(error, f"applying {kind}/{metadata['name']}") from error
        return result

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        path = f"{KIND_PATHS[kind].collection(namespace)}/{name}"
        try:
            await self._call("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiException as error:
            if error.status != 404:
                raise _retryable(error, f"deleting {kind}/{name}") from error

    async def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of an object (not its status)."""
        path = f"{KIND_PATHS[kind].collection(namespace)}/{name}"
        try:
            result: dict[str, Any] = await self._call(
                "PATCH", path, body=dict(patch), content_type="application/merge-patch+json"
            )
        except ApiException as error:
            raise _retryable(error, f"patching {kind}/{name}") from error
        return result

    async def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        path = f"{KIND_PATHS[kind].collection(namespace)}/{name}/status"
        try:
            await self._call(
                "PATCH", path, body={"status": dict(status)}, content_type="application/merge-patch+json"
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing to report on
                raise _retryable(error, f"updating the status of {kind}/{name}") from error

    async def crd_exists(self, name: str) -> bool:
        cached = self._crds.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.crd_cache_seconds:
            return cached[1]
        try:
            await self._call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            exists = True
        except ApiException as error:
            if error.status != 404:
                raise _retryable(error, f"reading CRD {name}") from error
            exists = False
        self._crds[name] = (time.monotonic(), exists)
        return exists
