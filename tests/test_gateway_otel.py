"""OTLP push from a real `routeiq gateway` to an OTLP/HTTP receiver in the test.

One 2-worker gateway serves the trace, log and metrics assertions; two 1-worker gateways show
an unreachable collector (one warning, every request served) and the `always_off` sampler.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from routeiq_router.gateway.otel import sampler
from routeiq_router.settings import TracesSampler
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.ports import free_port

pytestmark = pytest.mark.slow

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat-a, api_key: sk-mock, mock_response: "answer from a"}
    model_info: {id: chat-a}
  - model_name: chat
    litellm_params: {model: openai/chat-b, api_key: sk-mock, mock_response: "answer from b"}
    model_info: {id: chat-b}
"""
WAIT_SECONDS = 30.0


def _attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


class Receiver:
    """An OTLP/HTTP collector stand-in: decodes every export request and keeps what it got."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    receiver._traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": _attributes(span.attributes),
                            "resource": resource,
                        }
                    )
        with self.changed:
            self.spans.extend(found)
            self.changed.notify_all()

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        found = []
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points if kind else []
                    found.append(
                        {
                            "name": metric.name,
                            "unit": metric.unit,
                            "kind": kind,
                            "points": [(_attributes(p.attributes), p) for p in points],
                            "resource": resource,
                        }
                    )
        with self.changed:
            self.metrics.extend(found)
            self.changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, timeout), "the receiver did not get it in time"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(tmp_path: Path, workers: int, **env: str) -> GatewayProcess:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    process = GatewayProcess(
        ["--config", str(config), "--workers", str(workers)],
        free_port(),
        tmp_path / "gateway.log",
        gateway_environment(OTEL_BSP_SCHEDULE_DELAY="100", OTEL_METRIC_EXPORT_INTERVAL="300", **env),
    )
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    return process


def chat(process: GatewayProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a new connection (so that the kernel spreads them over the workers)."""
    response = httpx.post(
        f"{process.base_url}/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hello"}]},
        headers={"authorization": f"Bearer {MASTER_KEY}", **(headers or {})},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def log_lines(process: GatewayProcess) -> list[dict[str, Any]]:
    lines = []
    for line in process.log().splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict):
            lines.append(document)
    return lines


class Traced:
    def __init__(self, process: GatewayProcess, receiver: Receiver) -> None:
        self.process = process
        self.receiver = receiver


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    receiver = Receiver()
    process = start(
        tmp_path_factory.mktemp("otel"),
        2,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="gw-test",
        OTEL_TRACES_SAMPLER="parentbased_always_on",
    )
    try:
        yield Traced(process, receiver)
    finally:
        process.stop()
        receiver.close()


def test_traceparent_continues_into_the_server_and_decision_spans(traced: Traced) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = chat(traced.process, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert response.headers["x-routeiq-strategy"] == "round-robin"  # the decision headers stay
    assert "x-routeiq-decision-ms" in response.headers
    receiver = traced.receiver

    def spans() -> list[dict[str, Any]]:
        return [span for span in receiver.spans if span["trace_id"] == trace_id]

    receiver.wait_for(
        lambda: {"routeiq.routing.decision"} <= {s["name"] for s in spans()} and len(spans()) >= 2
    )
    (server,) = [s for s in spans() if s["kind"] == 2]  # one server span: RouteIQ's, not FastAPI's too
    assert server["parent_span_id"] == parent_id
    assert server["kind"] == 2  # SPAN_KIND_SERVER
    assert server["name"] == "POST /v1/chat/completions"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["resource"]["service.name"] == "gw-test"
    decision = next(s for s in spans() if s["name"] == "routeiq.routing.decision")
    assert decision["parent_span_id"] == server["span_id"]
    attributes = decision["attributes"]
    assert attributes["routeiq.strategy"] == "round-robin"
    assert attributes["routeiq.requested_strategy"] == "round-robin"
    assert attributes["routeiq.outcome"] == "routed"
    assert attributes["routeiq.model_group"] == "chat"
    assert attributes["routeiq.deployment.id"] in {"chat-a", "chat-b"}
    assert attributes["routeiq.deployment.model"] in {"openai/chat-a", "openai/chat-b"}
    assert attributes["routeiq.candidates_count"] == 2
    assert attributes["routeiq.duration_ms"] >= 0
    assert "routeiq.fallback_reason" not in attributes
    assert "routeiq.variant" not in attributes  # no A/B split running
    # a JSON log line written while the request was served carries its trace and span
    lines = [line for line in log_lines(traced.process) if line.get("trace_id") == trace_id]
    assert lines, traced.process.log()[-3000:]
    assert all(len(line["span_id"]) == 16 for line in lines)
    assert {line["span_id"] for line in lines} <= {s["span_id"] for s in spans()}


def test_each_worker_reports_its_own_service_instance(traced: Traced) -> None:
    receiver = traced.receiver

    def instances() -> set[str]:
        return {
            s["resource"]["service.instance.id"]
            for s in receiver.spans
            if s["name"] == "routeiq.routing.decision"
        }

    def server_spans() -> int:
        return len([s for s in receiver.spans if s["kind"] == 2])

    sent = 0
    while len(instances()) < 2:
        assert sent < 100, "every request went to one worker"
        served = server_spans()
        chat(traced.process)
        sent += 1
        receiver.wait_for(lambda served=served: server_spans() > served)  # type: ignore[misc]
    assert all(instance.rpartition("-")[2].isdigit() for instance in instances())  # <hostname>-<pid>


def test_routing_metrics_are_pushed(traced: Traced) -> None:
    chat(traced.process)
    receiver = traced.receiver

    def pushed(name: str) -> list[dict[str, Any]]:
        return [m for m in receiver.metrics if m["name"] == name and m["points"]]

    receiver.wait_for(
        lambda: (
            bool(pushed("routeiq.routing.decision.duration"))
            and bool(pushed("routeiq.routing.strategy.usage"))
        )
    )
    duration = pushed("routeiq.routing.decision.duration")[-1]
    assert duration["kind"] == "histogram"
    assert duration["unit"] == "s"
    labels, point = duration["points"][0]
    assert labels == {"strategy": "round-robin", "model_group": "chat"}
    assert point.count >= 1
    usage = pushed("routeiq.routing.strategy.usage")[-1]
    assert usage["kind"] == "sum"
    assert usage["points"][0][0] == {"strategy": "round-robin", "outcome": "routed"}
    assert duration["resource"]["service.name"] == "gw-test"


def test_an_unreachable_collector_warns_once_and_requests_succeed(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    process = start(
        tmp_path, 1, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}", OTEL_EXPORTER_OTLP_TIMEOUT="1"
    )
    try:
        for _ in range(5):
            chat(process, {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"})
        deadline = threading.Event()
        for _ in range(int(WAIT_SECONDS * 10)):
            if any("OTLP export failing" in str(line.get("message")) for line in log_lines(process)):
                break
            deadline.wait(0.1)
        for _ in range(5):
            chat(process)
    finally:
        process.stop()  # the last flush fails too
    assert process.process.returncode == 0
    warnings = [line for line in log_lines(process) if "OTLP export failing" in str(line.get("message"))]
    assert len(warnings) == 1, process.log()[-3000:]
    assert warnings[0]["level"] == "WARNING"
    assert "Failed to export" not in process.log()


def test_the_always_off_sampler_sends_no_spans(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        process = start(
            tmp_path, 1, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_TRACES_SAMPLER="always_off"
        )
        try:
            chat(process, {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"})
            receiver.wait_for(
                lambda: any(m["name"] == "routeiq.routing.strategy.usage" for m in receiver.metrics)
            )
        finally:
            process.stop()  # flushes whatever spans were queued
        assert receiver.spans == []
    finally:
        receiver.close()


def test_the_sampler_settings_name_the_sdk_samplers() -> None:
    assert sampler(TracesSampler.ALWAYS_ON, None).get_description() == "AlwaysOnSampler"
    assert sampler(TracesSampler.ALWAYS_OFF, None).get_description() == "AlwaysOffSampler"
    assert sampler(TracesSampler.TRACEIDRATIO, 0.25).get_description() == "TraceIdRatioBased{0.25}"
    assert (
        sampler(TracesSampler.PARENTBASED_TRACEIDRATIO, None)
        .get_description()
        .startswith("ParentBased{root:TraceIdRatioBased{1.0}")
    )
    assert "root:AlwaysOffSampler" in sampler(TracesSampler.PARENTBASED_ALWAYS_OFF, None).get_description()
