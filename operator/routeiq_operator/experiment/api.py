"""`RoutingExperiment`: an online A/B test between routing strategies on one gateway.

`routeiq_operator.experiment.controller` runs it: the variants' weights go to the gateway's Redis
keys, the counters come back into status, `routeiq_operator.experiment.analysis` decides.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from routeiq_operator.gateway.api import TRAINED_STRATEGY_RULE, Strategy
from routeiq_operator.resource import (
    DNS_LABEL,
    ApiModel,
    Condition,
    CrdInfo,
    LocalObjectReference,
    ObjectMeta,
    PrinterColumn,
    cel,
)

__all__ = ["Metric", "RoutingExperiment", "RoutingExperimentSpec", "RoutingExperimentStatus", "Variant"]

MAX_VARIANTS = 4
# standard CEL has no sum(): add up to MAX_VARIANTS weights with guarded indexes
_WEIGHT_SUM = " + ".join(
    f"(self.variants.size() > {i} ? self.variants[{i}].weight : 0)" for i in range(MAX_VARIANTS)
)


class Metric(StrEnum):
    ERROR_RATE = "errorRate"
    P95_LATENCY = "p95Latency"
    COST_PER_REQUEST = "costPerRequest"
    FEEDBACK_SCORE = "feedbackScore"


class Variant(ApiModel):
    model_config = ApiModel.model_config | {"json_schema_extra": cel(TRAINED_STRATEGY_RULE)}

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    strategy: Strategy
    model_artifact_ref: LocalObjectReference | None = None
    model_group: str | None = Field(
        default=None, min_length=1, description="Route this variant to another model group."
    )
    weight: int = Field(ge=0, le=100, description="Percent of traffic; the weights add up to 100.")


class Guardrail(ApiModel):
    metric: Metric
    max: float = Field(ge=0, description="Roll back at once when a candidate variant exceeds it.")


class PrimaryMetric(ApiModel):
    type: Metric = Metric.ERROR_RATE


class Analysis(ApiModel):
    significance_level: float = Field(default=0.05, gt=0, lt=0.5, description="False-positive rate (alpha).")
    minimum_detectable_effect: float = Field(
        default=0.05, gt=0, description="Relative effect worth detecting."
    )
    min_samples_per_variant: int = Field(default=1000, ge=10)
    interval_seconds: int = Field(default=60, ge=10, le=86400)
    max_duration_seconds: int = Field(default=604800, ge=60, description="Then the verdict is inconclusive.")


class OnVerdict(ApiModel):
    promotion: Literal["automatic", "manual"] = "manual"
    promotion_mode: Literal["redis", "patchGateway"] = Field(
        default="redis",
        description="redis: the gateway's active strategy; patchGateway: edit the RouteIQGateway.",
    )
    rollback: Literal["automatic", "manual"] = "automatic"


class Assignment(ApiModel):
    sticky_key: Literal["conversation", "user", "previousResponse", "none"] = "conversation"


class RoutingExperimentSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (f"{_WEIGHT_SUM} == 100", "variant weights must add up to 100"),
            (
                "self.variants.all(a, self.variants.exists_one(b, b.name == a.name))",
                "variant names must be unique",
            ),
            ("self.variants.exists(v, v.name == self.control)", "control must name one of the variants"),
        )
    }

    gateway_ref: LocalObjectReference
    control: str = Field(min_length=1, pattern=DNS_LABEL, description="The variant that is the baseline.")
    variants: list[Variant] = Field(min_length=2, max_length=MAX_VARIANTS)
    assignment: Assignment = Field(default_factory=Assignment)
    primary_metric: PrimaryMetric = Field(default_factory=PrimaryMetric)
    guardrails: list[Guardrail] | None = Field(default=None, max_length=8)
    analysis: Analysis = Field(default_factory=Analysis)
    on_verdict: OnVerdict = Field(default_factory=OnVerdict)
    approved: bool = Field(default=False, description="Approve a manual promotion.")


class VariantStatus(ApiModel):
    name: str
    strategy: str | None = None
    weight: int | None = Field(
        default=None, description="Percent of traffic now (after a verdict: 0 or 100)."
    )
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    error_rate_low: float | None = Field(default=None, description="95% Wilson interval, lower end.")
    error_rate_high: float | None = Field(default=None, description="95% Wilson interval, upper end.")
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    tokens: int | None = None
    cost: float | None = Field(default=None, description="US dollars.")
    decision: Literal["promote", "rollback", "inconclusive", "continue"] | None = Field(
        default=None, description="This candidate against the control at the last look."
    )
    p_value: float | None = Field(default=None, description="Always-valid p-value against the control.")
    effect: float | None = Field(default=None, description="Candidate minus control in the primary metric.")
    effect_low: float | None = None
    effect_high: float | None = None


class Promotion(ApiModel):
    variant: str
    strategy: str
    mode: Literal["redis", "patchGateway"]
    active_strategy: str | None = Field(
        default=None, description="What the operator set as the gateway's strategy:active in Redis."
    )
    git_change: str = Field(description="The change to make in Git so the gateway's own spec agrees.")


class RoutingExperimentStatus(ApiModel):
    observed_generation: int | None = None
    phase: Literal["Pending", "Running", "Promoted", "RolledBack", "Inconclusive", "Failed"] | None = None
    verdict: Literal["promote", "rollback", "inconclusive"] | None = None
    leader: str | None = None
    samples: int | None = None
    statistic: float | None = None
    p_value: float | None = None
    variants: list[VariantStatus] | None = None
    message: str | None = None
    variants_fingerprint: str | None = Field(
        default=None, description="The variants the running split was started with; a change restarts it."
    )
    latency_threshold_ms: float | None = Field(
        default=None, description="p95Latency: the bucket bound fixed at the first look."
    )
    serving_variant: str | None = Field(
        default=None, description="After a verdict: the variant that takes all traffic."
    )
    promotion: Promotion | None = None
    started_at: datetime | None = None
    last_analysis_time: datetime | None = None
    finished_at: datetime | None = None
    conditions: list[Condition] | None = None


class RoutingExperiment(ApiModel):
    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="RoutingExperiment",
        plural="routingexperiments",
        singular="routingexperiment",
        short_names=["rqexp"],
        printer_columns=[
            PrinterColumn(name="Gateway", type="string", json_path=".spec.gatewayRef.name"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Leader", type="string", json_path=".status.leader"),
            PrinterColumn(name="Samples", type="integer", json_path=".status.samples"),
            PrinterColumn(name="Verdict", type="string", json_path=".status.verdict"),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
    )

    api_version: Literal["routeiq.io/v1alpha1"] = "routeiq.io/v1alpha1"
    kind: Literal["RoutingExperiment"] = "RoutingExperiment"
    metadata: ObjectMeta
    spec: RoutingExperimentSpec
    status: RoutingExperimentStatus | None = None
