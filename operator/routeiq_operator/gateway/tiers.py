"""Tier presets, and resolving a gateway spec against its tier: explicit fields always win.

The presets are RouteIQ's recommended tiers: minimal (one small pod), standard (two pods,
PDB, network policy), production (HPA 3-20 on CPU, memory, request rate and p95 latency,
zone spread, PDB of 2) and enterprise (larger pods, 4 workers, HPA 3-50, hard zone spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from routeiq_operator.gateway.api import (
    Autoscaling,
    Probe,
    RouteIQGatewaySpec,
    ScalingBehavior,
    ScalingPolicy,
    ScalingRules,
    Tier,
    quantity,
)

__all__ = ["PRESETS", "ResolvedAutoscaling", "ResolvedGateway", "ResolvedProbe", "TierPreset", "resolve"]

_DESIGN_BEHAVIOR = ScalingBehavior(
    scale_down=ScalingRules(
        stabilization_window_seconds=300,
        policies=[ScalingPolicy(type="Percent", value=25, period_seconds=60)],
    ),
    scale_up=ScalingRules(
        stabilization_window_seconds=30,
        select_policy="Max",
        policies=[
            ScalingPolicy(type="Percent", value=100, period_seconds=60),
            ScalingPolicy(type="Pods", value=4, period_seconds=60),
        ],
    ),
)


# the recommended production HPA: 3-20 pods on CPU, memory, request rate and p95 latency
_DESIGN_AUTOSCALING = Autoscaling(
    enabled=True,
    min_replicas=3,
    max_replicas=20,
    target_cpu_utilization=70,
    target_memory_utilization=80,
    requests_per_second=50,
    p95_latency_ms=500,
    behavior=_DESIGN_BEHAVIOR,
)


@dataclass(frozen=True, slots=True)
class ResolvedProbe:
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int


@dataclass(frozen=True, slots=True)
class ResolvedAutoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int | None
    target_memory_utilization: int | None
    requests_per_second: int | None
    p95_latency_ms: int | None
    behavior: ScalingBehavior | None


@dataclass(frozen=True, slots=True)
class TierPreset:
    replicas: int
    workers: int
    requests: dict[str, str]
    limits: dict[str, str]
    autoscaling: Autoscaling | None  # None: no HPA
    pdb_min_available: int | None  # None: no PDB
    network_policy: bool
    spread: (
        tuple[str, Literal["ScheduleAnyway", "DoNotSchedule"]] | None
    )  # (topology key, when unsatisfiable)
    anti_affinity: tuple[Literal["none", "soft", "hard"], str]
    features: dict[str, bool]


PRESETS: dict[Tier, TierPreset] = {
    Tier.MINIMAL: TierPreset(
        replicas=1,
        workers=2,
        requests={"cpu": "250m", "memory": "512Mi"},
        limits={"cpu": "1", "memory": "2Gi"},
        autoscaling=None,
        pdb_min_available=None,
        network_policy=False,
        spread=None,
        anti_affinity=("none", "kubernetes.io/hostname"),
        features={"policy": False, "ab_testing": False, "cache": False},
    ),
    Tier.STANDARD: TierPreset(
        replicas=2,
        workers=2,
        requests={"cpu": "500m", "memory": "1Gi"},
        limits={"cpu": "2", "memory": "2Gi"},
        autoscaling=None,
        pdb_min_available=1,
        network_policy=True,
        spread=("kubernetes.io/hostname", "ScheduleAnyway"),
        anti_affinity=("soft", "kubernetes.io/hostname"),
        features={"policy": False, "ab_testing": True, "cache": True},
    ),
    Tier.PRODUCTION: TierPreset(
        replicas=3,
        workers=2,
        requests={"cpu": "1", "memory": "1Gi"},
        limits={"cpu": "4", "memory": "4Gi"},
        autoscaling=_DESIGN_AUTOSCALING,
        pdb_min_available=2,
        network_policy=True,
        spread=("topology.kubernetes.io/zone", "ScheduleAnyway"),
        anti_affinity=("soft", "topology.kubernetes.io/zone"),
        features={"policy": True, "ab_testing": True, "cache": True},
    ),
    Tier.ENTERPRISE: TierPreset(
        replicas=3,
        workers=4,
        requests={"cpu": "2", "memory": "2Gi"},
        limits={"cpu": "4", "memory": "4Gi"},
        autoscaling=_DESIGN_AUTOSCALING.model_copy(update={"max_replicas": 50}),
        pdb_min_available=2,
        network_policy=True,
        spread=("topology.kubernetes.io/zone", "DoNotSchedule"),
        anti_affinity=("soft", "kubernetes.io/hostname"),
        features={"policy": True, "ab_testing": True, "cache": True},
    ),
}

# startup allows 2 minutes for model loading (5 s x 24)
_PROBES = {
    "startup": ResolvedProbe(
        initial_delay_seconds=0, period_seconds=5, timeout_seconds=3, failure_threshold=24
    ),
    "readiness": ResolvedProbe(
        initial_delay_seconds=0, period_seconds=10, timeout_seconds=3, failure_threshold=3
    ),
    "liveness": ResolvedProbe(
        initial_delay_seconds=0, period_seconds=20, timeout_seconds=5, failure_threshold=3
    ),
}


@dataclass(frozen=True, slots=True)
class ResolvedGateway:
    """Every value the builder needs, with the tier's preset under the explicit fields."""

    replicas: int
    autoscaling: ResolvedAutoscaling | None
    workers: int
    requests: dict[str, str]
    limits: dict[str, str]
    probes: dict[str, ResolvedProbe]
    pdb: dict[str, int] | None  # {"minAvailable": n} or {"maxUnavailable": n}
    network_policy: bool
    spread: tuple[str, int, str] | None  # (topology key, max skew, when unsatisfiable)
    anti_affinity: tuple[str, str]  # (none|soft|hard, topology key)
    features: dict[str, bool]
    drain_timeout_seconds: int


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _probe(explicit: Probe | None, preset: ResolvedProbe) -> ResolvedProbe:
    if explicit is None:
        return preset
    return ResolvedProbe(
        initial_delay_seconds=_first(explicit.initial_delay_seconds, preset.initial_delay_seconds),
        period_seconds=_first(explicit.period_seconds, preset.period_seconds),
        timeout_seconds=_first(explicit.timeout_seconds, preset.timeout_seconds),
        failure_threshold=_first(explicit.failure_threshold, preset.failure_threshold),
    )


def _autoscaling(spec: RouteIQGatewaySpec, preset: TierPreset) -> ResolvedAutoscaling | None:
    explicit = spec.autoscaling or Autoscaling()
    base = preset.autoscaling
    if explicit.enabled is False:
        return None
    # an explicit replica count means a fixed size unless autoscaling is asked for explicitly
    if explicit.enabled is None and (base is None or spec.replicas is not None):
        return None
    base = base or Autoscaling(
        min_replicas=preset.replicas, max_replicas=max(preset.replicas, 10), target_cpu_utilization=70
    )
    minimum = _first(explicit.min_replicas, base.min_replicas)
    maximum = _first(explicit.max_replicas, base.max_replicas)
    return ResolvedAutoscaling(
        min_replicas=minimum,
        max_replicas=max(minimum, maximum),
        target_cpu_utilization=_first(explicit.target_cpu_utilization, base.target_cpu_utilization),
        target_memory_utilization=_first(explicit.target_memory_utilization, base.target_memory_utilization),
        requests_per_second=_first(explicit.requests_per_second, base.requests_per_second),
        p95_latency_ms=_first(explicit.p95_latency_ms, base.p95_latency_ms),
        behavior=_first(explicit.behavior, base.behavior),
    )


def resolve(spec: RouteIQGatewaySpec) -> ResolvedGateway:
    preset = PRESETS[spec.tier]
    resources = spec.resources
    requests = dict(preset.requests)
    limits = dict(preset.limits)
    explicit_requests = (
        resources.requests.model_dump(exclude_none=True) if resources and resources.requests else {}
    )
    explicit_limits = resources.limits.model_dump(exclude_none=True) if resources and resources.limits else {}
    requests.update(explicit_requests)
    limits.update(explicit_limits)
    # a preset never contradicts an explicit value (the API server refuses requests above limits;
    # explicit ones are checked by Resources): a preset request above an explicit limit comes down
    # to it, as Kubernetes defaults a missing request to the limit; a preset limit below an explicit
    # request goes up to it
    for name in set(requests) & set(limits):
        if quantity(requests[name]) > quantity(limits[name]):
            if name in explicit_limits and name not in explicit_requests:
                requests[name] = limits[name]
            elif name in explicit_requests and name not in explicit_limits:
                limits[name] = requests[name]
    probes = spec.probes
    pdb_spec = spec.pod_disruption_budget
    pdb: dict[str, int] | None
    if pdb_spec is not None and pdb_spec.enabled is False:
        pdb = None
    elif pdb_spec is not None and pdb_spec.max_unavailable is not None:
        pdb = {"maxUnavailable": pdb_spec.max_unavailable}
    elif pdb_spec is not None and pdb_spec.min_available is not None:
        pdb = {"minAvailable": pdb_spec.min_available}
    elif preset.pdb_min_available is not None or (pdb_spec is not None and pdb_spec.enabled):
        pdb = {"minAvailable": preset.pdb_min_available if preset.pdb_min_available is not None else 1}
    else:
        pdb = None
    scheduling = spec.scheduling
    spread_spec = scheduling.topology_spread if scheduling else None
    spread: tuple[str, int, str] | None = None
    if not (spread_spec and spread_spec.enabled is False) and (
        preset.spread or (spread_spec and spread_spec.enabled)
    ):
        key, when = preset.spread or ("kubernetes.io/hostname", "ScheduleAnyway")
        spread = (
            _first(spread_spec.topology_key if spread_spec else None, key),
            _first(spread_spec.max_skew if spread_spec else None, 1),
            _first(spread_spec.when_unsatisfiable if spread_spec else None, when),
        )
    anti = scheduling.anti_affinity if scheduling else None
    anti_affinity = (
        _first(anti.type if anti else None, preset.anti_affinity[0]),
        _first(anti.topology_key if anti else None, preset.anti_affinity[1]),
    )
    network = spec.network_policy
    features = dict(preset.features)
    if spec.features:
        features.update(spec.features.model_dump(exclude_none=True))
    return ResolvedGateway(
        replicas=_first(spec.replicas, preset.replicas),
        autoscaling=_autoscaling(spec, preset),
        workers=_first(spec.workers, preset.workers),
        requests=requests,
        limits=limits,
        probes={
            "startup": _probe(probes.startup if probes else None, _PROBES["startup"]),
            "readiness": _probe(probes.readiness if probes else None, _PROBES["readiness"]),
            "liveness": _probe(probes.liveness if probes else None, _PROBES["liveness"]),
        },
        pdb=pdb,
        network_policy=_first(network.enabled if network else None, preset.network_policy),
        spread=spread,
        anti_affinity=anti_affinity,
        features=features,
        drain_timeout_seconds=_first(spec.drain_timeout_seconds, 30),
    )
