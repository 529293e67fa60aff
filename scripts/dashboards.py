"""RouteIQ's Grafana dashboards, generated from plain Python: gateway, experiments, operator.

Writes `deploy/grafana/<name>.json` and the same files into the operator chart
(`charts/routeiq-operator/dashboards/`, shipped as ConfigMaps for Grafana's dashboard sidecar
with `dashboards.enabled`). tests/test_dashboards.py fails when either copy is stale, and runs
every panel's query against a real Prometheus scraping a real gateway.

    .venv/bin/python scripts/dashboards.py

Every metric and label is one docs/observability.md lists. Queries use the template variables
`$namespace`, `$job`, `$pod` (gateway, operator), `$experiment` (experiments) and Grafana's
`$__rate_interval`.

Over 500 lines because it declares every panel of the three dashboards (its query, unit and
layout) in one reviewable place; the helpers that build them are a small part of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = (ROOT / "deploy" / "grafana", ROOT / "charts" / "routeiq-operator" / "dashboards")

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
GATEWAY = 'namespace=~"$namespace", job=~"$job", pod=~"$pod"'
OPERATOR = 'job=~"$job", pod=~"$pod"'
EXPERIMENT = 'namespace=~"$namespace", experiment=~"$experiment"'
RATE = "[$__rate_interval]"
WIDTH = 24


# ---- building blocks ---------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Json:
    out: Json = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        out.update(instant=True, range=False, format="table")
    return out


def rate(metric: str, selector: str, by: str, scale: str = "") -> str:
    return f"{scale}sum by ({by}) (rate({metric}{{{selector}}}{RATE}))"


def quantile(q: float, histogram: str, selector: str, by: str = "") -> str:
    grouping = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({grouping}) (rate({histogram}_bucket{{{selector}}}{RATE})))"


def quantiles(
    histogram: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[Json]:
    prefix = "".join(f"{{{{{label.strip()}}}}} " for label in by.split(",") if label.strip())
    return [
        target(quantile(q, histogram, selector, by), f"{prefix}p{round(q * 100)}", chr(ord("A") + index))
        for index, q in enumerate(qs)
    ]


def panel(
    title: str,
    targets: list[Json],
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    height: int = 8,
    description: str = "",
    **defaults: Any,
) -> Json:
    field: Json = {"unit": unit, **defaults}
    out: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": field, "overrides": []},
        "gridPos": {"w": width, "h": height},
        "options": {},
    }
    if kind == "timeseries":
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    return out


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": WIDTH, "h": 1}}


def layout(items: list[Json]) -> list[Json]:
    """Ids and positions, left to right, top to bottom."""
    x = y = line = 0
    for index, item in enumerate(items, start=1):
        grid = item["gridPos"]
        if x + grid["w"] > WIDTH:
            x, y = 0, y + line
            line = 0
        grid["x"], grid["y"] = x, y
        item["id"] = index
        x += grid["w"]
        line = max(line, grid["h"])
        if x >= WIDTH:
            x, y, line = 0, y + line, 0
    return items


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name: str, label: str, query: str, include_all: bool = True) -> Json:
    variable: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": include_all,
        "includeAll": include_all,
        "current": {},
        "hide": 0,
        "regex": "",
        "options": [],
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def dashboard(uid: str, title: str, description: str, variables: list[Json], items: list[Json]) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["routeiq"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["routeiq"],
                "asDropdown": True,
                "title": "RouteIQ",
                "includeVars": False,
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(items),
    }


# ---- the dashboards ------------------------------------------------------------------------------------

DURATION = "gen_ai_server_request_duration_seconds"
DECISION = "routeiq_routing_decision_duration_seconds"
STRATEGY = "routeiq_routing_strategy_usage_total"
SPLIT = "routeiq_ab_traffic_split_total"


def gateway() -> Json:
    variables = [
        query_variable("namespace", "Namespace", f"label_values({DURATION}_count, namespace)"),
        query_variable(
            "job", "Gateway (job)", f'label_values({DURATION}_count{{namespace=~"$namespace"}}, job)'
        ),
        query_variable(
            "pod", "Pod", f'label_values({DURATION}_count{{namespace=~"$namespace", job=~"$job"}}, pod)'
        ),
    ]
    errors = f'{GATEWAY}, error_type!=""'
    items = [
        row("Traffic"),
        panel(
            "Request rate by model group and provider",
            [
                target(
                    rate(f"{DURATION}_count", GATEWAY, "gen_ai_request_model, gen_ai_provider_name"),
                    "{{gen_ai_request_model}} / {{gen_ai_provider_name}}",
                )
            ],
            "reqps",
            description="Provider calls per second (a retry is a second call).",
        ),
        panel(
            "Request latency",
            quantiles(DURATION, GATEWAY),
            "s",
            description="p50, p95 and p99 of gen_ai_server_request_duration_seconds.",
        ),
        panel(
            "Error rate by model group",
            [
                target(
                    f"{rate(f'{DURATION}_count', errors, 'gen_ai_request_model')}"
                    f" / {rate(f'{DURATION}_count', GATEWAY, 'gen_ai_request_model')}",
                    "{{gen_ai_request_model}}",
                )
            ],
            "percentunit",
        ),
        panel(
            "Errors by type and deployment",
            [
                target(
                    rate(f"{DURATION}_count", errors, "error_type, routeiq_deployment"),
                    "{{error_type}} {{routeiq_deployment}}",
                )
            ],
            "reqps",
        ),
        panel(
            "p95 latency by model group",
            quantiles(DURATION, GATEWAY, "gen_ai_request_model", (0.95,)),
            "s",
        ),
        panel(
            "Streams: time to first token",
            quantiles("gen_ai_server_time_to_first_token_seconds", GATEWAY, qs=(0.5, 0.95)),
            "s",
        ),
        row("Routing"),
        panel(
            "Strategy distribution",
            [target(rate(STRATEGY, GATEWAY, "strategy, outcome"), "{{strategy}} {{outcome}}")],
            "ops",
            description="Decisions per second by strategy and outcome (routed or fallback_<reason>).",
        ),
        panel(
            "Fallbacks",
            [
                target(
                    rate(STRATEGY, f'{GATEWAY}, outcome=~"fallback_.*"', "strategy, outcome"),
                    "{{strategy}} {{outcome}}",
                )
            ],
            "ops",
        ),
        panel(
            "Routing decision latency",
            quantiles(DECISION, GATEWAY, "strategy", (0.5, 0.99)),
            "s",
        ),
        panel(
            "A/B split: actual share vs target weight",
            [
                target(
                    f"100 * {rate(SPLIT, GATEWAY, 'experiment, variant')}"
                    f" / ignoring (variant) group_left {rate(SPLIT, GATEWAY, 'experiment')}",
                    "{{experiment}} {{variant}} actual",
                ),
                target(
                    f"max by (experiment, variant) (routeiq_ab_target_weight{{{GATEWAY}}})",
                    "{{experiment}} {{variant}} target",
                    "B",
                ),
            ],
            "percent",
        ),
        panel(
            "Circuit breakers by state",
            [
                target(
                    f"sum by (model_group, state) (max by (model_group, deployment, state) "
                    f"(routeiq_circuit_breaker_state{{{GATEWAY}}}))",
                    "{{model_group}} {{state}}",
                )
            ],
            "short",
            description="Deployments whose breaker is in each state.",
        ),
        panel(
            "Open breakers",
            [
                target(
                    f'max by (model_group, deployment) (routeiq_circuit_breaker_state{{{GATEWAY}, state="open"}}) == 1',
                    instant=True,
                )
            ],
            kind="table",
        ),
        row("Tokens and cost"),
        panel(
            "Tokens per second",
            [
                target(
                    rate("gen_ai_client_token_usage_sum", GATEWAY, "gen_ai_request_model, gen_ai_token_type"),
                    "{{gen_ai_request_model}} {{gen_ai_token_type}}",
                )
            ],
            "short",
        ),
        panel(
            "Cost per hour",
            [
                target(
                    rate("routeiq_request_cost_usd_total", GATEWAY, "gen_ai_request_model", "3600 * "),
                    "{{gen_ai_request_model}}",
                )
            ],
            "currencyUSD",
        ),
        row("Pods"),
        panel(
            "Redis up",
            [target(f"min by (pod) (routeiq_redis_up{{{GATEWAY}}})", "{{pod}}")],
            width=6,
            min=0,
            max=1,
        ),
        panel(
            "Database up",
            [target(f"min by (pod) (routeiq_database_up{{{GATEWAY}}})", "{{pod}}")],
            width=6,
            min=0,
            max=1,
        ),
        panel(
            "Requests in flight",
            [target(f"sum by (pod) (routeiq_requests_in_flight{{{GATEWAY}}})", "{{pod}}")],
            width=6,
        ),
        panel(
            "Draining",
            [target(f"max by (pod) (routeiq_draining{{{GATEWAY}}})", "{{pod}}")],
            width=6,
            min=0,
            max=1,
        ),
        row("Models, cache and shared state"),
        panel(
            "Model loads",
            [
                target(
                    rate("routeiq_model_loads_total", GATEWAY, "strategy, result"), "{{strategy}} {{result}}"
                )
            ],
            "ops",
            width=8,
        ),
        panel(
            "Model load duration",
            quantiles("routeiq_model_load_duration_seconds", GATEWAY, "strategy", (0.95,)),
            "s",
            width=8,
        ),
        panel(
            "Embedding cache hit ratio",
            [
                target(
                    rate("routeiq_embedding_cache_requests_total", GATEWAY + ', result="hit"', "pod")
                    + " / "
                    + rate("routeiq_embedding_cache_requests_total", GATEWAY, "pod"),
                    "{{pod}}",
                )
            ],
            "percentunit",
            width=8,
        ),
        panel(
            "Shared-state propagation lag",
            quantiles("routeiq_state_propagation_lag_seconds", GATEWAY, qs=(0.5, 0.99)),
            "s",
        ),
    ]
    return dashboard(
        "routeiq-gateway",
        "RouteIQ / Gateway",
        "Traffic, latency, errors, routing decisions and pod state of RouteIQ gateways.",
        variables,
        items,
    )


def experiments() -> Json:
    samples = "routeiq_operator_experiment_samples"
    variables = [
        query_variable("namespace", "Namespace", f"label_values({samples}, namespace)"),
        query_variable(
            "experiment", "Experiment", f'label_values({samples}{{namespace=~"$namespace"}}, experiment)'
        ),
    ]

    def gauge(metric: str, by: str, extra: str = "") -> str:
        return f"max by ({by}) ({metric}{{{EXPERIMENT}{extra}}})"

    effect = "routeiq_operator_experiment_effect"
    items = [
        row("Experiments"),
        panel(
            "Samples per variant",
            [target(gauge(samples, "namespace, experiment, variant"), "{{experiment}} {{variant}}")],
            description="Requests counted for each variant at the experiment's last analysis.",
        ),
        panel(
            "Verdict",
            [
                target(
                    gauge("routeiq_operator_experiment_verdict", "namespace, experiment, verdict") + " == 1",
                    instant=True,
                )
            ],
            kind="table",
        ),
        panel(
            "Effect against the control, with its always-valid interval",
            [
                target(
                    gauge(effect, "namespace, experiment, variant", ', bound="estimate"'),
                    "{{experiment}} {{variant}}",
                ),
                target(
                    gauge(effect, "namespace, experiment, variant", ', bound="low"'),
                    "{{experiment}} {{variant}} low",
                    "B",
                ),
                target(
                    gauge(effect, "namespace, experiment, variant", ', bound="high"'),
                    "{{experiment}} {{variant}} high",
                    "C",
                ),
            ],
            width=WIDTH,
        ),
        panel(
            "p-value (always valid)",
            [
                target(
                    gauge("routeiq_operator_experiment_p_value", "namespace, experiment, variant"),
                    "{{experiment}} {{variant}}",
                )
            ],
            min=0,
            max=1,
        ),
        panel(
            "Guardrail breached",
            [
                target(
                    gauge("routeiq_operator_experiment_guardrail_breached", "namespace, experiment"),
                    "{{experiment}}",
                )
            ],
            min=0,
            max=1,
        ),
        row("Gateway traffic"),
        panel(
            "Requests per variant (gateways)",
            [
                target(
                    rate(SPLIT, 'namespace=~"$namespace", experiment=~"$experiment"', "experiment, variant"),
                    "{{experiment}} {{variant}}",
                )
            ],
            "reqps",
        ),
        panel(
            "Target weight per variant (gateways)",
            [
                target(
                    'max by (experiment, variant) (routeiq_ab_target_weight{namespace=~"$namespace", experiment=~"$experiment"})',
                    "{{experiment}} {{variant}}",
                )
            ],
            "percent",
        ),
    ]
    return dashboard(
        "routeiq-experiments",
        "RouteIQ / Experiments",
        "RoutingExperiments as the operator analyses them: samples, effect, p-value, verdict, guardrails.",
        variables,
        items,
    )


def operator() -> Json:
    reconciles = "routeiq_operator_reconciles_total"
    variables = [
        query_variable("job", "Operator (job)", f"label_values({reconciles}, job)"),
        query_variable("pod", "Pod", f'label_values({reconciles}{{job=~"$job"}}, pod)'),
        query_variable(
            "namespace", "Artifact namespace", "label_values(routeiq_operator_artifact_verified, namespace)"
        ),
    ]
    artifacts = f'{OPERATOR}, namespace=~"$namespace"'
    items = [
        row("Reconciliation"),
        panel(
            "Reconciles by kind and result",
            [target(rate(reconciles, OPERATOR, "kind, result"), "{{kind}} {{result}}")],
            "ops",
        ),
        panel(
            "Reconcile errors by kind",
            [target(rate(reconciles, f'{OPERATOR}, result="error"', "kind"), "{{kind}}")],
            "ops",
        ),
        panel(
            "Reconcile duration",
            quantiles("routeiq_operator_reconcile_duration_seconds", OPERATOR, "kind", (0.5, 0.95, 0.99)),
            "s",
        ),
        panel(
            "Children applied by kind",
            [target(rate("routeiq_operator_children_applied_total", OPERATOR, "kind"), "{{kind}}")],
            "ops",
        ),
        panel(
            "Kubernetes API errors",
            [
                target(
                    rate("routeiq_operator_api_errors_total", OPERATOR, "status, retryable"),
                    "{{status}} retryable={{retryable}}",
                )
            ],
            "ops",
            width=WIDTH,
        ),
        row("Model artifacts"),
        panel(
            "Artifacts verified",
            [
                target(
                    f"max by (namespace, artifact) (routeiq_operator_artifact_verified{{{artifacts}}})",
                    instant=True,
                )
            ],
            kind="table",
        ),
        panel(
            "Verified digests",
            [
                target(
                    f"max by (namespace, artifact, strategy, digest) (routeiq_operator_artifact_info{{{artifacts}}})",
                    instant=True,
                )
            ],
            kind="table",
        ),
    ]
    return dashboard(
        "routeiq-operator",
        "RouteIQ / Operator",
        "The RouteIQ operator: reconciles, their errors and duration, applied children, API errors, artifacts.",
        variables,
        items,
    )


def render() -> dict[str, str]:
    """File name -> JSON text, as shipped."""
    return {
        f"routeiq-{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in (("gateway", gateway), ("experiments", experiments), ("operator", operator))
    }


def main() -> int:
    files = render()
    for directory in OUTPUTS:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.json"):
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
