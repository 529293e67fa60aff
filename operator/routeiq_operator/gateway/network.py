"""How a gateway is reached and watched: its Service, its NetworkPolicy (ingress to the gateway
port, egress to DNS, HTTPS and the backing services) and its ServiceMonitor."""

from __future__ import annotations

from typing import Any

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.deployment import GATEWAY_PORT
from routeiq_operator.gateway.meta import child_metadata
from routeiq_operator.gateway.tiers import ResolvedGateway
from routeiq_operator.naming import child_name, selector_labels

__all__ = ["network_policy", "service", "service_monitor"]


def service(gateway: RouteIQGateway) -> dict[str, Any]:
    spec = gateway.spec
    name = gateway.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(gateway, child_name(name)),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
    if not resolved.network_policy:
        return None
    spec = gateway.spec.network_policy
    sources = (spec.ingress_from if spec else None) or []
    peers: list[dict[str, Any]] = []
    for source in sources:
        peer: dict[str, Any] = {}
        if source.namespace_selector is not None:
            peer["namespaceSelector"] = {"matchLabels": source.namespace_selector.match_labels}
        if source.pod_selector is not None:
            peer["podSelector"] = {"matchLabels": source.pod_selector.match_labels}
        peers.append(peer)
    if not peers:
        peers = [{"podSelector": {}}]  # any pod of this namespace
    egress_spec = spec.egress if spec and spec.egress else None
    egress: list[dict[str, Any]] = []
    if egress_spec is None or egress_spec.dns:
        egress.append(
            {
                "to": [{"namespaceSelector": {}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    if egress_spec is None or egress_spec.https:
        egress.append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
        )
    for service in (egress_spec.redis, egress_spec.postgres) if egress_spec else ():
        if service is None:
            continue
        target = (
            {"podSelector": {"matchLabels": service.pod_selector.match_labels}}
            if service.pod_selector is not None
            else {"ipBlock": {"cidr": service.cidr}}
        )
        egress.append({"to": [target], "ports": [{"protocol": "TCP", "port": service.port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(gateway, child_name(gateway.metadata.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(gateway.metadata.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]}],
            "egress": egress,
        },
    }


def service_monitor(gateway: RouteIQGateway) -> dict[str, Any] | None:
    """The ServiceMonitor for spec.observability.serviceMonitor, or None when it is not enabled."""
    spec = gateway.spec
    monitor = spec.observability.service_monitor if spec.observability else None
    if monitor is None or not monitor.enabled:
        return None
    name = gateway.metadata.name
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": child_metadata(gateway, child_name(name)),
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": monitor.interval}],
        },
    }
