"""A gateway's PrometheusRule: RouteIQ's gateway alerts from their one source (package data), each
expression scoped to the gateway's own series, rendered only with the Prometheus Operator's CRD.

The rendered rule is checked against the upstream PrometheusRule CRD schema (vendored in
tests/operator/schemas/), by `promtool check rules`, and by the shipped promtool unit tests re-run
against it: with the series labelled for this gateway the alerts fire as they do unscoped, with the
series labelled for another gateway (or namespace) none fires.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeiq_operator.gateway.alerts import (
    DEPLOY_FILE,
    GATEWAY_GROUPS,
    alert_groups,
    deploy_rules_text,
    scope_expr,
)
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, DesiredState, desired_children
from routeiq_operator.gateway.controller import MANAGED_KINDS, PROMETHEUS_RULES_CRD
from routeiq_operator.kube import KIND_PATHS
from tests.k8s.emulator.schemas import custom_schema, prune
from tests.k8s.emulator.validation import schema_causes
from tests.operator.gateway_render import BASE, by_kind

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
UPSTREAM_CRD = Path(__file__).parent / "schemas" / "monitoring.coreos.com_prometheusrules.yaml"
PROMTOOL_TIMEOUT_SECONDS = 120
# the promtool unit tests (deploy/prometheus/routeiq-alerts.test.yaml) label a gateway's series so
NAMESPACE, JOB = "ai", "gw"
# a metric name read by an expression (label names such as gen_ai_request_model are taken out first)
METRIC = re.compile(r"\b(?:routeiq_\w+|gen_ai_server_\w+)")
SELECTOR = re.compile(r"\{[^}]*\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")


def render(
    facts: ClusterFacts | None = None, name: str = "gw", namespace: str = "ai", **wanted: Any
) -> DesiredState:
    document = copy.deepcopy(BASE)
    document["metadata"].update(name=name, namespace=namespace)
    document["spec"]["observability"] = {"prometheusRule": {"enabled": True, **wanted}}
    return desired_children(RouteIQGateway.model_validate(document), facts or ClusterFacts())


def rule_of(state: DesiredState) -> dict[str, Any]:
    rule: dict[str, Any] = by_kind(state)["PrometheusRule"]
    return rule


def gateway_alerts() -> set[str]:
    return {
        rule["alert"]
        for group in alert_groups()
        if group["name"] in GATEWAY_GROUPS
        for rule in group["rules"]
    }


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return path


def run_promtool(promtool: str, directory: Path, *arguments: str) -> None:
    result = subprocess.run(
        [promtool, *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"promtool {' '.join(arguments)}:\n{result.stdout}\n{result.stderr}"


# ---- one source --------------------------------------------------------------------------------


def test_the_shipped_rule_file_is_generated_from_the_operators_source() -> None:
    shipped = (RULES_DIR / DEPLOY_FILE).read_text()
    assert shipped == deploy_rules_text(), (
        "deploy/prometheus is stale: run `routeiq alerts --out deploy/prometheus`"
    )
    assert yaml.safe_load(shipped)["groups"] == alert_groups()


def test_the_alerts_command_writes_the_shipped_file(tmp_path: Path) -> None:
    routeiq = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "routeiq"
    result = subprocess.run(
        [str(routeiq), "alerts", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == str(tmp_path / DEPLOY_FILE)
    assert (tmp_path / DEPLOY_FILE).read_text() == (RULES_DIR / DEPLOY_FILE).read_text()


# ---- the builder -------------------------------------------------------------------------------


def test_no_prometheus_rule_unless_enabled() -> None:
    document = copy.deepcopy(BASE)
    plain = desired_children(RouteIQGateway.model_validate(document), ClusterFacts())
    assert "PrometheusRule" not in by_kind(plain)
    assert "PrometheusRule" not in by_kind(render(enabled=False))


def test_prometheus_rule_only_with_its_crd() -> None:
    assert "PrometheusRule" in by_kind(render())
    without = render(ClusterFacts(prometheus_rules=False))
    assert "PrometheusRule" not in by_kind(without)
    (problem,) = without.problems
    assert (problem.condition, problem.reason) == ("MonitoringConfigured", "PrometheusRulesNotInstalled")
    assert PROMETHEUS_RULES_CRD in problem.message
    # without the Prometheus Operator, one condition tells of both
    document = copy.deepcopy(BASE)
    document["spec"]["observability"] = {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    }
    neither = desired_children(
        RouteIQGateway.model_validate(document), ClusterFacts(service_monitors=False, prometheus_rules=False)
    )
    (both,) = neither.problems
    assert (both.condition, both.reason) == ("MonitoringConfigured", "ServiceMonitorsNotInstalled")
    assert "ServiceMonitor CRD" in both.message
    assert "PrometheusRule CRD" in both.message
    assert {"ServiceMonitor", "PrometheusRule"}.isdisjoint(by_kind(neither))
    # the controller deletes one no longer wanted, and knows where it lives
    assert "PrometheusRule" in MANAGED_KINDS
    assert (
        KIND_PATHS["PrometheusRule"].collection("ai")
        == "/apis/monitoring.coreos.com/v1/namespaces/ai/prometheusrules"
    )


def test_prometheus_rule_is_named_labelled_and_owned_like_the_other_children() -> None:
    state = render(labels={"release": "prometheus", "app.kubernetes.io/name": "not-ours"})
    rule = rule_of(state)
    service = by_kind(state)["Service"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == service["metadata"]["name"] == "gw-gateway"
    assert rule["metadata"]["namespace"] == "ai"
    assert rule["metadata"]["ownerReferences"] == service["metadata"]["ownerReferences"]
    labels = rule["metadata"]["labels"]
    assert labels["release"] == "prometheus"  # for the Prometheus' ruleSelector
    assert {k: labels[k] for k in service["metadata"]["labels"]} == service["metadata"]["labels"]  # ours win


def test_every_expression_reads_only_this_gateways_series() -> None:
    rule = rule_of(render(name="chat", namespace="team-a"))
    assert [group["name"] for group in rule["spec"]["groups"]] == list(GATEWAY_GROUPS)
    scoped = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(scoped) == gateway_alerts()
    matchers = 'namespace="team-a", job="chat-gateway"'
    for group in alert_groups():
        for source in group["rules"]:
            if source["alert"] not in scoped:
                continue
            expr = str(scoped[source["alert"]]["expr"])
            bare = GROUPING.sub(" ", expr)
            selectors = re.findall(rf"({METRIC.pattern})(\{{[^}}]*\}})?", bare)
            assert selectors, source["alert"]
            for metric, selector in selectors:
                assert selector.startswith("{" + matchers), f"{source['alert']}: {metric}{selector}"
            # nothing else changed: take the matchers out again and the source's rule is back
            unscoped = expr.replace("{" + matchers + "}", "").replace(matchers + ", ", "")
            assert {**scoped[source["alert"]], "expr": unscoped} == source


def test_scope_expr_keeps_functions_aggregations_and_grouping_clauses() -> None:
    expr = 'sum by (job) (rate(a_total{x="1"}[5m])) / ignoring (x) group_left max(b) and on (job) c offset 5m'
    assert scope_expr(expr, {"namespace": "n", "job": "j"}) == (
        'sum by (job) (rate(a_total{namespace="n", job="j", x="1"}[5m])) / ignoring (x) group_left '
        'max(b{namespace="n", job="j"}) and on (job) c{namespace="n", job="j"} offset 5m'
    )
    with pytest.raises(ValueError, match="job"):
        scope_expr('up{job="other"}', {"job": "j"})


# ---- what Kubernetes and Prometheus accept -----------------------------------------------------


def test_prometheus_rule_validates_against_the_upstream_crd_schema() -> None:
    (crd,) = [doc for doc in yaml.safe_load_all(UPSTREAM_CRD.read_text()) if doc]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    raw = version["schema"]["openAPIV3Schema"]
    rule = rule_of(render(labels={"release": "prometheus"}))
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == ("monitoring.coreos.com", "PrometheusRule")
    assert schema_causes(custom_schema(raw).validator, rule) == []
    unknown: list[str] = []
    prune(copy.deepcopy(rule), raw, "", unknown, root=True)
    assert unknown == [], "fields the API server would prune"


def test_promtool_checks_the_rendered_rules(promtool: str, tmp_path: Path) -> None:
    rule = rule_of(render())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    run_promtool(promtool, tmp_path, "check", "rules", "rules.yaml")


def relabelled(tests: dict[str, Any], namespace: str, job: str, *, fires: bool) -> dict[str, Any]:
    """The shipped promtool tests of the gateway alerts, the gateway's series relabelled to
    `namespace`/`job`; the expected alerts relabelled likewise when `fires`, else none."""
    assert not fires or namespace == NAMESPACE, "a firing case renames the job only"
    kept = []
    for test in copy.deepcopy(tests["tests"]):
        if not {case["alertname"] for case in test["alert_rule_test"]} <= gateway_alerts():
            continue
        for series in test["input_series"]:
            series["series"] = (
                series["series"]
                .replace(f'namespace="{NAMESPACE}"', f'namespace="{namespace}"')
                .replace(f'job="{JOB}"', f'job="{job}"')
            )
        for case in test["alert_rule_test"]:
            if not fires:
                case["exp_alerts"] = []
            for alert in case.get("exp_alerts") or []:
                if alert["exp_labels"].get("job") == JOB:
                    alert["exp_labels"]["job"] = job
                # "ai/gw" names the gateway (namespace/job); "ai/gw-0" a pod, which keeps its name
                alert["exp_annotations"] = {
                    key: re.sub(rf"\b{NAMESPACE}/{JOB}\b(?!-)", f"{NAMESPACE}/{job}", text)
                    for key, text in alert["exp_annotations"].items()
                }
        kept.append(test)
    covered = {case["alertname"] for test in kept for case in test["alert_rule_test"]}
    assert covered == gateway_alerts(), "every gateway alert keeps its promtool test"
    return {**tests, "rule_files": ["rules.yaml"], "tests": kept}


@pytest.mark.parametrize(
    ("series_namespace", "series_job", "fires"),
    [
        ("ai", "gw-gateway", True),  # this gateway's series
        ("ai", "other-gateway", False),  # another gateway in the namespace
        ("team-b", "gw-gateway", False),  # a gateway of the same name elsewhere
    ],
    ids=["this-gateway", "another-gateway", "another-namespace"],
)
def test_the_shipped_promtool_tests_pass_against_the_scoped_rules(
    promtool: str, tmp_path: Path, series_namespace: str, series_job: str, fires: bool
) -> None:
    rule = rule_of(render(name="gw", namespace="ai"))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shipped = yaml.safe_load((RULES_DIR / "routeiq-alerts.test.yaml").read_text())
    tests = relabelled(shipped, series_namespace, series_job, fires=fires)
    (tmp_path / "rules.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    run_promtool(promtool, tmp_path, "test", "rules", "rules.test.yaml")
