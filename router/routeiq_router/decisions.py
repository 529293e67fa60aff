"""The routing decision of the request being served, for response headers and logs.

The gateway's ASGI middleware opens a `DecisionSlot` for each HTTP request; the routing
strategy writes into it. The slot is a mutable object placed in a context variable before
the request runs, so a decision made in a task LiteLLM spawns (which copies the context)
still lands in the same slot.

It also holds the decision's span, `routeiq.routing.decision` (OpenTelemetry API only; the
gateway installs the SDK when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else every span is a
no-op): a child of the span current when the strategy runs, the request's server span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["SPAN_NAME", "Decision", "DecisionSlot", "decision_span", "open_slot", "record", "traced"]

SPAN_NAME = "routeiq.routing.decision"

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - an install without the gateway extra
    _trace = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Decision:
    strategy: str
    model_group: str
    deployment_id: str
    duration_ms: float
    variant: str | None = None


@dataclass(slots=True)
class DecisionSlot:
    decision: Decision | None = None


_SLOT: ContextVar[DecisionSlot | None] = ContextVar("routeiq_decision_slot", default=None)


def open_slot() -> DecisionSlot:
    """Start recording decisions for the current request; returns the slot to read afterwards."""
    slot = DecisionSlot()
    _SLOT.set(slot)
    return slot


def record(decision: Decision) -> None:
    """Keep the decision for the current request; the last one wins (retries, fallbacks)."""
    slot = _SLOT.get()
    if slot is not None:
        slot.decision = decision


@contextmanager
def decision_span() -> Iterator[Any]:
    """The `routeiq.routing.decision` span around one decision (current while it runs); an
    exception leaving it is recorded and sets the span's status to error."""
    if _trace is None:  # pragma: no cover
        yield None
        return
    tracer = _trace.get_tracer("routeiq_router.routing")
    with tracer.start_as_current_span(SPAN_NAME) as span:
        yield span


def traced(attributes: dict[str, str | int | float]) -> None:
    """Set `attributes` on the current span when it records (the decision span)."""
    if _trace is None:  # pragma: no cover
        return
    span = _trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
