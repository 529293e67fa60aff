"""The A/B variants in a gateway's `ab:weights` hash: `VariantSpec` (one arm: a strategy, its
share, optionally its own model group and trained model), its JSON field value, and the checks
every writer and reader applies (`validate_variants`, `decode_variants`, the CLI's
`NAME=STRATEGY:WEIGHT`). `StateError` names the key or field and the problem.

It talks to no Redis: the `routeiq state` commands (`state.admin`, `state.cli`), the operator
and each worker's view of the shared state (`state.store`) share these rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeiq_router.state.keys import as_text
from routeiq_router.strategies.base import MODEL_KEY_PATTERN

__all__ = [
    "StateError",
    "VariantSpec",
    "decode_variants",
    "parse_variant_argument",
    "validate_variants",
]

VARIANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
MODEL_KEY = re.compile(MODEL_KEY_PATTERN)


class StateError(ValueError):
    """Shared state that cannot be used; the message names the key or field and the problem."""


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One arm of an A/B split: a strategy, its share, optionally its own model group, and
    optionally the key of the trained model it routes with (`ROUTEIQ_VARIANT_MODELS`)."""

    name: str
    strategy: str
    weight: float
    model_group: str | None = None
    model: str | None = None
    # the RoutingExperiment the split belongs to (the operator writes it); only a metrics label
    experiment: str | None = None

    def to_json(self) -> str:
        document: dict[str, Any] = {"strategy": self.strategy, "weight": self.weight}
        if self.model_group is not None:
            document["modelGroup"] = self.model_group
        if self.model is not None:
            document["model"] = self.model
        if self.experiment is not None:
            document["experiment"] = self.experiment
        return json.dumps(document, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, raw: str) -> VariantSpec:
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as error:
            raise StateError(f"variant {name!r}: value is not JSON ({error.msg})") from None
        if not isinstance(document, dict):
            raise StateError(f"variant {name!r}: value must be a JSON object")
        strategy, weight = document.get("strategy"), document.get("weight")
        model_group = document.get("modelGroup")
        model = document.get("model")
        experiment = document.get("experiment")
        if not isinstance(strategy, str) or not strategy:
            raise StateError(f"variant {name!r}: 'strategy' must be a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise StateError(f"variant {name!r}: 'weight' must be a number")
        if model_group is not None and (not isinstance(model_group, str) or not model_group):
            raise StateError(f"variant {name!r}: 'modelGroup' must be a non-empty string")
        if experiment is not None and (not isinstance(experiment, str) or not experiment):
            raise StateError(f"variant {name!r}: 'experiment' must be a non-empty string")
        _check_model(name, model)
        return cls(
            name=name,
            strategy=strategy,
            weight=float(weight),
            model_group=model_group,
            model=model,
            experiment=experiment,
        )


def _check_model(variant: str, model: object) -> None:
    """StateError unless `model` is None or a model key (a Kubernetes object name)."""
    if model is not None and (not isinstance(model, str) or not MODEL_KEY.fullmatch(model)):
        raise StateError(
            f"variant {variant!r}: 'model' must be a model key: 1-253 lowercase letters, digits, '-' or '.', "
            f"starting and ending with a letter or digit (got {model!r})"
        )


def validate_variants(
    variants: Sequence[VariantSpec], strategy_known: Callable[[str], bool] | None = None
) -> None:
    """Raise StateError naming the first bad variant (name, strategy, weight, model, duplicates)."""
    names: set[str] = set()
    for variant in variants:
        if not VARIANT_NAME.match(variant.name):
            raise StateError(
                f"variant {variant.name!r}: name must be 1-63 lowercase letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        if variant.name in names:
            raise StateError(f"variant {variant.name!r} appears twice")
        names.add(variant.name)
        if not (0 <= variant.weight <= 100):
            raise StateError(
                f"variant {variant.name!r}: weight must be within 0-100 (got {variant.weight:g})"
            )
        if strategy_known is not None and not strategy_known(variant.strategy):
            raise StateError(f"variant {variant.name!r}: unknown strategy {variant.strategy!r}")
        _check_model(variant.name, variant.model)
    if variants and sum(variant.weight for variant in variants) <= 0:
        raise StateError("at least one variant needs a positive weight")


def parse_variant_argument(argument: str) -> VariantSpec:
    """`NAME=STRATEGY:WEIGHT` (the CLI's form), e.g. `control=round-robin:70`."""
    name, equals, rest = argument.partition("=")
    strategy, colon, weight = rest.rpartition(":")
    if not equals or not colon or not name or not strategy:
        raise StateError(f"{argument!r}: expected VARIANT=STRATEGY:WEIGHT, e.g. control=round-robin:70")
    try:
        value = float(weight)
    except ValueError:
        raise StateError(f"{argument!r}: weight {weight!r} is not a number") from None
    return VariantSpec(name=name, strategy=strategy, weight=value)


def decode_variants(
    raw: Mapping[bytes | str, bytes | str], strategy_known: Callable[[str], bool] | None = None
) -> tuple[VariantSpec, ...]:
    """The `ab:weights` hash as variants (sorted by name); StateError on the first bad field."""
    variants = tuple(
        VariantSpec.from_json(as_text(name), as_text(value))
        for name, value in sorted(raw.items(), key=lambda item: as_text(item[0]))
    )
    validate_variants(variants, strategy_known)
    return variants
