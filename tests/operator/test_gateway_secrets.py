"""A gateway's Secrets: only references in its env, an ExternalSecret only where its CRD exists."""

from __future__ import annotations

from routeiq_operator.gateway.children import ClusterFacts
from tests.operator.gateway_render import BASE, build, by_kind, container, env


def test_secrets_are_only_ever_references() -> None:
    state = build(secrets={**BASE["spec"]["secrets"], "redisUrl": {"name": "redis", "key": "url"}})
    variables = env(state)
    assert variables["LITELLM_MASTER_KEY"] == {
        "secretKeyRef": {"name": "routeiq-secrets", "key": "master-key"}
    }
    assert variables["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "routeiq-secrets", "key": "openai"}}
    assert variables["REDIS_URL"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    config = by_kind(state)["ConfigMap"]["data"]["config.yaml"]
    assert "api_key: os.environ/OPENAI_API_KEY" in config


EXTERNAL = {
    **BASE["spec"]["secrets"],
    "externalSecret": {
        "secretStoreRef": {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"},
        "data": [{"secretKey": "DATABASE_URL", "remoteRef": {"key": "routeiq/prod/database-url"}}],
    },
}


def test_external_secret_when_its_crd_exists() -> None:
    state = build(secrets=EXTERNAL)
    external = by_kind(state)["ExternalSecret"]
    assert external["apiVersion"] == "external-secrets.io/v1"
    assert external["spec"]["target"]["name"] == "gw-gateway-secrets"
    assert external["spec"]["secretStoreRef"] == {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"}
    assert container(state)["envFrom"] == [{"secretRef": {"name": "gw-gateway-secrets"}}]
    assert state.problems == []


def test_external_secret_without_its_crd_is_a_problem_not_a_child() -> None:
    state = build(ClusterFacts(external_secrets=False), secrets=EXTERNAL)
    assert "ExternalSecret" not in by_kind(state)
    assert [(p.condition, p.reason) for p in state.problems] == [
        ("SecretsSynced", "ExternalSecretsNotInstalled")
    ]
    assert "External Secrets Operator" in state.problems[0].message
