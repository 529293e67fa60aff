"""The operator's Prometheus metrics: one registry, served at `/metrics` on
`ROUTEIQ_OPERATOR_METRICS_PORT` (default 8081; 0 turns it off) by `routeiq operator`.

Passes (`main._pass`), applied children (the gateway controller), API errors (`kube`) are
counted where they happen. The experiment and artifact gauges are set from the status their
controller writes, so they say what `kubectl get` says, and are removed when the object is
deleted. Names and labels are a contract (alerts and dashboards build on them; see
docs/observability.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from threading import Thread
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

__all__ = [
    "DEFAULT_PORT",
    "PORT_VARIABLE",
    "REGISTRY",
    "VERDICTS",
    "MetricsServer",
    "api_error",
    "child_applied",
    "forget_artifact",
    "forget_experiment",
    "measure_pass",
    "port_from_env",
    "record_artifact",
    "record_experiment",
    "serve",
]

PORT_VARIABLE: Final = "ROUTEIQ_OPERATOR_METRICS_PORT"
# not 8080: that is the liveness endpoint's port (`routeiq operator --liveness-port`)
DEFAULT_PORT: Final = 8081
VERDICTS: Final = ("continue", "promote", "rollback", "inconclusive")
EFFECT_BOUNDS: Final = (("estimate", "effect"), ("low", "effectLow"), ("high", "effectHigh"))

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

RECONCILES = Counter(
    "routeiq_operator_reconciles",
    "Passes over an object, by its kind and whether the pass raised",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "routeiq_operator_reconcile_duration_seconds",
    "Time of one pass over an object (under its lock), by kind",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
CHILDREN_APPLIED = Counter(
    "routeiq_operator_children_applied",
    "Children of gateways written with server-side apply (only those that differed), by child kind",
    ["kind"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "routeiq_operator_api_errors",
    "Kubernetes API errors the operator did not expect, by HTTP status and whether they are retried",
    ["status", "retryable"],
    registry=REGISTRY,
)
EXPERIMENT_SAMPLES = Gauge(
    "routeiq_operator_experiment_samples",
    "Requests counted for a variant of a RoutingExperiment at its last analysis",
    ["namespace", "experiment", "variant"],
    registry=REGISTRY,
)
EXPERIMENT_EFFECT = Gauge(
    "routeiq_operator_experiment_effect",
    "A candidate's effect against the control: the estimate and its always-valid interval",
    ["namespace", "experiment", "variant", "bound"],
    registry=REGISTRY,
)
EXPERIMENT_P_VALUE = Gauge(
    "routeiq_operator_experiment_p_value",
    "A candidate's always-valid p-value against the control",
    ["namespace", "experiment", "variant"],
    registry=REGISTRY,
)
EXPERIMENT_VERDICT = Gauge(
    "routeiq_operator_experiment_verdict",
    "1 for the experiment's current verdict (continue while it runs), 0 for the others",
    ["namespace", "experiment", "verdict"],
    registry=REGISTRY,
)
EXPERIMENT_GUARDRAIL = Gauge(
    "routeiq_operator_experiment_guardrail_breached",
    "1 when a guardrail of the experiment was breached (it rolled back), else 0",
    ["namespace", "experiment"],
    registry=REGISTRY,
)
ARTIFACT_VERIFIED = Gauge(
    "routeiq_operator_artifact_verified",
    "1 when the ModelArtifact is verified (Ready), 0 when it was refused, failed or is not verified yet",
    ["namespace", "artifact"],
    registry=REGISTRY,
)
ARTIFACT_INFO = Gauge(
    "routeiq_operator_artifact_info",
    "1 for the ModelArtifact's verified digest (the one gateways roll to) and its strategy",
    ["namespace", "artifact", "digest", "strategy"],
    registry=REGISTRY,
)
_EXPERIMENT_GAUGES: Final = (
    EXPERIMENT_SAMPLES,
    EXPERIMENT_EFFECT,
    EXPERIMENT_P_VALUE,
    EXPERIMENT_VERDICT,
    EXPERIMENT_GUARDRAIL,
)


# -- passes, children, API errors ------------------------------------------------------------------


@contextmanager
def measure_pass(kind: str) -> Iterator[None]:
    """Time one pass over an object of `kind`; a pass that raises counts as `error`."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - start)
        RECONCILES.labels(kind=kind, result=result).inc()


def child_applied(kind: str) -> None:
    CHILDREN_APPLIED.labels(kind=kind).inc()


def api_error(status: int, retryable: bool) -> None:
    API_ERRORS.labels(status=str(status), retryable=str(retryable).lower()).inc()


# -- experiments -----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def record_experiment(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """The experiment's gauges as `status` (the one its controller wrote) says. Before its first
    analysis it has none; a variant or bound status does not report has no series."""
    forget_experiment(namespace, name)
    if not status.get("lastAnalysisTime"):
        return
    for item in status.get("variants") or []:
        variant = str(item.get("name"))
        requests = _number(item.get("requests"))
        if requests is not None:
            EXPERIMENT_SAMPLES.labels(namespace, name, variant).set(requests)
        p_value = _number(item.get("pValue"))
        if p_value is not None:
            EXPERIMENT_P_VALUE.labels(namespace, name, variant).set(p_value)
        for bound, key in EFFECT_BOUNDS:
            value = _number(item.get(key))
            if value is not None:
                EXPERIMENT_EFFECT.labels(namespace, name, variant, bound).set(value)
    current = str(status.get("verdict") or "continue")
    for verdict in (*VERDICTS, *([] if current in VERDICTS else [current])):
        EXPERIMENT_VERDICT.labels(namespace, name, verdict).set(1 if verdict == current else 0)
    breached = any(
        c.get("type") == "Degraded" and c.get("status") == "True" and c.get("reason") == "GuardrailBreached"
        for c in status.get("conditions") or []
    )
    EXPERIMENT_GUARDRAIL.labels(namespace, name).set(1 if breached else 0)


def forget_experiment(namespace: str, name: str) -> None:
    for gauge in _EXPERIMENT_GAUGES:
        gauge.remove_by_labels({"namespace": namespace, "experiment": name})


# -- artifacts -------------------------------------------------------------------------------------


def record_artifact(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """verified: 1 when Ready, else 0; info: 1 for the verified digest (none without one)."""
    ARTIFACT_VERIFIED.labels(namespace, name).set(1 if status.get("phase") == "Ready" else 0)
    ARTIFACT_INFO.remove_by_labels({"namespace": namespace, "artifact": name})
    digest = status.get("digest")
    if status.get("phase") == "Ready" and digest:
        ARTIFACT_INFO.labels(namespace, name, str(digest), str(status.get("strategy") or "")).set(1)


def forget_artifact(namespace: str, name: str) -> None:
    for gauge in (ARTIFACT_VERIFIED, ARTIFACT_INFO):
        gauge.remove_by_labels({"namespace": namespace, "artifact": name})


# -- the endpoint ----------------------------------------------------------------------------------


class MetricsServer:
    """The running `/metrics` endpoint (prometheus_client's HTTP server, in a daemon thread)."""

    def __init__(self, server: WSGIServer, thread: Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def port_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """`ROUTEIQ_OPERATOR_METRICS_PORT`: 0 (off) to 65535; ValueError naming the variable."""
    raw = environ.get(PORT_VARIABLE, "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_VARIABLE}={raw!r} is not a port number (0 turns metrics off)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_VARIABLE}={port} is out of range: 1-65535, or 0 to turn metrics off")
    return port


def serve(port: int, address: str = "0.0.0.0") -> MetricsServer | None:
    """Serve `/metrics` on `port` (None when 0); OSError naming the variable when it is taken."""
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=address, registry=REGISTRY)
    except OSError as error:
        raise OSError(
            error.errno, f"{PORT_VARIABLE}: cannot serve metrics on port {port}: {error.strerror}"
        ) from error
    return MetricsServer(server, thread)
