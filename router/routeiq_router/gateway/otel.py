"""OTLP/HTTP push of traces and metrics from one gateway worker (`OTEL_EXPORTER_OTLP_ENDPOINT`).

`configure_otel(settings)` runs once per worker (nothing without the endpoint) and installs, as
OpenTelemetry's global providers:

- a TracerProvider: resource `service.name` (`OTEL_SERVICE_NAME`), `service.instance.id`
  (`<hostname>-<pid>`, one per worker); the sampler of `OTEL_TRACES_SAMPLER` /
  `OTEL_TRACES_SAMPLER_ARG`; a BatchSpanProcessor (bounded queue: spans beyond it are dropped)
  pushing to `<endpoint>/v1/traces`;
- a MeterProvider with a PeriodicExportingMetricReader pushing to `<endpoint>/v1/metrics`
  (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s), and RouteIQ's routing instruments recorded on
  it (`routeiq_router.metrics.enable_otlp`).

Exports run in the SDK's background threads with a short HTTP timeout, so a slow or absent
collector never holds a request. The SDK's own per-batch error lines are silenced; instead one
warning says the collector cannot be reached, and one line says when exports succeed again.
`OtelPipeline.shutdown(deadline)` flushes what is queued, bounded by the deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from routeiq_router import metrics as routeiq_metrics
from routeiq_router.settings import RouteIQSettings, TracesSampler

__all__ = ["EXPORT_TIMEOUT_SECONDS", "OtelPipeline", "configure_otel", "sampler", "service_instance_id"]

logger = logging.getLogger("routeiq.otel")

EXPORT_TIMEOUT_SECONDS = 3.0  # one OTLP request, retries included (OTEL_EXPORTER_OTLP_TIMEOUT overrides)
MAX_QUEUE_SIZE = 2048  # spans waiting for export; more are dropped
SHUTDOWN_SECONDS = 3.0
# the SDK logs every failed batch and every retry; _ExportHealth says it once instead
_QUIET_LOGGERS = ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal")


def service_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def sampler(kind: TracesSampler, ratio: float | None) -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` names (`OTEL_TRACES_SAMPLER_ARG` is the ratio, default 1)."""
    rate = 1.0 if ratio is None else ratio
    match kind:
        case TracesSampler.ALWAYS_ON:
            return ALWAYS_ON
        case TracesSampler.ALWAYS_OFF:
            return ALWAYS_OFF
        case TracesSampler.TRACEIDRATIO:
            return TraceIdRatioBased(rate)
        case TracesSampler.PARENTBASED_ALWAYS_ON:
            return ParentBased(ALWAYS_ON)
        case TracesSampler.PARENTBASED_ALWAYS_OFF:
            return ParentBased(ALWAYS_OFF)
        case TracesSampler.PARENTBASED_TRACEIDRATIO:
            return ParentBased(TraceIdRatioBased(rate))


class _ExportHealth:
    """One warning when exports start failing (whatever the signal), one line when they all recover."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def report(self, signal: str, success: bool) -> None:
        with self._lock:
            was_failing = bool(self._failing)
            if success:
                self._failing.discard(signal)
            else:
                self._failing.add(signal)
            now_failing = bool(self._failing)
        if now_failing and not was_failing:
            logger.warning(
                "OTLP export failing: the collector does not accept traces or metrics; they are "
                "dropped until it does (requests are not affected; this is said once)",
                extra={"endpoint": self.endpoint, "signal": signal},
            )
        elif was_failing and not now_failing:
            logger.info("OTLP export works again", extra={"endpoint": self.endpoint})


class _SpanExporter(OTLPSpanExporter):
    def __init__(self, health: _ExportHealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        self._health.report("traces", result is SpanExportResult.SUCCESS)
        return result


class _MetricExporter(OTLPMetricExporter):
    def __init__(self, health: _ExportHealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float | None = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = super().export(metrics_data, timeout_millis, **kwargs)
        self._health.report("metrics", result is MetricExportResult.SUCCESS)
        return result


def _signal_endpoint(base: str, signal: str) -> str:
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    return specific or f"{base.rstrip('/')}/v1/{signal}"


def _timeout(signal: str) -> float | None:
    if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
    ):
        return None  # the SDK reads them
    return EXPORT_TIMEOUT_SECONDS


class OtelPipeline:
    """This worker's tracer and meter providers (see the module docstring)."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def shutdown(self, deadline_seconds: float = SHUTDOWN_SECONDS) -> bool:
        """Flush and stop both providers within `deadline_seconds` (a collector that does not
        answer loses what is still queued); whether they finished in time."""

        def close() -> None:
            try:
                self.tracer_provider.shutdown()
                self.meter_provider.shutdown(timeout_millis=deadline_seconds * 1000)
            except Exception:  # shutting down must not fail the worker's exit
                logger.exception("OpenTelemetry shutdown failed")

        closing = threading.Thread(target=close, name="routeiq-otel-shutdown", daemon=True)
        closing.start()
        closing.join(deadline_seconds)
        return not closing.is_alive()


def configure_otel(settings: RouteIQSettings) -> OtelPipeline | None:
    """Install the worker's OTLP pipeline when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else None."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint is None:
        return None
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    health = _ExportHealth(endpoint)
    resource = Resource.create(
        {"service.name": settings.otel_service_name, "service.instance.id": service_instance_id()}
    )
    tracer_provider = TracerProvider(
        resource=resource,
        sampler=sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
        shutdown_on_exit=False,  # OtelPipeline.shutdown, bounded, at the end of the lifespan
    )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            _SpanExporter(health, endpoint=_signal_endpoint(endpoint, "traces"), timeout=_timeout("traces")),
            max_queue_size=MAX_QUEUE_SIZE,
        )
    )
    reader = PeriodicExportingMetricReader(
        _MetricExporter(health, endpoint=_signal_endpoint(endpoint, "metrics"), timeout=_timeout("metrics"))
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    routeiq_metrics.enable_otlp(meter_provider)
    logger.info(
        "OTLP export on",
        extra={
            "endpoint": endpoint,
            "service_name": settings.otel_service_name,
            "service_instance_id": resource.attributes.get("service.instance.id"),
            "sampler": str(settings.otel_traces_sampler),
        },
    )
    return OtelPipeline(tracer_provider, meter_provider)
