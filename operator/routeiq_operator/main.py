"""The kopf registration layer: thin handlers that delegate to the controllers.

Importing this module registers the handlers with kopf; `routeiq operator` runs them.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import kopf

from routeiq_operator.api import GROUP, VERSION
from routeiq_operator.builders.gateway import FIELD_MANAGER, managed_selector
from routeiq_operator.gateway_controller import MANAGED_KINDS, forget, reconcile_gateway, refresh_status
from routeiq_operator.kube import KubeClient, load_client

__all__ = ["FINALIZER", "RESYNC_SECONDS"]

FINALIZER = "routeiq.io/finalizer"
# the drift timer: every gateway is re-applied this often (deleted or edited children come back)
RESYNC_SECONDS = float(os.environ.get("ROUTEIQ_OPERATOR_RESYNC_SECONDS", "60"))
GATEWAYS = (GROUP, VERSION, "routeiqgateways")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # long watches, bounded on both sides, so a silently dropped connection is noticed
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 20
    # peering: the replica with the highest priority is active; equal priorities would pause all
    settings.peering.priority = random.SystemRandom().randint(1, 2**31 - 1)
    # a newly installed optional CRD (External Secrets, Prometheus) is noticed within one drift pass
    memo.kube = KubeClient(load_client(), crd_cache_seconds=RESYNC_SECONDS)


@kopf.on.create(*GATEWAYS)
@kopf.on.update(*GATEWAYS)
@kopf.on.resume(*GATEWAYS)
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await reconcile_gateway(memo.kube, body, logger)


@kopf.timer(*GATEWAYS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def correct_drift(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await reconcile_gateway(memo.kube, body, logger)


@kopf.on.delete(*GATEWAYS)
async def delete_children(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # owner references let the garbage collector do this too; deleting here makes it immediate
    kube: KubeClient = memo.kube
    meta = body["metadata"]
    for kind in reversed(MANAGED_KINDS):
        for item in await kube.list(kind, meta["namespace"], managed_selector(meta["name"])):
            await kube.delete(kind, meta["namespace"], item["metadata"]["name"])
    forget(str(meta.get("uid")))
    logger.info("children deleted")


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": FIELD_MANAGER})
async def deployment_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """Replica counts and rollout conditions reach the gateway's status as they change."""
    owners = [
        ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("kind") == "RouteIQGateway"
    ]
    if not owners or type == "DELETED":
        return
    kube: KubeClient = memo.kube
    gateway = await kube.get("RouteIQGateway", body["metadata"]["namespace"], owners[0]["name"])
    if gateway is None or gateway["metadata"].get("deletionTimestamp"):
        return
    try:
        await refresh_status(kube, gateway, None, [])
    except ValueError:
        return  # an invalid spec: its own handler reports that, and there is no rollout to follow
