"""The routing decision of the request being served, for response headers and logs.

The gateway's ASGI middleware opens a `DecisionSlot` for each HTTP request; the routing
strategy writes into it. The slot is a mutable object placed in a context variable before
the request runs, so a decision made in a task LiteLLM spawns (which copies the context)
still lands in the same slot.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Decision", "DecisionSlot", "open_slot", "record"]


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
