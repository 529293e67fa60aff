"""RouteIQ's alert rules, from one source: `alerts.yaml` beside this module (package data, so the
operator image carries it).

- `deploy/prometheus/routeiq-alerts.yaml`, what plain Prometheus users load, is written from it by
  `routeiq alerts --out deploy/prometheus` (`deploy_rules_text`; a test keeps it from going stale).
- `prometheus_rule` renders, for spec.observability.prometheusRule, a PrometheusRule `<name>-gateway`
  holding the gateway alert groups with every vector selector narrowed to this gateway's series:
  `namespace="<namespace>", job="<name>-gateway"` (the labels the gateway's ServiceMonitor gives
  every series it scrapes: the job is the Service's name). Nothing else in a rule changes.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.meta import child_metadata
from routeiq_operator.naming import child_name

__all__ = [
    "DEPLOY_FILE",
    "GATEWAY_GROUPS",
    "alert_groups",
    "deploy_rules_text",
    "prometheus_rule",
    "scope_expr",
    "scoped_groups",
]

SOURCE = "alerts.yaml"
DEPLOY_FILE = "routeiq-alerts.yaml"
# the groups whose series a gateway's pods expose (the others read kube-state-metrics and the operator)
GATEWAY_GROUPS = ("routeiq-gateway",)
GENERATED = (
    "# Generated from operator/routeiq_operator/gateway/alerts.yaml by `routeiq alerts --out deploy/prometheus`:\n"
    "# edit that file, then run the command.\n"
)

# what a PromQL expression is made of, as far as finding its vector selectors goes: strings, label
# matchers, range and subquery brackets, grouping clauses, numbers and durations are skipped
# whole; identifiers remain
_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"'
    r"|'(?:[^'\\]|\\.)*'"
    r"|\{[^}]*\}"
    r"|\[[^\]]*\]"
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    r"|[0-9][0-9A-Za-z_.]*"  # numbers and durations (offset 5m)
    r"|[A-Za-z_:][A-Za-z0-9_:]*"
)
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "atan2", "start", "end"}
)
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_CALL = re.compile(r"\s*\(")
_BRACE = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


@cache
def source_text() -> str:
    return files("routeiq_operator.gateway").joinpath(SOURCE).read_text(encoding="utf-8")


def alert_groups() -> list[dict[str, Any]]:
    """Every rule group of the source file (a fresh copy on each call)."""
    groups: list[dict[str, Any]] = yaml.safe_load(source_text())["groups"]
    return groups


def deploy_rules_text() -> str:
    """The text of deploy/prometheus/routeiq-alerts.yaml."""
    return GENERATED + source_text()


def scope_expr(expr: str, labels: dict[str, str]) -> str:
    """`expr` with `labels` (equality matchers) added to each of its vector selectors."""
    matchers = ", ".join(f'{name}="{value}"' for name, value in labels.items())
    out: list[str] = []
    position = 0
    for token in _TOKENS.finditer(expr):
        text = token.group()
        if not _IDENTIFIER.fullmatch(text):
            continue  # a string, matchers, a range or a grouping clause
        if text in _KEYWORDS or text in _AGGREGATIONS or _CALL.match(expr, token.end()):
            continue
        # a metric name, and the label matchers written right after it if any
        brace = _BRACE.match(expr, token.end())
        existing = brace.group(1).strip() if brace else ""
        clash = set(_MATCHER_LABEL.findall(existing)) & set(labels)
        if clash:
            raise ValueError(f"{text} already matches {sorted(clash)} in {expr!r}")
        out.append(expr[position : token.end()])
        out.append("{" + matchers + (f", {existing}" if existing else "") + "}")
        position = brace.end() if brace else token.end()
    out.append(expr[position:])
    return "".join(out)


def scoped_groups(namespace: str, job: str) -> list[dict[str, Any]]:
    """The gateway alert groups, each expression reading only the series of `job` in `namespace`."""
    labels = {"namespace": namespace, "job": job}
    groups = [group for group in alert_groups() if group["name"] in GATEWAY_GROUPS]
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = scope_expr(str(rule["expr"]), labels)
    return groups


def prometheus_rule(gateway: RouteIQGateway) -> dict[str, Any] | None:
    """The PrometheusRule for spec.observability.prometheusRule, or None when it is not enabled."""
    spec = gateway.spec
    wanted = spec.observability.prometheus_rule if spec.observability else None
    if wanted is None or not wanted.enabled:
        return None
    name = child_name(gateway.metadata.name)  # the Service's name: the job of its scraped series
    metadata = child_metadata(gateway, name)
    metadata["labels"] = {**(wanted.labels or {}), **metadata["labels"]}  # ours win: they select it
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": scoped_groups(gateway.metadata.namespace, name)},
    }
