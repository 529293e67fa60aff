"""Typed models of the `routeiq.io/v1alpha1` custom resources; the CRDs are generated from them."""

from routeiq_operator.api.artifact import ModelArtifact, ModelArtifactSpec, ModelArtifactStatus
from routeiq_operator.api.common import GROUP, VERSION, Condition
from routeiq_operator.api.experiment import RoutingExperiment, RoutingExperimentSpec, RoutingExperimentStatus
from routeiq_operator.api.gateway import RouteIQGateway, RouteIQGatewaySpec, RouteIQGatewayStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "ModelArtifact",
    "ModelArtifactSpec",
    "ModelArtifactStatus",
    "RouteIQGateway",
    "RouteIQGatewaySpec",
    "RouteIQGatewayStatus",
    "RoutingExperiment",
    "RoutingExperimentSpec",
    "RoutingExperimentStatus",
]
