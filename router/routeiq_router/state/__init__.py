"""Routing state shared by every worker and replica of a gateway (Redis), or kept in memory (tier 1)."""

from routeiq_router.state.breakers import (
    BreakerPolicy,
    BreakerState,
    CircuitBreakers,
    MemoryCircuitBreakers,
    RedisCircuitBreakers,
)
from routeiq_router.state.keys import GatewayKeys
from routeiq_router.state.split import MemoryTrafficSplit, RedisTrafficSplit, TrafficSplit, Variant

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreakers",
    "GatewayKeys",
    "MemoryCircuitBreakers",
    "MemoryTrafficSplit",
    "RedisCircuitBreakers",
    "RedisTrafficSplit",
    "TrafficSplit",
    "Variant",
]
