"""Per-variant outcome counters in `ab:counters`: their field names, and reading them back.

One hash per gateway, integer fields only (HINCRBY), `<variant>:<counter>`:

| field | meaning |
|---|---|
| `<v>:assigned` | requests the cluster-wide split assigned since the weights last changed |
| `<v>:requests` | client requests served by the variant (each once, whatever the retries) |
| `<v>:errors` | of those, answered 5xx or 429, or broken off mid-response |
| `<v>:latency_ms_sum` | sum of the requests' latencies, milliseconds |
| `<v>:latency_bucket:<le>` | requests whose latency was at most `<le>` ms and above the previous bound (`inf` last) |
| `<v>:prompt_tokens`, `<v>:completion_tokens` | tokens of successful provider calls |
| `<v>:cost_microusd` | LiteLLM's response cost, in millionths of a US dollar |
| `<v>:cost_microusd_sq` | sum of the squares of each request's `cost_microusd` (the variance of the cost per request) |
| `<v>:feedback_count` | feedback scores clients reported for requests the variant served |
| `<v>:feedback_milli_sum`, `<v>:feedback_milli_sq` | their sum and sum of squares, each score in thousandths |

Buckets are not cumulative, so one request increments one bucket; `VariantCounters.quantile`
interpolates inside the bucket as Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS_MS", "VariantCounters", "bucket_label", "parse_counters"]

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    120000,
    math.inf,
)


def bucket_label(latency_ms: float) -> str:
    """The `<le>` part of the bucket a latency falls in."""
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return "inf" if math.isinf(bound) else str(int(bound))
    return "inf"  # NaN


@dataclass(slots=True)
class VariantCounters:
    assigned: int = 0
    requests: int = 0
    errors: int = 0
    latency_ms_sum: int = 0
    latency_buckets: dict[float, int] = field(default_factory=dict)  # upper bound (ms) -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_microusd: int = 0
    cost_microusd_sq: int = 0
    feedback_count: int = 0
    feedback_milli_sum: int = 0
    feedback_milli_sq: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_usd(self) -> float:
        return self.cost_microusd / 1_000_000

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the latency in ms, linear inside its bucket; None without requests.
        A quantile in the last (infinite) bucket returns the largest finite bound."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1] (got {q})")
        total = sum(self.latency_buckets.values())
        if total == 0:
            return None
        rank = q * total
        seen = 0
        lower = 0.0
        for bound in LATENCY_BUCKETS_MS:
            count = self.latency_buckets.get(bound, 0)
            if count and seen + count >= rank:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * ((rank - seen) / count)
            seen += count
            if not math.isinf(bound):
                lower = bound
        return lower

    def as_dict(self) -> dict[str, object]:
        return {
            "assigned": self.assigned,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "latency_ms": {
                "p50": self.quantile(0.5),
                "p95": self.quantile(0.95),
                "mean": self.latency_ms_sum / self.requests if self.requests else None,
            },
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "feedback": {
                "count": self.feedback_count,
                "mean": self.feedback_milli_sum / 1000 / self.feedback_count if self.feedback_count else None,
            },
        }


_SCALARS = {
    "assigned",
    "requests",
    "errors",
    "latency_ms_sum",
    "prompt_tokens",
    "completion_tokens",
    "cost_microusd",
    "cost_microusd_sq",
    "feedback_count",
    "feedback_milli_sum",
    "feedback_milli_sq",
}


def parse_counters(raw: Mapping[str, int]) -> dict[str, VariantCounters]:
    """The `ab:counters` hash (field -> integer) per variant. Unknown fields are ignored."""
    result: dict[str, VariantCounters] = {}
    for name, value in raw.items():
        variant, _, counter = name.partition(":")
        if not counter:
            continue
        counters = result.setdefault(variant, VariantCounters())
        if counter in _SCALARS:
            setattr(counters, counter, int(value))
        elif counter.startswith("latency_bucket:"):
            label = counter.removeprefix("latency_bucket:")
            try:
                bound = math.inf if label == "inf" else float(label)
            except ValueError:
                continue
            counters.latency_buckets[bound] = int(value)
    return result
