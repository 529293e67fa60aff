"""Argo CD health checks (examples/argocd/health/*.lua) run in Lua against status samples.

Argo CD runs health scripts in gopher-lua (Lua 5.1) with the resource as the global `obj`; lupa's
Lua 5.1 runtime stands in for it. The argocd-cm patch is generated from the .lua files:

    .venv/bin/python -m tests.test_argocd_health
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import lupa.lua51  # type: ignore[import-untyped]
import pytest
import yaml

ARGOCD = Path(__file__).resolve().parent.parent / "examples" / "argocd"
HEALTH = ARGOCD / "health"
CM_PATCH = ARGOCD / "argocd-cm-patch.yaml"
KINDS = ("RouteIQGateway", "RoutingExperiment", "ModelArtifact")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}


def cm_key(kind: str) -> str:
    return f"resource.customizations.health.routeiq.io_{kind}"


def render_cm_patch() -> str:
    """The argocd-cm patch: one resource.customizations.health.<group>_<kind> key per .lua file."""
    lines = [
        "# Generated from health/*.lua by `.venv/bin/python -m tests.test_argocd_health`; do not edit.",
        "# kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-patch.yaml",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "  namespace: argocd",
        "  labels:",
        "    app.kubernetes.io/name: argocd-cm",
        "    app.kubernetes.io/part-of: argocd",
        "data:",
    ]
    for kind in KINDS:
        lines.append(f"  {cm_key(kind)}: |")
        lines += [f"    {line}" if line else "" for line in (HEALTH / f"{kind}.lua").read_text().splitlines()]
    return "\n".join(lines) + "\n"


def to_lua(runtime: Any, value: Any) -> Any:
    """Python dicts and lists as Lua tables, recursively; lists become 1-based sequences."""
    if isinstance(value, dict):
        return runtime.table_from({key: to_lua(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, item) for item in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the kind's script as Argo CD does: a fresh VM, the resource in the global `obj`."""
    runtime = lupa.lua51.LuaRuntime()
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute((HEALTH / f"{kind}.lua").read_text())
    status, message = result["status"], result["message"]
    assert isinstance(status, str)
    assert isinstance(message, str)
    return status, message


def resource(kind: str, status: dict[str, Any] | None, generation: int = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "sample", "namespace": "team-a", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": 2}


def gateway_conditions(
    ready: tuple[str, str, str], degraded: tuple[str, str, str] = ("False", "AsExpected", "nothing is wrong")
) -> list[dict[str, Any]]:
    return [
        condition("ResolvedRefs", "True", "SecretsFound", "every referenced Secret exists"),
        condition("Degraded", *degraded),
        condition("Progressing", "False" if ready[0] == "True" else "True", "RollingOut", "rolling"),
        condition("Ready", *ready),
    ]


GATEWAY_CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("missing status", None, "Progressing", "waiting for the operator to report status"),
    (
        "healthy",
        {
            "observedGeneration": 2,
            "replicas": 3,
            "readyReplicas": 3,
            "endpoint": "http://sample-gateway.team-a.svc:4000",
            "conditions": gateway_conditions(("True", "GatewayReady", "3/3 replicas ready")),
        },
        "Healthy",
        "3 replicas ready at http://sample-gateway.team-a.svc:4000",
    ),
    (
        "stale generation",
        {
            "observedGeneration": 1,
            "readyReplicas": 3,
            "conditions": gateway_conditions(("True", "GatewayReady", "3/3 replicas ready")),
        },
        "Progressing",
        "waiting for the operator to observe generation 2",
    ),
    (
        "rolling out",
        {
            "observedGeneration": 2,
            "readyReplicas": 1,
            "conditions": gateway_conditions(("False", "WaitingForReplicas", "1/3 replicas ready")),
        },
        "Progressing",
        "WaitingForReplicas: 1/3 replicas ready",
    ),
    (
        "degraded condition",
        {
            "observedGeneration": 2,
            "conditions": gateway_conditions(
                ("False", "WaitingForReplicas", "0/3 replicas ready"),
                ("True", "SecretNotFound", "referenced Secret(s) not found: openai"),
            ),
        },
        "Degraded",
        "SecretNotFound: referenced Secret(s) not found: openai",
    ),
    (
        "invalid spec",
        {
            "observedGeneration": 2,
            "conditions": [
                condition("Ready", "False", "InvalidSpec", "spec.replicas: must be >= 1"),
                condition("Degraded", "True", "InvalidSpec", "spec.replicas: must be >= 1"),
                condition(
                    "Progressing", "False", "InvalidSpec", "nothing is applied until the spec is valid"
                ),
            ],
        },
        "Degraded",
        "InvalidSpec: spec.replicas: must be >= 1",
    ),
    (
        "ready false with a failure reason",
        {
            "observedGeneration": 2,
            "conditions": [condition("Ready", "False", "RolloutStalled", "0/3 replicas ready")],
        },
        "Degraded",
        "RolloutStalled: 0/3 replicas ready",
    ),
    (
        "no Ready condition yet",
        {"observedGeneration": 2, "conditions": []},
        "Progressing",
        "waiting for the Ready condition",
    ),
    (
        "ready unknown",
        {"observedGeneration": 2, "conditions": [condition("Ready", "Unknown", "Reconciling")]},
        "Progressing",
        "Reconciling",
    ),
]


@pytest.mark.parametrize(
    ("status", "expected", "message"), [case[1:] for case in GATEWAY_CASES], ids=[c[0] for c in GATEWAY_CASES]
)
def test_gateway_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    assert health("RouteIQGateway", resource("RouteIQGateway", status)) == (expected, message)


def test_gateway_without_generation_trusts_the_status() -> None:
    body = resource(
        "RouteIQGateway", {"readyReplicas": 2, "conditions": gateway_conditions(("True", "X", ""))}
    )
    del body["metadata"]["generation"]
    assert health("RouteIQGateway", body) == ("Healthy", "2 replicas ready")


EXPERIMENT_CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any], str, str]] = [
    ("missing status", None, {}, "Progressing", "waiting for the operator to report status"),
    (
        "stale generation",
        {"observedGeneration": 1, "phase": "Promoted"},
        {},
        "Progressing",
        "waiting for the operator to observe generation 2",
    ),
    (
        "pending",
        {"observedGeneration": 2, "phase": "Pending"},
        {},
        "Progressing",
        "waiting for the experiment to start",
    ),
    (
        "running",
        {"observedGeneration": 2, "phase": "Running", "samples": 1840, "leader": "mlp"},
        {},
        "Progressing",
        "running: 1840 samples, leader mlp",
    ),
    (
        "running, no leader yet",
        {"observedGeneration": 2, "phase": "Running", "samples": 12},
        {},
        "Progressing",
        "running: 12 samples",
    ),
    (
        "waiting for approval",
        {"observedGeneration": 2, "phase": "Running", "verdict": "promote", "leader": "mlp", "samples": 5000},
        {"onVerdict": {"promotion": "manual"}},
        "Suspended",
        "waiting for approval to promote mlp (set spec.approved: true)",
    ),
    (
        "waiting for approval, promotion defaulted to manual",
        {"observedGeneration": 2, "phase": "Running", "verdict": "promote", "leader": "knn"},
        {},
        "Suspended",
        "waiting for approval to promote knn (set spec.approved: true)",
    ),
    (
        "approved, promotion under way",
        {"observedGeneration": 2, "phase": "Running", "verdict": "promote", "leader": "mlp", "samples": 5000},
        {"approved": True},
        "Progressing",
        "running: 5000 samples, leader mlp",
    ),
    (
        "automatic promotion under way",
        {"observedGeneration": 2, "phase": "Running", "verdict": "promote", "leader": "mlp", "samples": 5000},
        {"onVerdict": {"promotion": "automatic"}},
        "Progressing",
        "running: 5000 samples, leader mlp",
    ),
    (
        "promoted",
        {
            "observedGeneration": 2,
            "phase": "Promoted",
            "verdict": "promote",
            "leader": "mlp",
            "samples": 5000,
        },
        {},
        "Healthy",
        "promoted mlp after 5000 samples",
    ),
    (
        "inconclusive",
        {"observedGeneration": 2, "phase": "Inconclusive", "verdict": "inconclusive", "samples": 9000},
        {},
        "Healthy",
        "inconclusive after 9000 samples; the control stays",
    ),
    (
        "rolled back",
        {
            "observedGeneration": 2,
            "phase": "RolledBack",
            "verdict": "rollback",
            "conditions": [
                condition("Ready", "True", "Finished", "done"),
                condition("Degraded", "True", "GuardrailExceeded", "mlp errorRate 0.12 > max 0.05"),
            ],
        },
        {},
        "Degraded",
        "rolled back: GuardrailExceeded: mlp errorRate 0.12 > max 0.05",
    ),
    (
        "rolled back, no conditions",
        {"observedGeneration": 2, "phase": "RolledBack"},
        {},
        "Degraded",
        "rolled back",
    ),
    (
        "failed",
        {
            "observedGeneration": 2,
            "phase": "Failed",
            "conditions": [
                condition("Ready", "False", "GatewayNotFound", "RouteIQGateway team-a/gw not found")
            ],
        },
        {},
        "Degraded",
        "GatewayNotFound: RouteIQGateway team-a/gw not found",
    ),
    (
        "failed, no conditions",
        {"observedGeneration": 2, "phase": "Failed"},
        {},
        "Degraded",
        "the experiment failed",
    ),
]


@pytest.mark.parametrize(
    ("status", "spec", "expected", "message"),
    [case[1:] for case in EXPERIMENT_CASES],
    ids=[c[0] for c in EXPERIMENT_CASES],
)
def test_experiment_health(
    status: dict[str, Any] | None, spec: dict[str, Any], expected: str, message: str
) -> None:
    body = resource("RoutingExperiment", status, **spec)
    assert health("RoutingExperiment", body) == (expected, message)


ARTIFACT_CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("missing status", None, "Progressing", "waiting for the operator to report status"),
    ("no phase yet", {"observedGeneration": 2}, "Progressing", "waiting for the artifact to be fetched"),
    (
        "pending",
        {"observedGeneration": 2, "phase": "Pending"},
        "Progressing",
        "waiting for the artifact to be fetched",
    ),
    ("verifying", {"observedGeneration": 2, "phase": "Verifying"}, "Progressing", "verifying the artifact"),
    (
        "stale generation",
        {"observedGeneration": 1, "phase": "Ready", "digest": "sha256:" + "a" * 64},
        "Progressing",
        "waiting for the operator to observe generation 2",
    ),
    (
        "ready",
        {"observedGeneration": 2, "phase": "Ready", "strategy": "mlp", "digest": "sha256:" + "a" * 64},
        "Healthy",
        "verified mlp artifact, digest sha256:" + "a" * 64,
    ),
    (
        "failed",
        {
            "observedGeneration": 2,
            "phase": "Failed",
            "conditions": [
                condition(
                    "Ready", "False", "SignatureInvalid", "ed25519 signature does not match the manifest"
                )
            ],
        },
        "Degraded",
        "SignatureInvalid: ed25519 signature does not match the manifest",
    ),
    (
        "failed, degraded condition first",
        {
            "observedGeneration": 2,
            "phase": "Failed",
            "conditions": [
                condition("Ready", "False", "VerificationFailed"),
                condition("Degraded", "True", "DigestMismatch", "sha256 differs from spec.sha256"),
            ],
        },
        "Degraded",
        "DigestMismatch: sha256 differs from spec.sha256",
    ),
    (
        "failed, no conditions",
        {"observedGeneration": 2, "phase": "Failed"},
        "Degraded",
        "artifact verification failed",
    ),
]


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [case[1:] for case in ARTIFACT_CASES],
    ids=[c[0] for c in ARTIFACT_CASES],
)
def test_artifact_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    assert health("ModelArtifact", resource("ModelArtifact", status)) == (expected, message)


def test_the_cases_cover_every_phase_the_api_allows_and_no_other() -> None:
    """The scripts answer for the API's phases: a phase added to (or dropped from) the models
    needs a case here, and so a look at the script."""
    from routeiq_operator.artifact.api import ModelArtifactStatus
    from routeiq_operator.experiment.api import RoutingExperimentStatus

    for cases, model in ((EXPERIMENT_CASES, RoutingExperimentStatus), (ARTIFACT_CASES, ModelArtifactStatus)):
        allowed = set(get_args(get_args(model.model_fields["phase"].annotation)[0]))
        covered = {case[1]["phase"] for case in cases if case[1] and case[1].get("phase")}
        assert covered == allowed, model.__name__


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_return_argo_statuses_and_set_only_hs(kind: str) -> None:
    """Every script answers with a status Argo CD knows, and leaks no global but `hs`."""
    runtime = lupa.lua51.LuaRuntime()
    before = set(runtime.globals())
    runtime.globals().obj = to_lua(runtime, resource(kind, None))
    result = runtime.execute((HEALTH / f"{kind}.lua").read_text())
    assert result["status"] in ARGO_STATUSES
    assert set(runtime.globals()) - before == {"obj", "hs"}


def test_cm_patch_embeds_exactly_the_lua_files() -> None:
    assert CM_PATCH.read_text() == render_cm_patch(), (
        "regenerate: .venv/bin/python -m tests.test_argocd_health"
    )
    document = yaml.safe_load(CM_PATCH.read_text())
    assert (document["apiVersion"], document["kind"]) == ("v1", "ConfigMap")
    assert document["metadata"]["name"] == "argocd-cm"
    assert document["data"] == {cm_key(kind): (HEALTH / f"{kind}.lua").read_text() for kind in KINDS}
    assert sorted(path.stem for path in HEALTH.glob("*.lua")) == sorted(KINDS)


def test_application_example() -> None:
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"]["namespace"] == "argocd"
    spec = app["spec"]
    assert spec["source"]["repoURL"].startswith("https://")
    assert spec["source"]["path"]
    assert spec["destination"]["server"] == "https://kubernetes.default.svc"
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    options = set(spec["syncPolicy"]["syncOptions"])
    assert {
        "ServerSideApply=true",
        "SkipDryRunOnMissingResource=true",
        "RespectIgnoreDifferences=true",
    } <= options
    ignored = {(item["group"], item["kind"]): item for item in spec["ignoreDifferences"]}
    assert set(ignored) == {("routeiq.io", kind) for kind in KINDS}
    assert all(item["jsonPointers"] == ["/status"] for item in ignored.values())


if __name__ == "__main__":
    CM_PATCH.write_text(render_cm_patch())
    sys.stdout.write(f"wrote {CM_PATCH}\n")
