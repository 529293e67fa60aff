"""The Redis an experiment runs on: its gateway's REDIS_URL, read as the gateway's pods get it,
and one client per URL shared by every experiment on it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from routeiq_operator.kube import KubeClient
from routeiq_operator.naming import child_name
from routeiq_operator.secrets import SecretError, read_secret, secret_text

__all__ = ["RedisPool", "gateway_redis_url"]


class RedisPool:
    """One client per Redis URL (a gateway's REDIS_URL), shared by every experiment on it."""

    def __init__(self, factory: Callable[[str], Redis] | None = None) -> None:
        self._factory = factory or (
            lambda url: Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        )
        self._clients: dict[str, Redis] = {}

    def client(self, url: str) -> Redis:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self._factory(url)
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _missing(error: SecretError) -> bool:
    """The Secret or its key is not there (rather than there with a value that is no URL)."""
    return error.reason in {"SecretNotFound", "SecretKeyNotFound"}


async def gateway_redis_url(kube: KubeClient, gateway: Mapping[str, Any]) -> tuple[str | None, str]:
    """The gateway's REDIS_URL as its pods get it, or None and why not (never the value)."""
    meta = gateway["metadata"]
    namespace = meta["namespace"]
    secrets = (gateway.get("spec") or {}).get("secrets") or {}
    ref = secrets.get("redisUrl")
    if ref:
        name, key = ref["name"], ref["key"]
        try:
            return secret_text(await read_secret(kube, namespace, name), key), ""
        except SecretError as error:
            if _missing(error):
                return None, f"Secret {name} (key {key}), the gateway's spec.secrets.redisUrl, not found"
            return None, f"Secret {name}, the gateway's spec.secrets.redisUrl: {error.detail}"
    external = secrets.get("externalSecret") or {}
    if any(item.get("secretKey") == "REDIS_URL" for item in external.get("data") or []):
        name = child_name(meta["name"], "secrets")
        try:
            return secret_text(await read_secret(kube, namespace, name), "REDIS_URL"), ""
        except SecretError as error:
            if _missing(error):
                return (
                    None,
                    f"Secret {name} (key REDIS_URL) has not been synced by the External Secrets Operator yet",
                )
            return None, f"Secret {name}, synced by the External Secrets Operator: {error.detail}"
    return None, (
        f"RouteIQGateway {meta['name']} has no Redis (spec.secrets.redisUrl): an experiment's split and "
        "counters are shared through Redis"
    )
