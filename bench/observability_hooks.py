"""CPU that RouteIQ's metrics and tracing add to one request, measured in-process.

    .venv/bin/python bench/observability_hooks.py [--iterations 20000]

The end-to-end benchmark (bench/observability_cost.py) cannot resolve a few per cent on a
shared 2-core machine: its baseline moves by 40-50 % between rounds. This one measures the
instrumentation itself. Each configuration runs in a fresh Python process and performs, per
simulated request, exactly the calls the gateway makes for one routed chat completion:

- `metrics`: with `PROMETHEUS_MULTIPROC_DIR` set (as under `routeiq gateway`, every value is
  written to a per-process file): in-flight +1, the routing decision (duration and outcome),
  the A/B assignment, LiteLLM's success callback (`request_finished`: request duration, input
  and output token usage, cost) and in-flight -1;
- `tracing`: the same, plus the OTLP pipeline of `configure_otel` (sampler traceidratio 0.1,
  batch export to a local sink that discards everything, routing instruments recorded a
  second time on OpenTelemetry instruments), the request's server span and the
  `routeiq.routing.decision` span with its attributes; the pipeline is flushed inside the
  measured time, so the export threads' CPU counts;
- `none`: the same loop with no call, subtracted from both.

CPU is `time.process_time()` (all threads of the process). The figure to compare is the
gateway's CPU per request from bench/observability_cost.py's `base` gateway (CPU s/1k).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = ("none", "metrics", "tracing")


def _kwargs(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = "chat-a" if index % 2 else "chat-b"
    kwargs = {
        "call_type": "acompletion",
        "model": "chat",
        "litellm_params": {"model_info": {"id": deployment}, "custom_llm_provider": "openai"},
        "standard_logging_object": {
            "model_group": "chat",
            "model_id": deployment,
            "custom_llm_provider": "openai",
            "call_type": "acompletion",
            "response_cost": 0.00021,
        },
        "response_cost": 0.00021,
    }
    response = {"usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}}
    return kwargs, response


def run_config(config: str, iterations: int, endpoint: str | None) -> float:
    """CPU seconds per simulated request of `config` in this process (the loop's own cost included)."""
    from datetime import UTC, datetime, timedelta

    from routeiq_router import decisions, metrics

    pipeline = None
    tracer = None
    if config == "tracing":
        from opentelemetry import trace

        from routeiq_router.gateway.otel import configure_otel
        from routeiq_router.settings import RouteIQSettings

        settings = RouteIQSettings(
            otel_exporter_otlp_endpoint=endpoint,
            otel_traces_sampler="traceidratio",
            otel_traces_sampler_arg=0.1,
        )
        pipeline = configure_otel(settings)
        tracer = trace.get_tracer("routeiq_router.gateway")
    calls = [_kwargs(index) for index in range(2)]
    start = datetime.now(UTC)
    end = start + timedelta(milliseconds=180)
    begin = time.process_time()
    for index in range(iterations):
        kwargs, response = calls[index % 2]
        deployment = kwargs["standard_logging_object"]["model_id"]
        if config == "none":
            continue
        if tracer is not None:
            with tracer.start_as_current_span(
                "POST /v1/chat/completions", kind=trace.SpanKind.SERVER
            ) as span:
                span.set_attribute("http.request.method", "POST")
                metrics.requests_in_flight(1)
                with decisions.decision_span():
                    metrics.routing_decision("round-robin", "chat", deployment, 0.0004, "routed")
                    metrics.ab_assigned("exp", "control")
                    decisions.traced(  # the attributes routing.py sets on a routed decision
                        {
                            "routeiq.strategy": "round-robin",
                            "routeiq.requested_strategy": "round-robin",
                            "routeiq.outcome": "routed",
                            "routeiq.model_group": "chat",
                            "routeiq.deployment.id": deployment,
                            "routeiq.candidates_count": 2,
                            "routeiq.duration_ms": 0.4,
                            "routeiq.deployment.model": f"openai/{deployment}",
                            "routeiq.variant": "control",
                            "routeiq.experiment": "exp",
                        }
                    )
                metrics.request_finished(kwargs, response, start, end)
                metrics.requests_in_flight(-1)
                span.set_attribute("http.response.status_code", 200)
        else:
            metrics.requests_in_flight(1)
            metrics.routing_decision("round-robin", "chat", deployment, 0.0004, "routed")
            metrics.ab_assigned("exp", "control")
            metrics.request_finished(kwargs, response, start, end)
            metrics.requests_in_flight(-1)
    if pipeline is not None:
        pipeline.tracer_provider.force_flush(10_000)
        pipeline.meter_provider.force_flush(10_000)
    spent = time.process_time() - begin
    if pipeline is not None:
        pipeline.shutdown(5.0)
    return spent / iterations


def measure(iterations: int, rounds: int, endpoint: str) -> dict[str, list[float]]:
    """µs of CPU per request for every configuration, each round in fresh processes."""
    results: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for round_index in range(rounds):
        order = CONFIGS[round_index % 3 :] + CONFIGS[: round_index % 3]
        for config in order:
            with tempfile.TemporaryDirectory(prefix="routeiq-hooks-") as directory:
                env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory)
                completed = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        config,
                        "--iterations",
                        str(iterations),
                        "--endpoint",
                        endpoint,
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
            results[config].append(json.loads(completed.stdout.strip().splitlines()[-1])["seconds"] * 1e6)
    return results


def report(results: dict[str, list[float]], gateway_cpu_ms: float | None) -> list[str]:
    """The table: µs per request per round, the median, the cost above `none` and its share of
    the gateway's CPU per request when that is known."""
    import statistics

    loop = statistics.median(results["none"])
    lines = [f"{'config':<9} {'µs CPU/request by round':<40} {'median':>8} {'added':>8} {'of gateway':>11}"]
    for config in CONFIGS:
        values = results[config]
        median = statistics.median(values)
        added = median - loop if config != "none" else 0.0
        share = (
            f"{added / (gateway_cpu_ms * 1000) * 100:10.2f}%"
            if gateway_cpu_ms and config != "none"
            else f"{'':>11}"
        )
        rounds = " ".join(f"{value:7.1f}" for value in values)
        lines.append(f"{config:<9} {rounds:<40} {median:8.1f} {added:8.1f} {share}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000, help="simulated requests per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gateway-cpu-ms",
        type=float,
        default=None,
        help="the gateway's CPU ms per request, to print the share",
    )
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps({"seconds": run_config(args.child, args.iterations, args.endpoint)}))
        return 0
    from observability_cost import _Sink

    sink = _Sink()
    try:
        results = measure(args.iterations, args.rounds, sink.endpoint)
    finally:
        sink.close()
    print(
        f"instrumentation CPU per simulated request, {args.iterations} requests per process, "
        f"{args.rounds} rounds, fresh process per cell; Python {sys.version.split()[0]}, nproc {os.cpu_count()}"
    )
    for line in report(results, args.gateway_cpu_ms):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
