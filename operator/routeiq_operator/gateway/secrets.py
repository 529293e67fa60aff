"""A gateway's Secrets: only ever references, nothing secret is rendered into a manifest.

The env that references spec.secrets' keys, the ExternalSecret that syncs spec.secrets.externalSecret
into `<name>-gateway-secrets`, and the checksum of every Secret the pods read, which rolls them when
one is rotated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.meta import child_metadata, content_digest
from routeiq_operator.gateway.models import ResolvedModel
from routeiq_operator.naming import child_name

__all__ = ["external_secret", "secret_env", "secrets_checksum"]


def _secret_env(name: str, ref: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def secret_env(gateway: RouteIQGateway) -> list[dict[str, Any]]:
    """The container env that references spec.secrets: the master key, Redis, the database, the
    provider keys."""
    env: list[dict[str, Any]] = []
    secrets = gateway.spec.secrets
    # secrets only ever as references: nothing secret is rendered into a manifest
    if secrets.master_key is not None:
        env.append(_secret_env("LITELLM_MASTER_KEY", secrets.master_key))
    if secrets.redis_url is not None:
        env.append(_secret_env("REDIS_URL", secrets.redis_url))
    if secrets.database_url is not None:
        env.append(_secret_env("DATABASE_URL", secrets.database_url))
    for provider in secrets.provider_keys or []:
        env.append(_secret_env(provider.env, provider.secret_key_ref))
    return env


def _referenced_secrets(gateway: RouteIQGateway, models: Mapping[str, ResolvedModel]) -> list[str]:
    secrets = gateway.spec.secrets
    refs = [secrets.master_key, secrets.redis_url, secrets.database_url]
    refs += [provider.secret_key_ref for provider in secrets.provider_keys or []]
    names = {ref.name for ref in refs if ref is not None}
    if secrets.external_secret is not None:
        names.add(child_name(gateway.metadata.name, "secrets"))
    # the models' credentials are read when a pod starts: a rotated one rolls the pods
    names |= {model.credentials_secret for model in models.values() if model.credentials_secret}
    return sorted(names)


def secrets_checksum(
    gateway: RouteIQGateway, models: Mapping[str, ResolvedModel], secret_versions: Mapping[str, str]
) -> str:
    """The digest of every referenced Secret's version (ClusterFacts.models, .secret_versions)."""
    return content_digest(
        {secret: secret_versions.get(secret, "") for secret in _referenced_secrets(gateway, models)}
    )


def external_secret(gateway: RouteIQGateway) -> dict[str, Any] | None:
    """The ExternalSecret for spec.secrets.externalSecret, or None when it is not set."""
    external = gateway.spec.secrets.external_secret
    if external is None:
        return None
    name = gateway.metadata.name
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": child_metadata(gateway, child_name(name, "secrets")),
        "spec": {
            "refreshInterval": external.refresh_interval,
            "secretStoreRef": {
                "name": external.secret_store_ref.name,
                "kind": external.secret_store_ref.kind,
            },
            "target": {"name": child_name(name, "secrets"), "creationPolicy": "Owner"},
            "data": [
                {
                    "secretKey": item.secret_key,
                    "remoteRef": {"key": item.remote_ref.key}
                    | ({"property": item.remote_ref.property} if item.remote_ref.property else {}),
                }
                for item in external.data
            ],
        },
    }
