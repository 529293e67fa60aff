"""How a gateway is reached and watched: its Service (the gateway port and the metrics port), its
NetworkPolicy (ingress to the gateway port from the allowed sources and to the metrics port from
the scrapers; egress to DNS, HTTPS, the backing services and the OTLP collector) and its
ServiceMonitor (the metrics port)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from routeiq_operator.gateway.api import IngressSource, RouteIQGateway
from routeiq_operator.gateway.deployment import GATEWAY_PORT, METRICS_PORT
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
            "ports": [
                {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def _peers(sources: list[IngressSource] | None) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    for source in sources or []:
        peer: dict[str, Any] = {}
        if source.namespace_selector is not None:
            peer["namespaceSelector"] = {"matchLabels": source.namespace_selector.match_labels}
        if source.pod_selector is not None:
            peer["podSelector"] = {"matchLabels": source.pod_selector.match_labels}
        peers.append(peer)
    return peers


def _otlp_port(gateway: RouteIQGateway) -> int | None:
    """The port of spec.observability.openTelemetry.endpoint (the scheme's when the URL names none)."""
    telemetry = gateway.spec.observability.open_telemetry if gateway.spec.observability else None
    if telemetry is None or telemetry.endpoint is None:
        return None
    parts = urlsplit(telemetry.endpoint)
    return parts.port or (443 if parts.scheme == "https" else 80)


def network_policy(gateway: RouteIQGateway, resolved: ResolvedGateway) -> dict[str, Any] | None:
    if not resolved.network_policy:
        return None
    spec = gateway.spec.network_policy
    # unset: any pod of this namespace may call the gateway, any pod of any namespace may scrape it
    peers = _peers(spec.ingress_from if spec else None) or [{"podSelector": {}}]
    scrapers = _peers(spec.scrape_from if spec else None) or [{"namespaceSelector": {}}]
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
    collector = _otlp_port(gateway)
    https_allowed = egress_spec is None or egress_spec.https
    if collector is not None and not (collector == 443 and https_allowed):
        # the OTLP collector: metrics and traces are pushed there
        egress.append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": collector}]}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(gateway, child_name(gateway.metadata.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(gateway.metadata.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": peers, "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]},
                {"from": scrapers, "ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
            ],
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
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": monitor.interval}],
        },
    }
