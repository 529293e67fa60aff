"""How a gateway is reached and watched: its NetworkPolicy, and a ServiceMonitor only with its CRD."""

from __future__ import annotations

import json

from routeiq_operator.gateway.children import ClusterFacts
from tests.operator.gateway_render import build, by_kind


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
