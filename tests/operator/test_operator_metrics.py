"""routeiq_operator.metrics, the accounting of `main._pass`, the API error counter, the JSON log
formatter and the metrics port's start-up errors (no operator process)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import httpx
import kopf
import pytest
import typer
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from routeiq_operator import cli, main, metrics
from routeiq_operator.kube import _retryable
from routeiq_operator.logs import OperatorJsonFormatter
from routeiq_operator.references import ObjectRef
from tests.ports import free_port

REGISTRY = metrics.REGISTRY
app = typer.Typer()
cli.register(app)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def series(name: str, **labels: str) -> list[dict[str, str]]:
    wanted = set(labels.items())
    return [
        dict(s.labels)
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name and wanted <= set(s.labels.items())
    ]


# -- main._pass --------------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body


BODY = {"metadata": {"name": "gw", "namespace": "ns", "uid": "u-1"}}


def test_pass_counts_success_and_error_and_times_each_pass() -> None:
    ref = ObjectRef("RouteIQGateway", "ns", "gw")
    success = sample("routeiq_operator_reconciles_total", kind="RouteIQGateway", result="success")
    errors = sample("routeiq_operator_reconciles_total", kind="RouteIQGateway", result="error")
    timed = sample("routeiq_operator_reconcile_duration_seconds_count", kind="RouteIQGateway")

    async def ok(fresh: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def fail(fresh: dict[str, Any]) -> dict[str, Any]:
        raise kopf.TemporaryError("not yet", delay=1)

    asyncio.run(main._pass(FakeKube(BODY), ref, "u-1", ok))  # type: ignore[arg-type]
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(main._pass(FakeKube(BODY), ref, "u-1", fail))  # type: ignore[arg-type]
    # an object that is gone: a pass that did nothing, and did not fail
    asyncio.run(main._pass(FakeKube(None), ref, "u-1", fail))  # type: ignore[arg-type]

    assert sample("routeiq_operator_reconciles_total", kind="RouteIQGateway", result="success") == success + 2
    assert sample("routeiq_operator_reconciles_total", kind="RouteIQGateway", result="error") == errors + 1
    assert sample("routeiq_operator_reconcile_duration_seconds_count", kind="RouteIQGateway") == timed + 3


def test_api_errors_by_status_and_retryability() -> None:
    before = sample("routeiq_operator_api_errors_total", status="503", retryable="true")
    forbidden = sample("routeiq_operator_api_errors_total", status="403", retryable="false")
    assert isinstance(_retryable(ApiException(status=503, reason="Unavailable"), "x"), kopf.TemporaryError)
    assert isinstance(_retryable(ApiException(status=403, reason="Forbidden"), "x"), kopf.PermanentError)
    invalid = ApiException(status=422, reason="Unprocessable Entity")
    invalid.body = (
        '{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, '
        '"details": {"name": "gw-gateway", "kind": "Deployment", "causes": []}, '
        '"message": "Deployment.apps \\"gw-gateway\\" is invalid: spec.replicas: Invalid value: -1"}'
    )
    refused = _retryable(invalid, "apply Deployment gw-gateway")
    assert str(refused) == (
        'apply Deployment gw-gateway: 422 Unprocessable Entity: Deployment.apps "gw-gateway" is invalid: '
        "spec.replicas: Invalid value: -1"
    ), "the API server's sentence, not the whole Status"
    assert sample("routeiq_operator_api_errors_total", status="503", retryable="true") == before + 1
    assert sample("routeiq_operator_api_errors_total", status="403", retryable="false") == forbidden + 1


def test_children_applied_by_kind() -> None:
    before = sample("routeiq_operator_children_applied_total", kind="ConfigMap")
    metrics.child_applied("ConfigMap")
    assert sample("routeiq_operator_children_applied_total", kind="ConfigMap") == before + 1


# -- experiments ---------------------------------------------------------------------------------------


def status(verdict: str | None = None, guardrail: bool = False) -> dict[str, Any]:
    degraded = {"type": "Degraded", "status": "True" if guardrail else "False"}
    degraded["reason"] = "GuardrailBreached" if guardrail else "AsExpected"
    return {
        "lastAnalysisTime": "2026-12-02T10:00:00Z",
        "phase": "RolledBack" if verdict == "rollback" else "Running",
        **({"verdict": verdict} if verdict else {}),
        "variants": [
            {"name": "control", "requests": 700},
            {
                "name": "candidate",
                "requests": 300,
                "pValue": 0.02,
                "effect": -0.01,
                "effectLow": -0.02,
                "effectHigh": 0.0,
            },
        ],
        "conditions": [degraded],
    }


def test_experiment_gauges_follow_the_status_and_go_with_the_experiment() -> None:
    exp = {"namespace": "ns", "experiment": "unit"}
    metrics.record_experiment("ns", "unit", {"phase": "Pending"})
    assert series("routeiq_operator_experiment_verdict", **exp) == []  # never analysed: no series

    metrics.record_experiment("ns", "unit", status())
    assert sample("routeiq_operator_experiment_samples", **exp, variant="control") == 700
    assert sample("routeiq_operator_experiment_samples", **exp, variant="candidate") == 300
    assert sample("routeiq_operator_experiment_p_value", **exp, variant="candidate") == 0.02
    assert series("routeiq_operator_experiment_p_value", **exp, variant="control") == []
    bounds = {"estimate": -0.01, "low": -0.02, "high": 0.0}
    for bound, expected in bounds.items():
        assert (
            sample("routeiq_operator_experiment_effect", **exp, variant="candidate", bound=bound) == expected
        )
    assert sample("routeiq_operator_experiment_verdict", **exp, verdict="continue") == 1
    assert sample("routeiq_operator_experiment_verdict", **exp, verdict="rollback") == 0
    assert sample("routeiq_operator_experiment_guardrail_breached", **exp) == 0

    metrics.record_experiment("ns", "unit", status("rollback", guardrail=True))
    assert sample("routeiq_operator_experiment_verdict", **exp, verdict="rollback") == 1
    assert sample("routeiq_operator_experiment_verdict", **exp, verdict="continue") == 0
    assert sample("routeiq_operator_experiment_guardrail_breached", **exp) == 1

    metrics.record_experiment("ns", "other", status())
    metrics.forget_experiment("ns", "unit")
    for name in ("samples", "effect", "p_value", "verdict", "guardrail_breached"):
        assert series(f"routeiq_operator_experiment_{name}", **exp) == [], name
    assert series("routeiq_operator_experiment_samples", namespace="ns", experiment="other")
    metrics.forget_experiment("ns", "other")


# -- artifacts -----------------------------------------------------------------------------------------


def test_artifact_gauges_keep_only_the_digest_in_service() -> None:
    art = {"namespace": "ns", "artifact": "knn"}
    metrics.record_artifact("ns", "knn", {"phase": "Ready", "digest": "a" * 64, "strategy": "knn"})
    assert sample("routeiq_operator_artifact_verified", **art) == 1
    assert series("routeiq_operator_artifact_info", **art) == [{**art, "digest": "a" * 64, "strategy": "knn"}]

    metrics.record_artifact("ns", "knn", {"phase": "Ready", "digest": "b" * 64, "strategy": "knn"})
    assert series("routeiq_operator_artifact_info", **art) == [{**art, "digest": "b" * 64, "strategy": "knn"}]

    metrics.record_artifact("ns", "knn", {"phase": "Failed"})
    assert sample("routeiq_operator_artifact_verified", **art) == 0
    assert series("routeiq_operator_artifact_verified", **art) == [art]
    assert series("routeiq_operator_artifact_info", **art) == []

    metrics.forget_artifact("ns", "knn")
    assert series("routeiq_operator_artifact_verified", **art) == []


# -- the endpoint ----------------------------------------------------------------------------------


def test_port_from_env() -> None:
    assert metrics.port_from_env({}) == metrics.DEFAULT_PORT
    assert metrics.port_from_env({metrics.PORT_VARIABLE: "0"}) == 0
    assert metrics.port_from_env({metrics.PORT_VARIABLE: "9100"}) == 9100
    for bad in ("http", "70000", "-1"):
        with pytest.raises(ValueError, match=metrics.PORT_VARIABLE):
            metrics.port_from_env({metrics.PORT_VARIABLE: bad})


def test_serve_scrapes_and_a_busy_port_names_the_variable() -> None:
    assert metrics.serve(0) is None
    server = metrics.serve(free_port(), "127.0.0.1")
    assert server is not None
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert "# TYPE routeiq_operator_reconciles_total counter" in text
        assert "# TYPE routeiq_operator_reconcile_duration_seconds histogram" in text
        assert "process_resident_memory_bytes" in text
        with pytest.raises(
            OSError, match=f"{metrics.PORT_VARIABLE}: cannot serve metrics on port {server.port}"
        ):
            metrics.serve(server.port, "127.0.0.1")
    finally:
        server.close()


def test_operator_refuses_to_start_on_a_busy_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(metrics.PORT_VARIABLE, str(port))
        result = CliRunner().invoke(app, ["operator", "--standalone"])
    assert result.exit_code == 2, result.output
    assert f"{metrics.PORT_VARIABLE}: cannot serve metrics on port {port}" in result.output


def test_operator_refuses_the_liveness_port_for_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics.PORT_VARIABLE, "8080")
    result = CliRunner().invoke(app, ["operator", "--standalone", "--liveness-port", "8080"])
    assert result.exit_code == 2
    assert f"{metrics.PORT_VARIABLE}=8080 is the liveness port" in result.output


# -- JSON logs -------------------------------------------------------------------------------------


def test_json_log_lines_name_the_object() -> None:
    formatter = OperatorJsonFormatter()
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "split started", None, None)
    record.k8s_ref = {"apiVersion": "routeiq.io/v1alpha1", "kind": "RoutingExperiment", "namespace": "ns",
                      "name": "exp", "uid": "u"}  # fmt: skip
    record.k8s_skip = False
    record.settings = object()  # kopf's OperatorSettings: never logged
    line = json.loads(formatter.format(record))
    assert line["message"] == "split started"
    assert (line["level"], line["logger"], line["service"]) == ("INFO", "kopf.objects", "routeiq-operator")
    assert (line["kind"], line["namespace"], line["name"]) == ("RoutingExperiment", "ns", "exp")
    assert "timestamp" in line
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(line)

    plain = logging.LogRecord("kopf.reactor", logging.WARNING, __file__, 1, "watching", None, None)
    assert "namespace" not in json.loads(formatter.format(plain))
