"""How the operator names and labels what it owns: one place, read by the builders, the API
client and the controllers alike."""

from __future__ import annotations

__all__ = ["FIELD_MANAGER", "child_name", "labels", "managed_selector", "selector_labels"]

# the server-side apply field manager, and the managed-by label of every child
FIELD_MANAGER = "routeiq-operator"


def child_name(gateway_name: str, suffix: str = "") -> str:
    """`<name>-gateway[-suffix]`; names are at most 40 characters (admission), so this fits 63."""
    return f"{gateway_name}-gateway{f'-{suffix}' if suffix else ''}"


def managed_selector(gateway_name: str) -> str:
    """The label selector that finds every child the operator made for a gateway."""
    return f"app.kubernetes.io/instance={gateway_name},app.kubernetes.io/managed-by={FIELD_MANAGER}"


def selector_labels(gateway_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "routeiq-gateway", "app.kubernetes.io/instance": gateway_name}


def labels(gateway_name: str) -> dict[str, str]:
    """Every child's labels: the selector's, plus component, part-of and managed-by."""
    return {
        **selector_labels(gateway_name),
        "app.kubernetes.io/component": "gateway",
        "app.kubernetes.io/part-of": "routeiq",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
