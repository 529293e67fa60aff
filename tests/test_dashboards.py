"""RouteIQ's Grafana dashboards (scripts/dashboards.py) and Prometheus Adapter rules, checked
against the metrics contract and run against a real Prometheus scraping a real gateway.

Fast checks: the shipped JSON (deploy/grafana/ and the operator chart's copies) is what the
generator writes; every metric and label a panel reads is one docs/observability.md lists; the
adapter rules serve exactly the Pods metrics the operator's HPA asks for.

The slow test starts a 2-worker `routeiq gateway` in front of a fake OpenAI upstream and a real
`prometheus` (loopback, temporary TSDB, 1 s scrapes) that scrapes the gateway's metrics port as
two pods of one namespace and job (the same port twice, so per-pod grouping is visible), sends a
bounded load, and runs every panel's and every template variable's query, and each adapter
metricsQuery expanded for the pods: none is rejected, and the panels the scenario exercises
return data. No operator is scraped here: the operator and experiment dashboards' queries must
parse and run, their results are empty.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from scripts import dashboards

from tests.fake_openai import fake_openai
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.operator.gateway_render import build, by_kind
from tests.ports import free_port
from tests.test_alert_rules import (
    TARGET_LABELS,
    documented_metrics,
    label_names,
    metric_names,
)

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
CHART_COPIES = ROOT / "charts" / "routeiq-operator" / "dashboards"
ADAPTER_RULES = ROOT / "deploy" / "prometheus-adapter" / "rules.yaml"
OBSERVABILITY = ROOT / "docs" / "observability.md"
OPERATOR_DOCS = ROOT / "docs" / "operator.md"

NAMESPACE = "routeiq-test"
JOB = "routeiq-gateway"
PODS = ("gateway-0", "gateway-1")
# what Grafana puts in place of the template variables (a multi-value selection is a regex)
VARIABLES = {
    "routeiq-gateway": {"namespace": NAMESPACE, "job": JOB, "pod": "|".join(PODS)},
    "routeiq-experiments": {"namespace": NAMESPACE, "experiment": ".*"},
    "routeiq-operator": {"job": "routeiq-operator", "pod": ".*", "namespace": ".*"},
}
RATE_INTERVAL = "1m"
# gateway panels this scenario (chat completions through round-robin) must fill
WITH_DATA = {
    "Request rate by model group and provider",
    "Request latency",
    "p95 latency by model group",
    "Strategy distribution",
    "Routing decision latency",
    "Tokens per second",
    "Requests in flight",
}
FIRST_LOAD, SECOND_LOAD = 6, 14
DEADLINE_SECONDS = 30.0
CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {{model: openai/chat-a, api_key: sk-fake, api_base: "{api_base}"}}
    model_info: {{id: chat-a}}
  - model_name: chat
    litellm_params: {{model: openai/chat-b, api_key: sk-fake, api_base: "{api_base}"}}
    model_info: {{id: chat-b}}
"""
VARIABLE_QUERY = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def shipped(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.json"))}


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of `$name` and `${name}` (and `$__rate_interval`)."""
    values = {**values, "__rate_interval": RATE_INTERVAL}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown template variable ${name} in {text}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def variable_promql(query: str) -> str:
    """`label_values(metric{...}, label)` as the PromQL that returns the same label values."""
    match = VARIABLE_QUERY.match(query)
    assert match, f"not a label_values() query: {query}"
    return f"group by ({match.group(2)}) ({match.group(1)})"


BOARDS = {name: json.loads(text) for name, text in dashboards.render().items()}


# ---- the shipped files --------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [GRAFANA, CHART_COPIES], ids=["deploy", "chart"])
def test_shipped_dashboards_are_the_generated_ones(directory: Path) -> None:
    assert shipped(directory) == dashboards.render(), (
        f"{directory.relative_to(ROOT)} is stale: run `.venv/bin/python scripts/dashboards.py`"
    )


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_structure(name: str) -> None:
    board = BOARDS[name]
    assert board["uid"] == name.removesuffix(".json")
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = set(VARIABLES[board["uid"]]) | {"datasource"}
    assert set(variables) == expected
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in all_panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    titles = [panel["title"] for panel in all_panels(board)]
    assert len(titles) == len(set(titles))


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in all_panels(board):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable_promql(variable["query"]["query"])


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboards_read_documented_metrics_and_labels(name: str) -> None:
    documented = documented_metrics(OBSERVABILITY.read_text())
    for title, expr in expressions(BOARDS[name]):
        metrics = metric_names(expr)
        assert metrics, f"{title}: reads no RouteIQ metric"
        assert metrics <= set(documented), f"{title}: undocumented {metrics - set(documented)}"
        allowed = TARGET_LABELS.union(*(documented[metric] for metric in metrics))
        assert label_names({"expr": expr}) <= allowed, f"{title}: {label_names({'expr': expr}) - allowed}"


def test_each_dashboard_reads_what_it_is_for() -> None:
    """The metrics each dashboard is there to show (a new metric needs a panel of its own choosing)."""
    wanted = {
        "routeiq-gateway.json": {
            "gen_ai_server_request_duration_seconds",
            "gen_ai_server_time_to_first_token_seconds",
            "gen_ai_client_token_usage",
            "routeiq_request_cost_usd_total",
            "routeiq_routing_strategy_usage_total",
            "routeiq_routing_decision_duration_seconds",
            "routeiq_ab_traffic_split_total",
            "routeiq_ab_target_weight",
            "routeiq_circuit_breaker_state",
            "routeiq_redis_up",
            "routeiq_database_up",
            "routeiq_requests_in_flight",
            "routeiq_draining",
            "routeiq_model_loads_total",
            "routeiq_model_load_duration_seconds",
            "routeiq_embedding_cache_requests_total",
            "routeiq_state_propagation_lag_seconds",
        },
        "routeiq-experiments.json": {
            "routeiq_operator_experiment_samples",
            "routeiq_operator_experiment_effect",
            "routeiq_operator_experiment_p_value",
            "routeiq_operator_experiment_verdict",
            "routeiq_operator_experiment_guardrail_breached",
        },
        "routeiq-operator.json": {
            "routeiq_operator_reconciles_total",
            "routeiq_operator_reconcile_duration_seconds",
            "routeiq_operator_children_applied_total",
            "routeiq_operator_api_errors_total",
            "routeiq_operator_artifact_verified",
            "routeiq_operator_artifact_info",
        },
    }
    for name, metrics in wanted.items():
        read = {
            re.sub(r"_(bucket|count|sum)$", "", metric)
            for _, expr in expressions(BOARDS[name])
            for metric in metric_names(expr)
        }
        assert metrics <= read, f"{name} reads none of {metrics - read}"


# ---- the Prometheus Adapter rules --------------------------------------------------------------------


def adapter_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    return rules


def hpa_pods_metrics() -> set[str]:
    """The Pods metrics the operator's HPA asks for, on a production-tier gateway."""
    hpa = by_kind(build(tier="production"))["HorizontalPodAutoscaler"]
    return {metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"}


def test_adapter_rules_serve_the_hpa_pods_metrics() -> None:
    rules = adapter_rules()
    assert {rule["name"]["as"] for rule in rules} == hpa_pods_metrics()
    documented = documented_metrics(OBSERVABILITY.read_text())
    for rule in rules:
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        series = re.match(r"^(\w+)\{", rule["seriesQuery"])
        assert series
        assert series.group(1) in documented
        assert re.fullmatch(rule["name"]["matches"], series.group(1))
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]


def expand(rule: dict[str, Any], pods: tuple[str, ...]) -> str:
    """The adapter's expansion of a metricsQuery for pods of NAMESPACE (Pods metrics group by pod)."""
    series = re.match(r"^(\w+)\{", rule["seriesQuery"])
    assert series
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    query: str = rule["metricsQuery"]
    return (
        query.replace("<<.Series>>", series.group(1))
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


# ---- the docs -----------------------------------------------------------------------------------------


def test_docs_describe_dashboards_and_the_adapter() -> None:
    text = OBSERVABILITY.read_text()
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    alerts = headings.index("Alerts")
    assert headings[alerts - 2 : alerts] == ["Dashboards", "HPA metrics through the Prometheus Adapter"]
    for name in BOARDS:
        assert f"deploy/grafana/{name}" in text
    assert "deploy/prometheus-adapter/rules.yaml" in text
    assert "deploy/prometheus-adapter/rules.yaml" in OPERATOR_DOCS.read_text()


# ---- a real Prometheus scraping a real gateway -----------------------------------------------------------


class Prometheus:
    def __init__(self, directory: Path, metrics_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not on PATH (Debian/Ubuntu: apt-get install prometheus)")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    # a ServiceMonitor's target labels, set statically: one port, seen as two pods
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{metrics_port}"],
                            "labels": {"namespace": NAMESPACE, "pod": pod},
                        }
                        for pod in PODS
                    ],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = directory / "prometheus.log"

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, self.log_path.read_text()[-4000:]
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, "prometheus ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result; fails on anything Prometheus rejects."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        assert response.status_code == 200, f"{promql}\n{response.status_code} {response.text}"
        body = response.json()
        assert body["status"] == "success", f"{promql}\n{body}"
        assert body["data"]["resultType"] == "vector", promql
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


def chat(base_url: str, count: int) -> None:
    for _ in range(count):
        # a client (a connection) per request, so that the kernel hands requests to both workers
        with openai.OpenAI(
            base_url=f"{base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30
        ) as client:
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A gateway under a bounded load, every request of it in Prometheus."""
    directory = tmp_path_factory.mktemp("dashboards")
    metrics_port = free_port()
    requests = (
        f'sum(gen_ai_server_request_duration_seconds_count{{namespace="{NAMESPACE}", pod="{PODS[0]}"}})'
    )
    with fake_openai({}) as api_base:
        (directory / "config.yaml").write_text(CONFIG.format(api_base=api_base))
        gateway = GatewayProcess(
            ["--config", str(directory / "config.yaml"), "--workers", "2"],
            free_port(),
            directory / "gateway.log",
            gateway_environment(ROUTEIQ_METRICS_PORT=str(metrics_port), TMPDIR=str(directory)),
        )
        prometheus = Prometheus(directory, metrics_port)
        try:
            prometheus.wait_ready()
            gateway.wait_ready()
            wait_until(lambda: prometheus.value(f'sum(up{{job="{JOB}"}})') == len(PODS), "both targets up")
            # two phases, so that every counter has a sample before and after an increase
            chat(gateway.base_url, FIRST_LOAD)
            wait_until(lambda: prometheus.value(requests) == FIRST_LOAD, "first load scraped")
            chat(gateway.base_url, SECOND_LOAD)
            wait_until(lambda: prometheus.value(requests) == FIRST_LOAD + SECOND_LOAD, "second load scraped")
            yield prometheus
        finally:
            prometheus.stop()
            gateway.stop()


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_query_runs_against_prometheus(scraped: Prometheus, name: str) -> None:
    board = BOARDS[name]
    values = VARIABLES[board["uid"]]
    empty: list[str] = []
    for panel in all_panels(board):
        for target in panel["targets"]:
            result = scraped.query(substitute(target["expr"], values))
            if not finite(result):
                empty.append(f"{panel['title']} [{target['refId']}]")
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            scraped.query(substitute(variable_promql(variable["query"]["query"]), values))
    if board["uid"] == "routeiq-gateway":
        titles = {panel["title"] for panel in all_panels(board)}
        assert titles >= WITH_DATA
        assert not [entry for entry in empty if entry.split(" [")[0] in WITH_DATA], empty


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_gateway_variables_list_the_scraped_labels(scraped: Prometheus) -> None:
    board = BOARDS["routeiq-gateway.json"]
    found = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            promql = substitute(variable_promql(variable["query"]["query"]), VARIABLES["routeiq-gateway"])
            found[variable["name"]] = {sample["metric"][variable["name"]] for sample in scraped.query(promql)}
    assert found == {"namespace": {NAMESPACE}, "job": {JOB}, "pod": set(PODS)}
    # and a query Prometheus rejects fails the check (what every panel's query is held to)
    with pytest.raises(AssertionError, match="400"):
        scraped.query("sum by (pod) (rate(routeiq_requests_in_flight[1m])")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_adapter_queries_return_a_value_per_pod(scraped: Prometheus) -> None:
    for rule in adapter_rules():
        # the adapter discovers series with the seriesQuery (the series API)
        response = httpx.get(
            f"{scraped.url}/api/v1/series", params={"match[]": rule["seriesQuery"]}, timeout=10
        )
        assert response.status_code == 200, response.text
        assert {(s["namespace"], s["pod"]) for s in response.json()["data"]} == {
            (NAMESPACE, pod) for pod in PODS
        }
        result = scraped.query(expand(rule, PODS))
        values = {sample["metric"]["pod"]: float(sample["value"][1]) for sample in result}
        assert set(values) == set(PODS), (rule["name"]["as"], result)
        assert all(math.isfinite(value) and value > 0 for value in values.values()), (
            rule["name"]["as"],
            values,
        )
        # one pod asked for, one value
        (only,) = scraped.query(expand(rule, PODS[:1]))
        assert only["metric"]["pod"] == PODS[0]
