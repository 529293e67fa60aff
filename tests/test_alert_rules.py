"""RouteIQ's Prometheus alert rules (deploy/prometheus/), checked and unit-tested by promtool.

Every shipped rule file passes `promtool check rules` and its `promtool test rules` file; every
metric and label a rule reads is one docs/observability.md lists, so renaming a metric or a label
breaks this test instead of silently muting an alert; every alert has its runbook section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus"
DOCS = ROOT / "docs" / "observability.md"
RULE_FILES = sorted(path for path in RULES_DIR.glob("*.yaml") if not path.name.endswith(".test.yaml"))
TEST_FILES = sorted(RULES_DIR.glob("*.test.yaml"))
PROMTOOL_TIMEOUT_SECONDS = 120
RUNBOOK = "https://github.com/routeiq/routeiq/blob/main/docs/observability.md#"
ALERTS = {
    # RouteIQ's recommended alerts
    "RouteIQHighErrorRate",
    "RouteIQAllCircuitBreakersOpen",
    "RouteIQDatabaseUnreachable",
    "RouteIQPodCrashLooping",
    "RouteIQHighLatency",
    "RouteIQRedisUnreachable",
    "RouteIQABSplitSkew",
    # RouteIQ's own
    "RouteIQModelArtifactRefused",
    "RouteIQTrainedStrategyFallingBack",
    "RouteIQExperimentGuardrailBreached",
    "RouteIQModelArtifactVerificationFailed",
}
SEVERITIES = {"critical", "warning", "info"}
# the labels Prometheus gives every scraped series (a ServiceMonitor's target labels), and buckets' le
TARGET_LABELS = {"namespace", "job", "pod", "instance", "le"}
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")

METRIC_NAME = re.compile(r"\b(?:routeiq_\w+|gen_ai_\w+|kube_\w+)")
SELECTOR = re.compile(r"\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
TABLE_ROW = re.compile(r"^\| `(\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def docs_part(name: str) -> str:
    """The text between `<!-- name ... -->` and `<!-- /name -->` in docs/observability.md."""
    match = re.search(rf"<!-- {name}\b[^>]*-->(.*?)<!-- /{name} -->", DOCS.read_text(), re.DOTALL)
    assert match, f"docs/observability.md has no <!-- {name} --> part"
    return match.group(1)


def documented_metrics(text: str) -> dict[str, set[str]]:
    """Metric name -> its labels, from the metric tables (`| `name` | type | labels | ... |`);
    a histogram also stands for its _bucket, _count and _sum series."""
    metrics: dict[str, set[str]] = {}
    for name, kind, labels in TABLE_ROW.findall(text):
        names = [name, *(name + suffix for suffix in HISTOGRAM_SERIES)] if kind == "histogram" else [name]
        for series in names:
            metrics[series] = set(re.findall(r"`(\w+)`", labels))
    return metrics


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a mapping"
    return document


def alert_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label matchers and grouping clauses taken out first,
    since label names such as gen_ai_request_model look like metric names)."""
    return set(METRIC_NAME.findall(GROUPING.sub(" ", SELECTOR.sub(" ", expr))))


def label_names(rule: dict[str, Any]) -> set[str]:
    """The labels a rule matches, groups by or prints in its annotations."""
    expr = str(rule["expr"])
    labels = {label for selector in SELECTOR.findall(expr) for label in MATCHER_LABEL.findall(selector)}
    labels |= {
        label.strip() for clause in GROUPING.findall(expr) for label in clause.split(",") if label.strip()
    }
    labels |= {
        label for text in rule.get("annotations", {}).values() for label in TEMPLATE_LABEL.findall(text)
    }
    return labels


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH; scripts/test installs it (Debian/Ubuntu: apt-get install prometheus)"
        )
    return path


def run_promtool(promtool: str, *arguments: str) -> None:
    result = subprocess.run(
        [promtool, *arguments],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"promtool {' '.join(arguments)}:\n{result.stdout}\n{result.stderr}"


def test_rule_files_are_shipped() -> None:
    assert RULE_FILES, f"no rule file in {RULES_DIR}"
    assert {rule["alert"] for rule in alert_rules()} == ALERTS
    assert len(alert_rules()) == len(ALERTS), "an alert is defined twice"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules(promtool: str, rule_file: Path) -> None:
    run_promtool(promtool, "check", "rules", rule_file.name)


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda path: path.name)
def test_promtool_test_rules(promtool: str, test_file: Path) -> None:
    run_promtool(promtool, "test", "rules", test_file.name)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tested = {RULES_DIR / name for path in TEST_FILES for name in load_yaml(path)["rule_files"]}
    assert tested == set(RULE_FILES), "every rule file has a promtool test file naming it, and only those"
    cases = [
        case for path in TEST_FILES for test in load_yaml(path)["tests"] for case in test["alert_rule_test"]
    ]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fires == ALERTS, f"no case where it fires: {ALERTS - fires}"
    assert quiet == ALERTS, f"no case where it stays quiet: {ALERTS - quiet}"
    for case in cases:
        for alert in case.get("exp_alerts") or []:
            assert set(alert["exp_annotations"]) >= {"summary", "description", "runbook_url"}, case


def undocumented(rule: dict[str, Any], documented: dict[str, set[str]]) -> set[str]:
    """The metrics a rule reads, and the labels it uses, that docs/observability.md does not list."""
    metrics = metric_names(str(rule["expr"]))
    allowed = TARGET_LABELS.union(*(documented.get(name, set()) for name in metrics))
    return (metrics - set(documented)) | (label_names(rule) - allowed)


def reads_operator_metrics(rule: dict[str, Any]) -> bool:
    return any(name.startswith("routeiq_operator_") for name in metric_names(str(rule["expr"])))


def test_gateway_and_kubernetes_rules_read_documented_metrics_and_labels() -> None:
    documented = documented_metrics(DOCS.read_text())
    for rule in alert_rules():
        if not reads_operator_metrics(rule):
            assert not undocumented(rule, documented), f"{rule['alert']} reads what the docs do not list"


def test_operator_rules_read_documented_metrics_and_labels() -> None:
    if not documented_metrics(docs_part("operator-metrics")):
        pytest.skip("the operator-metrics part of docs/observability.md lists no metric yet")
    documented = documented_metrics(DOCS.read_text())
    rules = [rule for rule in alert_rules() if reads_operator_metrics(rule)]
    assert rules
    for rule in rules:
        assert not undocumented(rule, documented), f"{rule['alert']} reads what the docs do not list"


def test_alerts_carry_severity_annotations_and_a_runbook() -> None:
    anchors = {
        github_anchor(heading) for heading in re.findall(r"^#{2,6} (.+)$", docs_part("alerts"), re.MULTILINE)
    }
    for rule in alert_rules():
        alert = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, alert
        assert re.fullmatch(r"P[1-3]", rule["labels"]["priority"]), alert
        assert rule["annotations"]["summary"], alert
        assert rule["annotations"]["description"], alert
        assert rule["annotations"]["runbook_url"] == RUNBOOK + alert.lower()
        assert alert.lower() in anchors, f"docs/observability.md has no runbook section for {alert}"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda path: path.name)
def test_a_prometheus_rule_wraps_the_same_groups(rule_file: Path) -> None:
    """What docs/observability.md tells Prometheus Operator users to do: indent the file under spec."""
    header = "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: routeiq-alerts\nspec:\n"
    body = "".join(f"  {line}" for line in rule_file.read_text().splitlines(keepends=True))  # sed "s/^/  /"
    wrapped = yaml.safe_load(header + body)
    assert wrapped["spec"] == load_yaml(rule_file)
