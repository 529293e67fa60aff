"""How a gateway is reached and watched: its NetworkPolicy, and a ServiceMonitor only with its CRD."""

from __future__ import annotations

import json
from typing import Any

from routeiq_operator.gateway.children import ClusterFacts
from routeiq_router.settings import load_settings
from tests.operator.gateway_render import build, by_kind, container, env


def test_service_monitor_only_with_its_crd() -> None:
    wanted = {"serviceMonitor": {"enabled": True}}
    assert "ServiceMonitor" in by_kind(build(observability=wanted))
    without = build(ClusterFacts(service_monitors=False), observability=wanted)
    assert "ServiceMonitor" not in by_kind(without)
    assert without.problems[0].reason == "ServiceMonitorsNotInstalled"


def test_network_policy_allows_dns_https_and_backing_services() -> None:
    policy = by_kind(
        build(
            tier="standard",
            networkPolicy={"egress": {"postgres": {"port": 5432, "cidr": "10.0.0.0/16"}}},
        )
    )["NetworkPolicy"]["spec"]
    ports = [(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]]
    assert ports == [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)]
    assert policy["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 4000}]
    assert json.dumps(policy).count("podSelector") >= 2


def test_the_metrics_port_is_served_exposed_scraped_and_admitted() -> None:
    """What the gateway serves (ROUTEIQ_METRICS_PORT, read by its own settings) is what the Service
    exposes, the ServiceMonitor scrapes and the NetworkPolicy admits."""
    state = build(tier="standard", observability={"serviceMonitor": {"enabled": True}})
    children = by_kind(state)
    settings = load_settings(
        {k: v for k, v in env(state).items() if isinstance(v, str) and k.startswith("ROUTEIQ_")}
    )
    ports = {p["name"]: p["containerPort"] for p in container(state)["ports"]}
    assert ports == {"http": settings.port, "metrics": settings.metrics_port}
    assert settings.metrics_port == 9464
    service_ports = {p["name"]: p for p in children["Service"]["spec"]["ports"]}
    assert service_ports["metrics"] == {
        "name": "metrics",
        "port": 9464,
        "targetPort": "metrics",
        "protocol": "TCP",
    }
    assert children["ServiceMonitor"]["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    ingress = children["NetworkPolicy"]["spec"]["ingress"]
    assert ingress[1] == {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 9464}]}
    # the gateway port keeps its own sources
    assert ingress[0] == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 4000}]}


def test_scrapers_are_restricted_by_scrape_from() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    policy = by_kind(build(tier="standard", networkPolicy={"scrapeFrom": [monitoring]}))["NetworkPolicy"]
    assert policy["spec"]["ingress"][1]["from"] == [monitoring]


def test_the_otlp_collector_is_reachable_when_an_endpoint_is_set() -> None:
    def egress_ports(endpoint: str | None, **egress: Any) -> list[int]:
        observability = {"openTelemetry": {"endpoint": endpoint}} if endpoint else {}
        policy = by_kind(
            build(tier="standard", observability=observability, networkPolicy={"egress": egress})
        )["NetworkPolicy"]
        return [port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]]

    assert egress_ports(None) == [53, 53, 443]
    assert egress_ports("http://otel-collector.monitoring:4318") == [53, 53, 443, 4318]
    assert egress_ports("http://otel-collector.monitoring") == [53, 53, 443, 80]
    # 443 is open already with egress.https, and gets its own rule without it
    assert egress_ports("https://otlp.example.com") == [53, 53, 443]
    assert egress_ports("https://otlp.example.com", https=False) == [53, 53, 443]
