"""Which images a gateway may run, images pinned by digest, and resource requests within limits.

The policy (`gateway.images`) is tested pure; the operator's behaviour with `reconcile_gateway`
in-process against the API emulator (a refused gateway gets Ready=False / ImageNotAllowed and
nothing is applied, not even half); `routeiq render` and `routeiq operator` through the CLI.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeiq_operator.gateway.api import GatewayImage, RouteIQGateway, quantity
from routeiq_operator.gateway.children import ClusterFacts, desired_children
from routeiq_operator.gateway.controller import reconcile_gateway
from routeiq_operator.gateway.images import (
    ALLOWED_VARIABLE,
    DIGEST_REQUIRED_VARIABLE,
    IMAGE_NOT_ALLOWED,
    ImagePolicy,
)
from routeiq_operator.kube import KubeClient
from routeiq_operator.validation import InvalidSpec, check, load
from tests.k8s.emulator import ApiError, KubeEmulator
from tests.operator.conftest import ROUTEIQ
from tests.operator.scenarios import gateway
from tests.ports import free_port

DIGEST = "sha256:" + "0123456789abcdef" * 4
LOGGER = logging.getLogger("tests.security_images")
OURS = ImagePolicy(allowed=("ghcr.io/routeiq",))


def image(repository: str, digest: str | None = None) -> GatewayImage:
    return GatewayImage(repository=repository, digest=digest)


# ---- the policy ----------------------------------------------------------------------------------------


def test_no_policy_admits_any_repository() -> None:
    assert ImagePolicy().problem(image("docker.io/someone/anything")) is None
    assert ImagePolicy.from_env({}) == ImagePolicy()
    assert ImagePolicy.from_env({ALLOWED_VARIABLE: " , "}) == ImagePolicy()


@pytest.mark.parametrize(
    ("repository", "allowed"),
    [
        ("ghcr.io/routeiq", True),
        ("ghcr.io/routeiq/routeiq-gateway", True),
        ("ghcr.io/routeiq/team/gateway", True),
        ("GHCR.io/routeiq/routeiq-gateway", True),  # registry hosts are case-insensitive
        ("ghcr.io/routeiq-fork/routeiq-gateway", False),  # a prefix matches at a path boundary only
        ("ghcr.io/routeiqgateway", False),
        ("ghcr.io", False),
        ("ghcr.io.evil.example/routeiq/gateway", False),
        ("docker.io/routeiq/routeiq-gateway", False),
        ("routeiq/routeiq-gateway", False),  # compared as written: Docker Hub is not ghcr.io
    ],
)
def test_a_prefix_admits_its_repository_and_what_is_beneath(repository: str, allowed: bool) -> None:
    policy = ImagePolicy.from_env({ALLOWED_VARIABLE: "ghcr.io/routeiq/, registry.example.com:5000/platform"})
    assert policy.allowed == ("ghcr.io/routeiq", "registry.example.com:5000/platform")
    problem = policy.problem(image(repository))
    assert (problem is None) is allowed, problem
    if not allowed:
        assert problem is not None
        assert f"spec.image.repository {repository} is not allowed" in problem
        # the rule: which repositories, and where it is set
        assert "ghcr.io/routeiq, registry.example.com:5000/platform" in problem
        assert ALLOWED_VARIABLE in problem
        assert "gatewayImages.allowedRepositories" in problem


def test_a_repository_on_a_registry_with_a_port() -> None:
    policy = ImagePolicy.from_env({ALLOWED_VARIABLE: "registry.example.com:5000/platform"})
    assert policy.problem(image("registry.example.com:5000/platform/gateway")) is None
    assert policy.problem(image("registry.example.com:5001/platform/gateway")) is not None
    assert policy.problem(image("registry.example.com/platform/gateway")) is not None


def test_digest_required_repositories() -> None:
    policy = ImagePolicy.from_env({DIGEST_REQUIRED_VARIABLE: "ghcr.io/routeiq"})
    problem = policy.problem(image("ghcr.io/routeiq/routeiq-gateway"))
    assert problem is not None
    assert "must be pinned by spec.image.digest" in problem
    assert DIGEST_REQUIRED_VARIABLE in problem
    assert "gatewayImages.digestRequiredRepositories" in problem
    assert policy.problem(image("ghcr.io/routeiq/routeiq-gateway", DIGEST)) is None
    assert policy.problem(image("registry.example.com/gateway")) is None  # not under the prefix


@pytest.mark.parametrize(
    "entry", ["ghcr.io/routeiq:latest", f"ghcr.io/routeiq@{DIGEST}", "ghcr.io/*", "https://ghcr.io/routeiq"]
)
@pytest.mark.parametrize("variable", [ALLOWED_VARIABLE, DIGEST_REQUIRED_VARIABLE])
def test_an_entry_that_is_not_a_repository_is_refused_naming_the_variable(entry: str, variable: str) -> None:
    with pytest.raises(ValueError, match=variable) as refused:
        ImagePolicy.from_env({variable: f"ghcr.io/ok,{entry}"})
    assert "is not an image repository" in str(refused.value)


# ---- digests ---------------------------------------------------------------------------------------------


def _rendered_image(spec_image: dict[str, Any]) -> str:
    desired = desired_children(load(RouteIQGateway, gateway("gw", "ns", image=spec_image)), ClusterFacts())
    (deployment,) = [child for child in desired.children if child["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: str = container["image"]
    return result


def test_an_image_pinned_by_digest_runs_by_digest() -> None:
    repository = "ghcr.io/routeiq/routeiq-gateway"
    assert _rendered_image({"repository": repository, "tag": "1.2.3"}) == f"{repository}:1.2.3"
    assert _rendered_image({"repository": repository, "tag": "1.2.3", "digest": DIGEST}) == (
        f"{repository}:1.2.3@{DIGEST}"
    )


@pytest.mark.parametrize(
    ("spec_image", "path"),
    [
        ({"digest": "sha256:abc"}, "spec.image.digest"),
        ({"digest": DIGEST.upper()}, "spec.image.digest"),
        ({"digest": "sha512:" + "0" * 128}, "spec.image.digest"),
        ({"repository": "ghcr.io/routeiq/gateway:1.0"}, "spec.image.repository"),
        ({"repository": f"ghcr.io/routeiq/gateway@{DIGEST}"}, "spec.image.repository"),
        ({"repository": "ghcr.io/routeiq/Gateway"}, "spec.image.repository"),
        ({"repository": "ghcr.io/routeiq/ gateway"}, "spec.image.repository"),
        ({"tag": f"1.0@{DIGEST}"}, "spec.image.tag"),
    ],
)
def test_the_crd_refuses_malformed_images(spec_image: dict[str, Any], path: str) -> None:
    violations = check(RouteIQGateway, gateway("gw", "ns", image=spec_image))
    assert [violation.path for violation in violations] == [path], violations


def test_admission_accepts_a_digest_and_refuses_a_bad_one(emulator: KubeEmulator, namespace: str) -> None:
    created = emulator.create_object(
        "routeiqgateways", gateway("pinned", namespace, image={"digest": DIGEST}), namespace
    )
    assert created["spec"]["image"]["digest"] == DIGEST
    with pytest.raises(ApiError) as refused:
        emulator.create_object(
            "routeiqgateways", gateway("bad", namespace, image={"repository": "x/y:latest"}), namespace
        )
    assert refused.value.code == 422
    assert "spec.image.repository" in refused.value.message


# ---- resources: requests within limits ------------------------------------------------------------------


def test_quantities() -> None:
    assert quantity("500m") == quantity("0.5")
    assert quantity("1") == quantity("1000m")
    assert quantity("1Gi") == 1024 * quantity("1Mi")
    assert quantity("1G") < quantity("1Gi")
    assert quantity("1.5") > quantity("1499m")


@pytest.mark.parametrize(
    ("resources", "paths"),
    [
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}, ["spec.resources.requests.cpu"]),
        ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}, ["spec.resources.requests.memory"]),
        (
            {"requests": {"cpu": "1", "memory": "2G"}, "limits": {"cpu": "999m", "memory": "1Gi"}},
            ["spec.resources.requests.cpu", "spec.resources.requests.memory"],
        ),
    ],
)
def test_requests_above_limits_are_refused_naming_the_field(
    resources: dict[str, Any], paths: list[str]
) -> None:
    body = gateway("gw", "ns", resources=resources)
    violations = check(RouteIQGateway, body)
    assert [violation.path for violation in violations] == paths
    for violation in violations:
        field = violation.path.rpartition(".")[2]
        assert f"must not exceed limits.{field}" in violation.message
    with pytest.raises(InvalidSpec):
        load(RouteIQGateway, body)


@pytest.mark.parametrize(
    "resources",
    [
        {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}},
        {"requests": {"cpu": "4"}},  # a limit the tier sets is not the user's to break here
        {"limits": {"cpu": "250m"}},
        {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
    ],
)
def test_requests_within_limits_are_accepted(resources: dict[str, Any]) -> None:
    assert check(RouteIQGateway, gateway("gw", "ns", resources=resources)) == []


def test_routeiq_validate_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(gateway("gw", "ns", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}))
    )
    result = subprocess.run(
        [ROUTEIQ, "validate", "-f", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1, result
    assert "spec.resources.requests.cpu: must not exceed limits.cpu" in result.stdout


# ---- the operator: a refused image is not applied ----------------------------------------------------------


def _body(emulator: KubeEmulator, namespace: str, name: str) -> dict[str, Any]:
    body = emulator.get_object("routeiqgateways", name, namespace)
    assert body is not None
    return body


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in (body.get("status") or {}).get("conditions") or []}


def _children(emulator: KubeEmulator, namespace: str) -> list[str]:
    return [
        f"{resource}/{item['metadata']['name']}"
        for resource in ("serviceaccounts", "configmaps", "deployments", "services", "networkpolicies")
        for item in emulator.list_objects(resource, namespace, label_selector="app.kubernetes.io/managed-by")
    ]


async def test_a_gateway_outside_the_allowlist_is_not_applied(
    kube: KubeClient, emulator: KubeEmulator, namespace: str
) -> None:
    foreign = {"repository": "docker.io/someone/gateway", "tag": "latest"}
    emulator.create_object("routeiqgateways", gateway("gw", namespace, image=foreign), namespace)
    status = await reconcile_gateway(kube, _body(emulator, namespace, "gw"), LOGGER, images=OURS)
    stored = _body(emulator, namespace, "gw")
    assert stored["status"]["conditions"] == status["conditions"]
    conditions = _conditions(stored)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == IMAGE_NOT_ALLOWED
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Progressing"]["status"] == "False"
    message = conditions["Ready"]["message"]
    assert "docker.io/someone/gateway is not allowed" in message
    assert ALLOWED_VARIABLE in message
    assert "ghcr.io/routeiq" in message
    assert _children(emulator, namespace) == []  # nothing at all, not even the ServiceAccount
    # a second pass changes nothing (no status write)
    version = stored["metadata"]["resourceVersion"]
    await reconcile_gateway(kube, _body(emulator, namespace, "gw"), LOGGER, images=OURS)
    assert _body(emulator, namespace, "gw")["metadata"]["resourceVersion"] == version


async def test_switching_to_a_refused_image_leaves_the_running_gateway_as_it_was(
    kube: KubeClient, emulator: KubeEmulator, namespace: str
) -> None:
    emulator.create_object("routeiqgateways", gateway("gw", namespace), namespace)
    await reconcile_gateway(kube, _body(emulator, namespace, "gw"), LOGGER, images=OURS)
    before = emulator.get_object("deployments", "gw-gateway", namespace)
    assert before is not None
    children = _children(emulator, namespace)
    assert "deployments/gw-gateway" in children
    assert _conditions(_body(emulator, namespace, "gw"))["Ready"]["reason"] != IMAGE_NOT_ALLOWED

    body = _body(emulator, namespace, "gw")
    spec = copy.deepcopy(body["spec"])
    spec["image"] = {"repository": "ghcr.io/routeiq-fork/gateway", "tag": "1.0"}
    spec["workers"] = 7  # a change that would alter the Deployment too: not applied either
    emulator.patch_object("routeiqgateways", "gw", {"spec": spec}, namespace)
    await reconcile_gateway(kube, _body(emulator, namespace, "gw"), LOGGER, images=OURS)
    after = emulator.get_object("deployments", "gw-gateway", namespace)
    assert after is not None
    assert after["spec"] == before["spec"]
    assert _children(emulator, namespace) == children
    assert _conditions(_body(emulator, namespace, "gw"))["Ready"]["reason"] == IMAGE_NOT_ALLOWED

    # pinned by digest in an allowed repository: applied again
    spec["image"] = {"repository": "ghcr.io/routeiq/routeiq-gateway", "tag": "1.0", "digest": DIGEST}
    emulator.patch_object("routeiqgateways", "gw", {"spec": spec}, namespace)
    await reconcile_gateway(kube, _body(emulator, namespace, "gw"), LOGGER, images=OURS)
    applied = emulator.get_object("deployments", "gw-gateway", namespace)
    assert applied is not None
    (container,) = applied["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/routeiq/routeiq-gateway:1.0@{DIGEST}"
    assert _conditions(_body(emulator, namespace, "gw"))["Ready"]["reason"] != IMAGE_NOT_ALLOWED


# ---- the CLI ------------------------------------------------------------------------------------------------


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEIQ_")}
    return {**env, **variables}


def test_routeiq_render_applies_the_policy_of_its_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway("gw", "ns", image={"repository": "docker.io/x/gw"})))
    refused = subprocess.run(
        [ROUTEIQ, "render", "-f", str(path)],
        env=_env(ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES="ghcr.io/routeiq"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1, refused
    assert refused.stdout == ""
    assert (
        "Ready=False (ImageNotAllowed): spec.image.repository docker.io/x/gw is not allowed" in refused.stderr
    )
    rendered = subprocess.run(
        [ROUTEIQ, "render", "-f", str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "image: docker.io/x/gw:0.1.0" in rendered.stdout


def test_the_operator_refuses_a_bad_policy_at_start_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(free_port())],
        env=_env(
            ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES="ghcr.io/routeiq:latest",
            ROUTEIQ_OPERATOR_METRICS_PORT="0",
            KUBECONFIG=str(tmp_path / "missing"),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"routeiq: error: {ALLOWED_VARIABLE}: 'ghcr.io/routeiq:latest' is not an image repository"
    )


# ---- docs/security.md: the example admission policy does what it says -------------------------------------


def _documented_policy_expression() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n( *apiVersion: admissionregistration.*?)```", text, re.DOTALL)
    assert match is not None, "docs/security.md lost its admission policy example"
    documents = list(yaml.safe_load_all(textwrap.dedent(match[1])))
    (policy,) = [document for document in documents if document["kind"] == "ValidatingAdmissionPolicy"]
    (validation,) = policy["spec"]["validations"]
    expression: str = validation["expression"]
    return expression


@pytest.mark.parametrize(
    ("secrets", "allowed"),
    [
        ({"masterKey": {"name": "routeiq-keys", "key": "master"}}, True),
        ({"masterKey": {"name": "db-admin", "key": "master"}}, False),
        (
            {
                "masterKey": {"name": "routeiq-keys", "key": "master"},
                "redisUrl": {"name": "routeiq-redis", "key": "url"},
                "providerKeys": [
                    {"env": "OPENAI_API_KEY", "secretKeyRef": {"name": "routeiq-keys", "key": "o"}}
                ],
            },
            True,
        ),
        (
            {
                "masterKey": {"name": "routeiq-keys", "key": "master"},
                "providerKeys": [
                    {"env": "OPENAI_API_KEY", "secretKeyRef": {"name": "cloud-root", "key": "o"}}
                ],
            },
            False,
        ),
        ({"databaseUrl": {"name": "payroll-db", "key": "url"}}, False),
    ],
)
def test_the_documented_admission_policy(secrets: dict[str, Any], allowed: bool) -> None:
    import celpy
    from celpy.adapter import json_to_cel

    environment = celpy.Environment()
    program = environment.program(environment.compile(_documented_policy_expression()))
    body = gateway("gw", "ns")
    body["spec"]["secrets"] = secrets
    assert bool(program.evaluate({"object": json_to_cel(body)})) is allowed


@pytest.mark.parametrize(
    ("tier", "resources", "requests", "limits"),
    [
        # production presets: requests 1 CPU / 1Gi, limits 4 CPU / 4Gi
        (
            "production",
            {"limits": {"cpu": "500m"}},
            {"cpu": "500m", "memory": "1Gi"},
            {"cpu": "500m", "memory": "4Gi"},
        ),
        (
            "production",
            {"requests": {"memory": "8Gi"}},
            {"cpu": "1", "memory": "8Gi"},
            {"cpu": "4", "memory": "8Gi"},
        ),
        (
            "production",
            {"limits": {"cpu": "2"}},
            {"cpu": "1", "memory": "1Gi"},
            {"cpu": "2", "memory": "4Gi"},
        ),
    ],
)
def test_a_tier_preset_never_puts_a_request_above_a_limit(
    tier: str, resources: dict[str, Any], requests: dict[str, str], limits: dict[str, str]
) -> None:
    desired = desired_children(
        load(RouteIQGateway, gateway("gw", "ns", tier=tier, resources=resources)), ClusterFacts()
    )
    (deployment,) = [child for child in desired.children if child["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": requests, "limits": limits}
    for name in ("cpu", "memory"):
        assert quantity(container["resources"]["requests"][name]) <= quantity(
            container["resources"]["limits"][name]
        )
