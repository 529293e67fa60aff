"""What every child of a gateway shares: its metadata (name, namespace, labels, the owner
reference that garbage-collects it with the gateway) and the content digest of the checksums."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.naming import labels
from routeiq_operator.resource import GROUP, VERSION

__all__ = ["child_metadata", "content_digest"]


def child_metadata(gateway: RouteIQGateway, name: str) -> dict[str, Any]:
    meta = gateway.metadata
    metadata: dict[str, Any] = {"name": name, "namespace": meta.namespace, "labels": labels(meta.name)}
    if meta.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "RouteIQGateway",
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return metadata


def content_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
