"""Structured JSON logs on stdout for RouteIQ, uvicorn and LiteLLM alike.

A line written while a traced request is served carries its `trace_id` and `span_id` (hex, as
OpenTelemetry writes them) so that logs and traces join.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging"]

# LiteLLM's own loggers install a handler of their own; RouteIQ routes them through the root one.
_THIRD_PARTY = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "litellm_proxy_extras",
)
# Loggers kept at the gateway's level; LiteLLM's request loggers stay at WARNING unless debugging.
# litellm_proxy_extras reports the database migrations, once per start.
_AT_GATEWAY_LEVEL = ("uvicorn", "litellm_proxy_extras")


class _GatewayJsonFormatter(JsonFormatter):
    def __init__(self, service: str) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 in UTC with milliseconds: events of one second stay in order across workers
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add_fields(
        self, log_data: dict[str, object], record: logging.LogRecord, message_dict: dict[str, object]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["worker_id"] = os.getpid()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            log_data["trace_id"] = trace.format_trace_id(context.trace_id)
            log_data["span_id"] = trace.format_span_id(context.span_id)
        log_data.pop("color_message", None)
        log_data.pop("litellm_redacted", None)  # LiteLLM's marker that its secret filter ran


def configure_logging(
    level: str = "INFO", service: str = "routeiq-gateway", filters: Sequence[logging.Filter] = ()
) -> None:
    """Send every log record to stdout as one JSON object per line, through `filters`
    (in a worker: LiteLLM's secret redaction filter)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_GatewayJsonFormatter(service))
    for log_filter in filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _THIRD_PARTY:
        third_party = logging.getLogger(name)
        third_party.handlers.clear()
        third_party.propagate = True
        # LiteLLM logs every request at INFO; keep it at WARNING unless debugging
        third_party.setLevel(level if name.startswith(_AT_GATEWAY_LEVEL) or level == "DEBUG" else "WARNING")
