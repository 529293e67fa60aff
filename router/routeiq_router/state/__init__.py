"""Routing state shared by every worker and replica of a gateway (Redis), or kept in memory (tier 1)."""

from routeiq_router.state.affinity import ConversationAffinity, MemoryAffinity, RedisAffinity
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
    "ConversationAffinity",
    "GatewayKeys",
    "MemoryAffinity",
    "MemoryCircuitBreakers",
    "MemoryTrafficSplit",
    "RedisAffinity",
    "RedisCircuitBreakers",
    "RedisTrafficSplit",
    "TrafficSplit",
    "Variant",
]
