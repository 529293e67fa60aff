"""The CRDs: generated from the models, structural, valid, and every CEL rule tested both ways."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from routeiq_operator.crds import KINDS, render_crds
from routeiq_operator.gateway.api import ML_STRATEGIES, Strategy
from routeiq_operator.schema import crd_file_name, custom_resource_definition
from routeiq_operator.validation import openapi_schema, validate_custom_resource
from routeiq_router.strategies.catalog import STRATEGY_NAMES, TRAINED_STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
ROUTEIQ = str(Path(sys.executable).parent / "routeiq")

GATEWAY: dict[str, Any] = {
    "apiVersion": "routeiq.io/v1alpha1",
    "kind": "RouteIQGateway",
    "metadata": {"name": "gw"},
    "spec": {
        "litellm": {"modelList": [{"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini"}}]},
        "secrets": {"masterKey": {"name": "routeiq", "key": "master-key"}},
    },
}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": "routeiq.io/v1alpha1",
    "kind": "RoutingExperiment",
    "metadata": {"name": "exp"},
    "spec": {
        "gatewayRef": {"name": "gw"},
        "control": "baseline",
        "variants": [
            {"name": "baseline", "strategy": "round-robin", "weight": 70},
            {"name": "candidate", "strategy": "least-busy", "weight": 30},
        ],
    },
}
ARTIFACT: dict[str, Any] = {
    "apiVersion": "routeiq.io/v1alpha1",
    "kind": "ModelArtifact",
    "metadata": {"name": "knn-v1"},
    "spec": {"source": {"uri": "s3://routeiq-models/knn/v1.tar.gz"}, "strategy": "knn"},
}
VALID = {"RouteIQGateway": GATEWAY, "RoutingExperiment": EXPERIMENT, "ModelArtifact": ARTIFACT}


def crd_of(kind: str) -> dict[str, Any]:
    return next(custom_resource_definition(m) for m in KINDS if m.__name__ == kind)


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` set to `value` (None deletes it)."""
    obj = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return obj


# (kind, object, the message of the rule it breaks); each CEL rule appears at least once
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("RouteIQGateway", changed(GATEWAY, "metadata.name", "a" * 41), "metadata.name must be a DNS-1035 label"),
    (
        "RouteIQGateway",
        changed(GATEWAY, "metadata.name", "9gateway"),
        "metadata.name must be a DNS-1035 label",
    ),
    ("RouteIQGateway", changed(GATEWAY, "spec.routing", {"strategy": "knn"}), "trained strategies"),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.litellm.configMapRef", {"name": "cfg", "key": "config.yaml"}),
        "set exactly one of modelList or configMapRef",
    ),
    ("RouteIQGateway", changed(GATEWAY, "spec.litellm", {}), "set exactly one of modelList or configMapRef"),
    (
        "RouteIQGateway",
        changed(
            GATEWAY,
            "spec.litellm.modelList",
            [{"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-live-123"}}],
        ),
        "credentials in modelList must be os.environ/<VARIABLE> references",
    ),
    (
        "RouteIQGateway",
        changed(
            GATEWAY,
            "spec.litellm.modelList",
            [
                {
                    "model_name": "chat",
                    "litellm_params": {"model": "m", "api_base": "https://u:pw@example.com"},
                }
            ],
        ),
        "credentials in modelList must be os.environ/<VARIABLE> references",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.litellm.routerSettings", {"redis_password": "hunter2"}),
        "credentials in routerSettings must be os.environ/<VARIABLE> references",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.litellm.routerSettings", {"redis_url": "redis://:hunter2@redis:6379"}),
        "credentials in routerSettings must be os.environ/<VARIABLE> references",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.litellm.modelList", [{"model_name": "chat", "litellm_parms": {"model": "m"}}]),
        "every modelList entry needs model_name and litellm_params",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "RouteIQGateway",
        changed(changed(GATEWAY, "spec.replicas", 3), "spec.autoscaling", {"enabled": True}),
        "replicas cannot be set while autoscaling is enabled",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.podDisruptionBudget", {"minAvailable": 1, "maxUnavailable": 1}),
        "set minAvailable or maxUnavailable, not both",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.networkPolicy", {"ingressFrom": [{}]}),
        "set namespaceSelector, podSelector or both",
    ),
    (
        "RouteIQGateway",
        changed(GATEWAY, "spec.networkPolicy", {"egress": {"redis": {"port": 6379}}}),
        "set exactly one of podSelector or cidr",
    ),
    ("RouteIQGateway", changed(GATEWAY, "spec.secrets", {}), "a master key is required"),
    (
        "RouteIQGateway",
        changed(
            GATEWAY,
            "spec.secrets",
            {
                "externalSecret": {
                    "secretStoreRef": {"name": "vault"},
                    "data": [{"secretKey": "OPENAI_API_KEY", "remoteRef": {"key": "openai"}}],
                }
            },
        ),
        "a master key is required",
    ),
    (
        "RoutingExperiment",
        changed(
            EXPERIMENT,
            "spec.variants",
            [
                {"name": "baseline", "strategy": "round-robin", "weight": 70},
                {"name": "candidate", "strategy": "least-busy", "weight": 20},
            ],
        ),
        "variant weights must add up to 100",
    ),
    (
        "RoutingExperiment",
        changed(
            EXPERIMENT,
            "spec.variants",
            [
                {"name": "baseline", "strategy": "round-robin", "weight": 50},
                {"name": "baseline", "strategy": "least-busy", "weight": 50},
            ],
        ),
        "variant names must be unique",
    ),
    (
        "RoutingExperiment",
        changed(EXPERIMENT, "spec.control", "other"),
        "control must name one of the variants",
    ),
    (
        "RoutingExperiment",
        changed(
            EXPERIMENT,
            "spec.variants",
            [
                {"name": "baseline", "strategy": "round-robin", "weight": 50},
                {"name": "candidate", "strategy": "mlp", "weight": 50},
            ],
        ),
        "trained strategies",
    ),
    (
        "RoutingExperiment",
        changed(EXPERIMENT, "metadata.name", "Exp"),
        "metadata.name must be a DNS-1035 label",
    ),
    (
        "ModelArtifact",
        changed(
            ARTIFACT, "spec.source", {"uri": "s3://models/k", "pvc": {"claimName": "models", "path": "knn"}}
        ),
        "set exactly one of uri or pvc",
    ),
    ("ModelArtifact", changed(ARTIFACT, "metadata.name", "x" * 50), "metadata.name must be a DNS-1035 label"),
]


def all_rules() -> Iterator[tuple[str, str]]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or []:
                yield rule["message"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for model in KINDS:
        crd = custom_resource_definition(model)
        for message in walk(openapi_schema(crd)):
            yield crd["spec"]["names"]["kind"], message


def test_committed_crds_are_the_generated_ones() -> None:
    for name, text in render_crds().items():
        committed = ROOT / "crds" / name
        assert committed.exists(), f"crds/{name} is missing: run `routeiq crds --out crds`"
        assert committed.read_text() == text, f"crds/{name} is stale: run `routeiq crds --out crds`"
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(render_crds())


@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("kube_version", ["1.29", "1.33"])
def test_crd_is_a_valid_kubernetes_object(model: Any, kube_version: str) -> None:
    kubernetes_validate.validate(custom_resource_definition(model), kube_version, strict=True)


def _structural_problems(node: Any, path: str) -> Iterator[str]:
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _structural_problems(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    for key in ("$ref", "$defs", "title", "const", "nullable"):
        if key in node:
            yield f"{path}: {key}"
    if "anyOf" in node and any(branch.get("type") == "null" for branch in node["anyOf"]):
        yield f"{path}: anyOf with null"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties beside additionalProperties"
    if "type" not in node and not node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        yield f"{path}: no type"
    for key in ("properties",):
        for name, child in (node.get(key) or {}).items():
            yield from _structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _structural_problems(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.__name__)
def test_schema_is_structural(model: Any) -> None:
    assert list(_structural_problems(openapi_schema(custom_resource_definition(model)), "")) == []


def test_names_columns_and_subresources() -> None:
    by_kind = {crd_of(kind)["spec"]["names"]["kind"]: crd_of(kind) for kind in VALID}
    assert {kind: crd["spec"]["names"]["shortNames"] for kind, crd in by_kind.items()} == {
        "RouteIQGateway": ["rqgw"],
        "RoutingExperiment": ["rqexp"],
        "ModelArtifact": ["rqma"],
    }
    for crd in by_kind.values():
        version = crd["spec"]["versions"][0]
        assert crd["spec"]["names"]["categories"] == ["routeiq"]
        assert version["subresources"] == {"status": {}}
        assert version["additionalPrinterColumns"][-1]["name"] == "Age"
    experiment_columns = [
        c["name"] for c in by_kind["RoutingExperiment"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert {"Phase", "Leader", "Samples", "Verdict"} <= set(experiment_columns)


@pytest.mark.parametrize("kind", VALID)
def test_valid_examples_pass(kind: str) -> None:
    assert validate_custom_resource(VALID[kind], crd_of(kind)) == []


@pytest.mark.parametrize(("kind", "obj", "message"), INVALID, ids=[f"{k}:{m[:40]}" for k, _, m in INVALID])
def test_each_cel_rule_rejects_its_invalid_example(kind: str, obj: dict[str, Any], message: str) -> None:
    violations = validate_custom_resource(obj, crd_of(kind))
    assert any(message in v.message for v in violations), violations


def test_every_cel_rule_has_an_invalid_example() -> None:
    covered = {
        (kind, rule) for kind, rule in all_rules() if any(k == kind and m in rule for k, _, m in INVALID)
    }
    assert covered == set(all_rules())


def test_schema_errors_name_the_field() -> None:
    bad = changed(changed(GATEWAY, "spec.tier", "huge"), "spec.workers", 0)
    paths = {v.path for v in validate_custom_resource(bad, crd_of("RouteIQGateway"))}
    assert {"spec.tier", "spec.workers"} <= paths
    unknown = validate_custom_resource(changed(GATEWAY, "spec.replica", 2), crd_of("RouteIQGateway"))
    assert [str(v) for v in unknown] == ["spec.replica: unknown field (not in the schema)"]


def test_defaults_are_applied_before_cel() -> None:
    # routing.strategy is absent: the rule reads its default, as the API server would
    assert validate_custom_resource(changed(GATEWAY, "spec.routing", {}), crd_of("RouteIQGateway")) == []


def test_validate_command(tmp_path: Path) -> None:
    import yaml

    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump_all([GATEWAY, EXPERIMENT, ARTIFACT, {"apiVersion": "v1", "kind": "ConfigMap"}])
    )
    ok = subprocess.run([ROUTEIQ, "validate", "-f", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 RouteIQ resource(s) checked, 0 invalid" in ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed(GATEWAY, "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2})))
    failed = subprocess.run([ROUTEIQ, "validate", "-f", str(tmp_path)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert (
        f"{bad}: RouteIQGateway/gw: spec.autoscaling: minReplicas must not exceed maxReplicas"
        in failed.stdout
    )


def test_crd_files_are_named_by_group_and_plural() -> None:
    assert [crd_file_name(model) for model in KINDS] == [
        "routeiq.io_routeiqgateways.yaml",
        "routeiq.io_routingexperiments.yaml",
        "routeiq.io_modelartifacts.yaml",
    ]


# ---- strategy names: the router's catalog is the one source -------------------------------------


def strategy_schemas(kind: str) -> dict[str, dict[str, Any]]:
    """The schema of every `strategy` field a kind's spec takes, by dotted path."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            if name == "strategy" and "enum" in child:
                found[f"{path}.{name}"] = child
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(openapi_schema(crd_of(kind))["properties"]["spec"], "spec")
    return found


def trained_strategy_rules() -> Iterator[tuple[str, str, str]]:
    """(kind, rule, message) of every CEL rule that names the strategies needing a ModelArtifact."""

    def walk(node: Any) -> Iterator[dict[str, str]]:
        if isinstance(node, dict):
            yield from node.get("x-kubernetes-validations") or []
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for model in KINDS:
        crd = custom_resource_definition(model)
        for rule in walk(openapi_schema(crd)):
            if "self.strategy in" in rule["rule"]:
                yield crd["spec"]["names"]["kind"], rule["rule"], rule["message"]


def test_strategy_names_are_the_router_catalogs() -> None:
    """A strategy added to (or removed from) routeiq_router.strategies.catalog fails here until the
    operator's API accepts exactly the catalog's names: the Strategy enum, the trained strategies,
    the CRDs' enums and their CEL rules."""
    assert [strategy.value for strategy in Strategy] == list(STRATEGY_NAMES)
    assert tuple(ML_STRATEGIES) == TRAINED_STRATEGIES
    enums = {
        (kind, path): schema["enum"] for kind in VALID for path, schema in strategy_schemas(kind).items()
    }
    assert enums == {
        ("RouteIQGateway", "spec.routing.strategy"): list(STRATEGY_NAMES),
        ("RoutingExperiment", "spec.variants[].strategy"): list(STRATEGY_NAMES),
        ("ModelArtifact", "spec.strategy"): list(TRAINED_STRATEGIES),
    }
    rules = list(trained_strategy_rules())
    assert sorted(kind for kind, _, _ in rules) == ["RouteIQGateway", "RoutingExperiment"]
    for kind, rule, message in rules:
        listed = re.fullmatch(r"!\(self\.strategy in \[(.*)\]\) \|\| has\(self\.modelArtifactRef\)", rule)
        assert listed is not None, f"{kind}: {rule}"
        assert re.findall(r"'([^']*)'", listed.group(1)) == list(TRAINED_STRATEGIES), f"{kind}: {rule}"
        assert message == f"trained strategies ({', '.join(TRAINED_STRATEGIES)}) need modelArtifactRef"


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_catalog_strategy_is_accepted(strategy: str) -> None:
    trained = strategy in TRAINED_STRATEGIES
    routing: dict[str, Any] = {"strategy": strategy}
    gateway = changed(GATEWAY, "spec.routing", routing)
    assert bool(validate_custom_resource(gateway, crd_of("RouteIQGateway"))) == trained, (
        "a trained strategy without modelArtifactRef is refused, a simple one accepted"
    )
    routing["modelArtifactRef"] = {"name": "router-v1"}
    assert validate_custom_resource(changed(GATEWAY, "spec.routing", routing), crd_of("RouteIQGateway")) == []
    variants = copy.deepcopy(EXPERIMENT["spec"]["variants"])
    variants[1] |= {"strategy": strategy, "modelArtifactRef": {"name": "router-v1"}}
    experiment = changed(EXPERIMENT, "spec.variants", variants)
    assert validate_custom_resource(experiment, crd_of("RoutingExperiment")) == []
    artifact = validate_custom_resource(changed(ARTIFACT, "spec.strategy", strategy), crd_of("ModelArtifact"))
    assert (artifact == []) == trained, "a ModelArtifact holds a trained strategy only"
