"""The ModelArtifact controller against the API emulator, moto's S3 server over HTTP and files.

`reconcile_artifact` / `recheck_artifact` run as the operator runs them: a real `KubeClient`
talking HTTP to the emulator (which validates every status written against the CRD), Secrets
read from it, artifacts fetched from moto with the endpoint from `spec.source.s3.endpointUrl`
and the credentials from a Secret (the process environment has none). moto's requests are
counted, so "not downloaded again" is asserted on what the server saw.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
import pytest
from moto.server import ThreadedMotoServer

from routeiq_operator.artifact.api import ModelArtifactStatus
from routeiq_operator.artifact.controller import recheck_artifact, reconcile_artifact
from routeiq_operator.artifact.verification import REASONS, condition_reason, ssrf_policy_from_env
from routeiq_operator.kube import KubeClient
from routeiq_operator.references import ObjectRef
from routeiq_router.artifacts.manifest import MANIFEST, SIGNATURE, ArtifactError
from routeiq_router.artifacts.publish import pack_artifact, sign_manifest
from routeiq_router.artifacts.signing import generate_keypair, key_id, load_public_key
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.settings import SettingsError
from tests.k8s.emulator import KubeEmulator
from tests.operator.scenarios import gateway
from tests.test_artifact_sources import upload_directory
from tests.test_artifacts import digest_of, make_artifact, payload

LOG = logging.getLogger("test.artifacts")
LOOPBACK = SsrfPolicy.from_values(hosts=["127.0.0.1"])  # moto listens there
CREDENTIALS = {"AWS_ACCESS_KEY_ID": b"from-the-secret", "AWS_SECRET_ACCESS_KEY": b"also-from-the-secret\n"}


# -- fixtures ------------------------------------------------------------------------------------------


@dataclass
class Moto:
    """moto's S3 server; every request it answers is recorded as (method, path)."""

    endpoint: str
    requests: list[tuple[str, str]] = field(default_factory=list)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="uploader",
            aws_secret_access_key="uploader",
        )

    def downloads(self) -> list[str]:
        """Object reads (GET /bucket/key); listings (GET /bucket) and HEADs are not downloads."""
        return [
            path
            for method, path in self.requests
            if method == "GET" and path.strip("/").count("/") >= 1 and not path.endswith("/")
        ]


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    recorder = Moto(endpoint=f"http://{host}:{port}")
    wsgi = server._server
    assert wsgi is not None
    inner = wsgi.app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        recorder.requests.append((str(environ["REQUEST_METHOD"]), str(environ.get("PATH_INFO", ""))))
        return inner(environ, start_response)

    wsgi.app = counting
    yield recorder
    server.stop()


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials and endpoints come from the ModelArtifact and its Secret only."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def namespace(emulator: KubeEmulator) -> str:
    """A fresh namespace per test (parametrized test names do not make valid namespace names)."""
    name = f"artifacts-{os.urandom(4).hex()}"
    emulator.create_object(
        "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


@pytest.fixture
def bucket(moto: Moto) -> str:
    name = f"models-{os.urandom(4).hex()}"
    moto.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


# -- helpers -------------------------------------------------------------------------------------------


def put_secret(emulator: KubeEmulator, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        },
    )


def s3_source(moto: Moto, uri: str, *, credentials: str | None = "s3-credentials") -> dict[str, Any]:
    source: dict[str, Any] = {"uri": uri, "s3": {"endpointUrl": moto.endpoint, "region": "us-east-1"}}
    if credentials is not None:
        source["credentialsSecretRef"] = {"name": credentials}
    return source


def create_artifact(
    emulator: KubeEmulator, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return emulator.create_object(
        "modelartifacts",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )


def current(emulator: KubeEmulator, namespace: str, name: str) -> dict[str, Any]:
    found = emulator.get_object("modelartifacts", name, namespace)
    assert found is not None
    return found


async def reconcile(
    kube: KubeClient,
    emulator: KubeEmulator,
    namespace: str,
    name: str,
    *,
    ssrf: SsrfPolicy = LOOPBACK,
    force: bool = True,
) -> dict[str, Any]:
    """One pass; asserts the status written is the one stored, valid against the API model."""
    status = (
        await reconcile_artifact(kube, current(emulator, namespace, name), LOG, ssrf=ssrf, force=force)
    ).status
    stored = current(emulator, namespace, name)["status"]
    assert stored == status
    ModelArtifactStatus.model_validate(stored)
    return status


async def recheck(
    kube: KubeClient, emulator: KubeEmulator, namespace: str, name: str, *, ssrf: SsrfPolicy = LOOPBACK
) -> dict[str, Any] | None:
    result = await recheck_artifact(kube, current(emulator, namespace, name), LOG, ssrf=ssrf)
    return None if result is None else result.status


def conditions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in status["conditions"]}


def assert_failed(status: Mapping[str, Any], reason: str, *message_parts: str) -> None:
    assert status["phase"] == "Failed", status
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", reason), ready
    assert conditions(status)["Verified"]["reason"] == reason
    for part in message_parts:
        assert part in ready["message"], (part, ready["message"])
        assert part in status["message"]
    for offered in ("digest", "sizeBytes", "strategy", "manifest", "sourceVersion", "signature"):
        assert offered not in status, f"a failed artifact must not offer {offered}"


def artifact_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


def signed_artifact(directory: Path, private_pem: bytes, files: dict[str, bytes] | None = None) -> Path:
    make_artifact(directory, files)
    sign_manifest(directory, private_pem)
    return directory


def other_artifact(directory: Path) -> Path:
    """A good artifact with another digest than make_artifact's."""
    files = payload()
    files["labels.json"] = b'{"models": ["small", "large"], "revision": 2}'
    return make_artifact(directory, files)


# -- a good artifact ---------------------------------------------------------------------------------


async def test_a_signed_artifact_on_s3_becomes_ready(
    emulator: KubeEmulator,
    kube: KubeClient,
    namespace: str,
    moto: Moto,
    bucket: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    directory = signed_artifact(tmp_path / "router", private_pem)
    upload_directory(moto.client(), bucket, "knn/v1", directory)
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    put_secret(emulator, namespace, "signing", {"signing.pub": public_pem})
    uri = f"s3://{bucket}/knn/v1"
    create_artifact(
        emulator,
        namespace,
        "knn",
        {
            "source": s3_source(moto, uri),
            "sha256": digest_of(directory),
            "signature": {"publicKeySecretRef": {"name": "signing", "key": "signing.pub"}},
            "strategy": "knn",
        },
    )
    status = await reconcile(kube, emulator, namespace, "knn")
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == 1
    assert status["uri"] == uri
    assert status["digest"] == digest_of(directory)
    assert status["sizeBytes"] == artifact_size(directory)  # manifest.json and manifest.sig included
    assert status["strategy"] == "knn"
    assert status["signature"] == "verified"
    assert status["publicKeyId"] == key_id(load_public_key(public_pem))
    assert status["sourceVersion"].startswith("s3:")
    assert status["lastVerifiedTime"]
    assert status["manifest"] == {
        "formatVersion": "1",
        "strategy": "knn",
        "createdAt": "2026-01-02T03:04:05Z",
        "embeddingModel": "all-MiniLM-L6-v2",
        "embeddingDimension": 4,
        "candidateModels": ["small", "large"],
        "trainingDataSha256": "ab" * 32,
        "metrics": {"accuracy": 0.75},
    }
    ready, verified = conditions(status)["Ready"], conditions(status)["Verified"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Verified", 1)
    assert (verified["status"], verified["reason"]) == ("True", "Verified")
    for check in ("3 file(s) match manifest.json", "spec.sha256", "verified with key", "spec.strategy"):
        assert check in verified["message"]


async def test_verifying_is_reported_before_the_download(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")
    pack_artifact(directory, tmp_path / "router.tar.gz")
    moto.client().put_object(Bucket=bucket, Key="v1.tar.gz", Body=(tmp_path / "router.tar.gz").read_bytes())
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    create_artifact(emulator, namespace, "tarball", {"source": s3_source(moto, f"s3://{bucket}/v1.tar.gz")})

    written: list[dict[str, Any]] = []

    class Recording(KubeClient):
        async def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
            written.append(dict(status))
            await super().patch_status(kind, namespace, name, status)

    recording = Recording(kube.api)
    status = (
        await reconcile_artifact(recording, current(emulator, namespace, "tarball"), LOG, ssrf=LOOPBACK)
    ).status
    assert [item["phase"] for item in written] == ["Verifying", "Ready"]
    assert written[0]["digest"] is None  # nothing is offered while verifying
    assert conditions(written[0])["Verified"]["status"] == "Unknown"
    assert status["digest"] == digest_of(directory)
    assert status["sizeBytes"] == artifact_size(directory)  # the files, not the archive
    assert status["signature"] == "absent"
    assert "publicKeyId" not in status
    # a Ready artifact re-verified (forced) stays Ready throughout: no Verifying in between
    written.clear()
    downloads = len(moto.downloads())
    await reconcile_artifact(
        recording, current(emulator, namespace, "tarball"), LOG, ssrf=LOOPBACK, force=True
    )
    assert len(moto.downloads()) == downloads + 1  # forced: downloaded again
    assert all(item["phase"] == "Ready" for item in written)  # written only if lastVerifiedTime moved


async def test_a_file_source(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")
    create_artifact(
        emulator, namespace, "local", {"source": {"uri": f"file://{directory}"}, "strategy": "knn"}
    )
    status = await reconcile(kube, emulator, namespace, "local")
    assert status["phase"] == "Ready"
    assert status["digest"] == digest_of(directory)
    assert status["sourceVersion"].startswith("dir:")
    assert await recheck(kube, emulator, namespace, "local") is None  # unchanged
    (directory / "labels.json").write_bytes(b'{"models": ["large", "small"]}')
    assert_failed(await recheck(kube, emulator, namespace, "local") or {}, "Sha256Mismatch", "labels.json")
    # the same file back: verified again (a failed artifact is re-checked every interval)
    shutil.rmtree(directory)
    make_artifact(directory)
    again = await recheck(kube, emulator, namespace, "local")
    assert again is not None
    assert again["phase"] == "Ready"
    assert again["digest"] == digest_of(directory)


# -- refused artifacts ---------------------------------------------------------------------------------


async def test_a_tampered_payload_fails_with_sha256_mismatch(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")
    (directory / "labels.json").write_bytes(b'{"models": ["large", "small"]}')  # after the manifest
    upload_directory(moto.client(), bucket, "tampered", directory)
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    create_artifact(emulator, namespace, "tampered", {"source": s3_source(moto, f"s3://{bucket}/tampered")})
    status = await reconcile(kube, emulator, namespace, "tampered")
    assert_failed(status, "Sha256Mismatch", "labels.json", "does not match the manifest")
    assert status["uri"] == f"s3://{bucket}/tampered"
    assert status["observedGeneration"] == 1
    assert status["lastVerifiedTime"]


@pytest.mark.parametrize(
    ("case", "required", "reason", "message"),
    [
        ("other-key", True, "SignatureInvalid", "does not verify with the configured public key"),
        ("other-key", False, "SignatureInvalid", "does not verify with the configured public key"),
        ("unsigned", True, "SignatureMissing", "no manifest.sig"),
        ("unsigned", False, None, "unsigned, accepted"),
        ("garbage", True, "SignatureInvalid", "not the base64 of a 64-byte ed25519 signature"),
    ],
)
async def test_signatures(
    emulator: KubeEmulator,
    kube: KubeClient,
    namespace: str,
    moto: Moto,
    bucket: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
    case: str,
    required: bool,
    reason: str | None,
    message: str,
) -> None:
    _, public_pem = keys
    directory = make_artifact(tmp_path / "router")
    if case == "other-key":
        sign_manifest(directory, generate_keypair()[0])
    elif case == "garbage":
        (directory / SIGNATURE).write_bytes(b"bm90IGEgc2lnbmF0dXJl\n")
    upload_directory(moto.client(), bucket, "signed", directory)
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    put_secret(
        emulator,
        namespace,
        "signing",
        {"key": base64.b64encode(load_public_key(public_pem).public_bytes_raw())},
    )
    create_artifact(
        emulator,
        namespace,
        "signed",
        {
            "source": s3_source(moto, f"s3://{bucket}/signed"),
            "signature": {"publicKeySecretRef": {"name": "signing", "key": "key"}, "required": required},
        },
    )
    status = await reconcile(kube, emulator, namespace, "signed")
    if reason is None:
        assert status["phase"] == "Ready"
        assert status["signature"] == "absent"
        assert message in conditions(status)["Verified"]["message"]
    else:
        assert_failed(status, reason, message)


async def test_an_unkeyed_artifact_reports_its_signature_as_present(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    directory = signed_artifact(tmp_path / "router", keys[0])
    create_artifact(emulator, namespace, "unkeyed", {"source": {"uri": f"file://{directory}"}})
    status = await reconcile(kube, emulator, namespace, "unkeyed")
    assert status["phase"] == "Ready"
    assert status["signature"] == "present"
    assert "not checked: spec.signature is not set" in conditions(status)["Verified"]["message"]


async def test_a_missing_object_fails(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str
) -> None:
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    create_artifact(emulator, namespace, "gone", {"source": s3_source(moto, f"s3://{bucket}/none.tar.gz")})
    assert_failed(await reconcile(kube, emulator, namespace, "gone"), "SourceNotFound", "no such object")
    create_artifact(emulator, namespace, "empty", {"source": s3_source(moto, f"s3://{bucket}/none")})
    assert_failed(await reconcile(kube, emulator, namespace, "empty"), "SourceNotFound", "no objects under")
    create_artifact(emulator, namespace, "nofile", {"source": {"uri": "file:///nonexistent/router"}})
    assert_failed(
        await reconcile(kube, emulator, namespace, "nofile"), "SourceNotFound", "/nonexistent/router"
    )


async def test_a_digest_pin_mismatch_fails(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")
    create_artifact(
        emulator, namespace, "pinned", {"source": {"uri": f"file://{directory}"}, "sha256": "0" * 64}
    )
    assert_failed(
        await reconcile(kube, emulator, namespace, "pinned"),
        "DigestMismatch",
        f"{MANIFEST} has sha256 {digest_of(directory)}, expected {'0' * 64}",
    )


async def test_a_strategy_mismatch_fails(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")  # a knn artifact
    create_artifact(emulator, namespace, "mlp", {"source": {"uri": f"file://{directory}"}, "strategy": "mlp"})
    assert_failed(
        await reconcile(kube, emulator, namespace, "mlp"),
        "StrategyMismatch",
        "the manifest's strategy is 'knn', spec.strategy is 'mlp'",
    )


async def test_an_endpoint_the_ssrf_policy_refuses_fails(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str
) -> None:
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    create_artifact(emulator, namespace, "private", {"source": s3_source(moto, f"s3://{bucket}/r")})
    status = await reconcile(kube, emulator, namespace, "private", ssrf=SsrfPolicy())
    assert_failed(status, "SsrfRefused", "127.0.0.1", "loopback", "ROUTEIQ_SSRF_ALLOW_PRIVATE")


# -- Secrets -----------------------------------------------------------------------------------------------


async def test_missing_secrets_and_keys_are_named(
    emulator: KubeEmulator,
    kube: KubeClient,
    namespace: str,
    moto: Moto,
    bucket: str,
    keys: tuple[bytes, bytes],
) -> None:
    uri = f"s3://{bucket}/r"
    create_artifact(emulator, namespace, "creds", {"source": s3_source(moto, uri, credentials="absent")})
    status = await reconcile(kube, emulator, namespace, "creds")
    assert_failed(status, "SecretNotFound", f"Secret {namespace}/absent", "spec.source.credentialsSecretRef")
    assert "lastVerifiedTime" not in status  # nothing was fetched

    put_secret(emulator, namespace, "half", {"AWS_ACCESS_KEY_ID": b"id"})
    create_artifact(emulator, namespace, "half", {"source": s3_source(moto, uri, credentials="half")})
    assert_failed(
        await reconcile(kube, emulator, namespace, "half"),
        "SecretKeyNotFound",
        f"Secret {namespace}/half",
        "has no key AWS_SECRET_ACCESS_KEY",
    )

    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    signature = {"publicKeySecretRef": {"name": "no-such-key", "key": "signing.pub"}}
    create_artifact(emulator, namespace, "nokey", {"source": s3_source(moto, uri), "signature": signature})
    assert_failed(
        await reconcile(kube, emulator, namespace, "nokey"),
        "SecretNotFound",
        f"Secret {namespace}/no-such-key",
        "spec.signature.publicKeySecretRef",
    )
    put_secret(emulator, namespace, "wrong-key", {"other.pub": keys[1]})
    signature = {"publicKeySecretRef": {"name": "wrong-key", "key": "signing.pub"}}
    create_artifact(emulator, namespace, "keyname", {"source": s3_source(moto, uri), "signature": signature})
    assert_failed(
        await reconcile(kube, emulator, namespace, "keyname"), "SecretKeyNotFound", "has no key signing.pub"
    )
    put_secret(emulator, namespace, "not-a-key", {"signing.pub": b"hello"})
    signature = {"publicKeySecretRef": {"name": "not-a-key", "key": "signing.pub"}}
    create_artifact(emulator, namespace, "badkey", {"source": s3_source(moto, uri), "signature": signature})
    assert_failed(
        await reconcile(kube, emulator, namespace, "badkey"), "PublicKeyInvalid", "not an ed25519 public key"
    )


async def test_the_secret_credentials_are_the_ones_used(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str, tmp_path: Path
) -> None:
    directory = make_artifact(tmp_path / "router")
    upload_directory(moto.client(), bucket, "r", directory)
    uri = f"s3://{bucket}/r"
    # without a Secret the operator's environment is used, and here it holds no credentials
    create_artifact(emulator, namespace, "anonymous", {"source": s3_source(moto, uri, credentials=None)})
    assert_failed(await reconcile(kube, emulator, namespace, "anonymous"), "FetchFailed", "credentials")
    # the region may come from the Secret too
    put_secret(emulator, namespace, "regional", {**CREDENTIALS, "AWS_REGION": b"eu-west-1"})
    source = {"uri": uri, "s3": {"endpointUrl": moto.endpoint}, "credentialsSecretRef": {"name": "regional"}}
    create_artifact(emulator, namespace, "regional", {"source": source})
    assert (await reconcile(kube, emulator, namespace, "regional"))["phase"] == "Ready"


async def test_gcs_credentials_must_be_a_service_account_document(
    emulator: KubeEmulator, kube: KubeClient, namespace: str
) -> None:
    put_secret(emulator, namespace, "gcs-empty", {"AWS_ACCESS_KEY_ID": b"wrong cloud"})
    source = {"uri": "gs://models-bucket/r", "credentialsSecretRef": {"name": "gcs-empty"}}
    create_artifact(emulator, namespace, "gcs-empty", {"source": source})
    assert_failed(
        await reconcile(kube, emulator, namespace, "gcs-empty"),
        "SecretKeyNotFound",
        "has no key credentials.json",
    )
    put_secret(emulator, namespace, "gcs-text", {"credentials.json": b"not json"})
    source = {"uri": "gs://models-bucket/r", "credentialsSecretRef": {"name": "gcs-text"}}
    create_artifact(emulator, namespace, "gcs-text", {"source": source})
    assert_failed(
        await reconcile(kube, emulator, namespace, "gcs-text"),
        "CredentialsInvalid",
        "not a service-account key",
    )


# -- the spec ----------------------------------------------------------------------------------------------


async def test_an_invalid_spec_is_reported_naming_the_field(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    create_artifact(emulator, namespace, "invalid", {"source": {"uri": f"file://{tmp_path}"}})
    body = current(emulator, namespace, "invalid")
    body["spec"]["checkIntervalSeconds"] = 5  # as if admission had been bypassed
    status = (await reconcile_artifact(kube, body, LOG, ssrf=LOOPBACK)).status
    assert status == current(emulator, namespace, "invalid")["status"]
    assert_failed(status, "InvalidSpec", "spec.checkIntervalSeconds")
    body["spec"]["checkIntervalSeconds"] = 60
    body["spec"]["source"]["s3"] = {"region": "us-east-1"}  # an option a file:// source would ignore
    status = (await reconcile_artifact(kube, body, LOG, ssrf=LOOPBACK)).status
    assert_failed(status, "InvalidSpec", "spec.source.s3", "s3:// URIs only")


async def test_a_pvc_source_stays_pending(emulator: KubeEmulator, kube: KubeClient, namespace: str) -> None:
    create_artifact(
        emulator, namespace, "claim", {"source": {"pvc": {"claimName": "models", "path": "knn/v1"}}}
    )
    status = await reconcile(kube, emulator, namespace, "claim")
    assert status["phase"] == "Pending"
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "PvcVerificationNotImplemented")
    assert "models:knn/v1" in ready["message"]
    assert "digest" not in status
    assert await recheck(kube, emulator, namespace, "claim") is None


# -- re-verification -----------------------------------------------------------------------------------


async def test_recheck_downloads_only_when_the_source_changed(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str, tmp_path: Path
) -> None:
    s3 = moto.client()
    first = make_artifact(tmp_path / "first")
    upload_directory(s3, bucket, "prod", first)
    put_secret(emulator, namespace, "s3-credentials", CREDENTIALS)
    uri = f"s3://{bucket}/prod"
    create_artifact(emulator, namespace, "prod", {"source": s3_source(moto, uri)})
    ready = await reconcile(kube, emulator, namespace, "prod")
    assert ready["digest"] == digest_of(first)

    # the same source: nothing downloaded, nothing written
    before = len(moto.downloads())
    assert await recheck(kube, emulator, namespace, "prod") is None
    assert await reconcile(kube, emulator, namespace, "prod", force=False) == ready
    assert len(moto.downloads()) == before
    assert current(emulator, namespace, "prod")["status"] == ready

    # an old transition time survives a re-verification that keeps the artifact Ready
    old = [{**item, "lastTransitionTime": "2020-01-01T00:00:00Z"} for item in ready["conditions"]]
    emulator.patch_status("modelartifacts", "prod", {"conditions": old}, namespace)

    # a new good artifact at the same URI: verified again, Ready with the new digest
    second = other_artifact(tmp_path / "second")
    upload_directory(s3, bucket, "prod", second)
    renewed = await recheck(kube, emulator, namespace, "prod")
    assert renewed is not None
    assert renewed["phase"] == "Ready"
    assert renewed["digest"] == digest_of(second) != digest_of(first)
    assert renewed["sourceVersion"] != ready["sourceVersion"]
    assert len(moto.downloads()) > before
    assert conditions(renewed)["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"

    # tampered in place: Failed within one check, and the transition is stamped anew
    s3.put_object(
        Bucket=bucket, Key="prod/labels.json", Body=b'{"models": ["large", "small"], "revision": 2}'
    )
    failed = await recheck(kube, emulator, namespace, "prod")
    assert failed is not None
    assert_failed(failed, "Sha256Mismatch", "labels.json")
    assert conditions(failed)["Ready"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert current(emulator, namespace, "prod")["status"] == failed

    # deleted: Failed, SourceNotFound
    for name in [*os.listdir(second)]:
        s3.delete_object(Bucket=bucket, Key=f"prod/{name}")
    gone = await recheck(kube, emulator, namespace, "prod")
    assert gone is not None
    assert_failed(gone, "SourceNotFound", "no objects under this prefix")

    # republished: Ready again
    upload_directory(s3, bucket, "prod", first)
    back = await recheck(kube, emulator, namespace, "prod")
    assert back is not None
    assert (back["phase"], back["digest"]) == ("Ready", digest_of(first))


async def test_recheck_verifies_again_when_the_generation_or_key_changed(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    old_private, old_public = generate_keypair()
    directory = signed_artifact(tmp_path / "router", old_private)
    put_secret(emulator, namespace, "signing", {"signing.pub": old_public})
    signature = {"publicKeySecretRef": {"name": "signing", "key": "signing.pub"}}
    create_artifact(
        emulator, namespace, "rotating", {"source": {"uri": f"file://{directory}"}, "signature": signature}
    )
    assert (await reconcile(kube, emulator, namespace, "rotating"))["signature"] == "verified"
    assert await recheck(kube, emulator, namespace, "rotating") is None

    # the key is rotated in the Secret: the artifact signed with the old key is refused
    emulator.patch_object(
        "secrets",
        "signing",
        {"data": {"signing.pub": base64.b64encode(generate_keypair()[1]).decode()}},
        namespace,
    )
    rotated = await recheck(kube, emulator, namespace, "rotating")
    assert rotated is not None
    assert_failed(rotated, "SignatureInvalid", "does not verify")

    # a spec change (new generation) is verified at once, whatever the status said
    emulator.patch_object("modelartifacts", "rotating", {"spec": {"signature": None}}, namespace)
    changed = await recheck(kube, emulator, namespace, "rotating")
    assert changed is not None
    assert (changed["phase"], changed["observedGeneration"], changed["signature"]) == ("Ready", 2, "present")


# -- the gateways that follow a new digest ---------------------------------------------------------------


async def test_a_new_digest_returns_the_gateways_that_use_the_artifact(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """The pass does not reconcile the gateways itself: it returns them, and only when the digest in
    status changed (verified first, replaced at the source, refused)."""
    directory = make_artifact(tmp_path / "router")
    create_artifact(emulator, namespace, "knn", {"source": {"uri": f"file://{directory}"}})
    routing = {"strategy": "knn", "modelArtifactRef": {"name": "knn"}}
    emulator.create_object("routeiqgateways", gateway("routes-with-it", namespace, routing=routing))
    emulator.create_object("routeiqgateways", gateway("tests-it", namespace))
    emulator.create_object("routeiqgateways", gateway("unrelated", namespace))
    variants = [
        {"name": "control", "strategy": "round-robin", "weight": 50},
        {"name": "candidate", "strategy": "knn", "modelArtifactRef": {"name": "knn"}, "weight": 50},
    ]
    emulator.create_object(
        "routingexperiments",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "RoutingExperiment",
            "metadata": {"name": "exp", "namespace": namespace},
            "spec": {"gatewayRef": {"name": "tests-it"}, "control": "control", "variants": variants},
        },
    )
    users = sorted(ObjectRef("RouteIQGateway", namespace, name) for name in ("routes-with-it", "tests-it"))

    first = await reconcile_artifact(
        kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK, force=True
    )
    assert first.status["digest"] == digest_of(directory)
    assert sorted(first.follow) == users
    # verified again with the same digest, or found unchanged: no gateway to reconcile
    again = await reconcile_artifact(
        kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK, force=True
    )
    assert (again.status["digest"], again.follow) == (first.status["digest"], ())
    unchanged = await reconcile_artifact(kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK)
    assert unchanged.follow == ()
    assert await recheck_artifact(kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK) is None

    # another artifact at the same URI: the re-check returns the gateways with the new digest
    shutil.rmtree(directory)
    other_artifact(directory)
    renewed = await recheck_artifact(kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK)
    assert renewed is not None
    assert renewed.status["digest"] == digest_of(directory) != first.status["digest"]
    assert sorted(renewed.follow) == users
    # refused: the digest is gone from status, and the gateways follow that too
    (directory / "labels.json").write_bytes(b'{"models": ["large", "small"]}')
    refused = await recheck_artifact(kube, current(emulator, namespace, "knn"), LOG, ssrf=LOOPBACK)
    assert refused is not None
    assert "digest" not in refused.status
    assert sorted(refused.follow) == users


async def test_a_secret_value_that_is_not_text_is_invalid_credentials(
    emulator: KubeEmulator, kube: KubeClient, namespace: str, moto: Moto, bucket: str
) -> None:
    put_secret(emulator, namespace, "binary", {**CREDENTIALS, "AWS_SESSION_TOKEN": b"\xff\xfe"})
    create_artifact(
        emulator, namespace, "binary", {"source": s3_source(moto, f"s3://{bucket}/r", credentials="binary")}
    )
    assert_failed(
        await reconcile(kube, emulator, namespace, "binary"),
        "CredentialsInvalid",
        f"Secret {namespace}/binary (spec.source.credentialsSecretRef): key AWS_SESSION_TOKEN is not UTF-8 text",
    )
    put_secret(emulator, namespace, "blank", {**CREDENTIALS, "AWS_REGION": b" \n"})
    create_artifact(
        emulator, namespace, "blank", {"source": s3_source(moto, f"s3://{bucket}/r", credentials="blank")}
    )
    assert_failed(
        await reconcile(kube, emulator, namespace, "blank"), "CredentialsInvalid", "key AWS_REGION is empty"
    )


# -- pieces ----------------------------------------------------------------------------------------------


def test_condition_reasons_are_camel_case() -> None:
    for reason, expected in [
        ("digest", "DigestMismatch"),
        ("signature_missing", "SignatureMissing"),
        ("signature", "SignatureInvalid"),
        ("sha256_mismatch", "Sha256Mismatch"),
        ("ssrf", "SsrfRefused"),
        ("too_large", "TooLarge"),
        ("manifest", "ManifestInvalid"),
        ("some_new_check", "SomeNewCheck"),
    ]:
        assert condition_reason(ArtifactError("x", reason=reason)) == expected
    assert condition_reason(ArtifactError("s3://b/k: no such object", reason="fetch")) == "SourceNotFound"
    assert condition_reason(ArtifactError("s3://b/k: S3 error 403", reason="fetch")) == "FetchFailed"
    assert all(value[0].isupper() and "_" not in value for value in REASONS.values())


def test_the_ssrf_policy_comes_from_the_gateways_variables() -> None:
    policy = ssrf_policy_from_env(
        {
            "ROUTEIQ_SSRF_ALLOW_PRIVATE": "true",
            "ROUTEIQ_SSRF_HOST_ALLOWLIST": "minio.storage.svc, s3.local",
            "ROUTEIQ_SSRF_CIDR_ALLOWLIST": "10.20.0.0/16",
            # the operator's own and other gateway variables are not its business here
            "ROUTEIQ_OPERATOR_RESYNC_SECONDS": "60",
            "ROUTEIQ_ROUTING_STRATEGY": "no-such-strategy",
        }
    )
    assert policy.allow_private
    assert policy.host_allowlist == frozenset({"minio.storage.svc", "s3.local"})
    assert [str(network) for network in policy.cidr_allowlist] == ["10.20.0.0/16"]
    assert ssrf_policy_from_env({}) == SsrfPolicy()
    with pytest.raises(SettingsError, match="ROUTEIQ_SSRF_CIDR_ALLOWLIST"):
        ssrf_policy_from_env({"ROUTEIQ_SSRF_CIDR_ALLOWLIST": "not-a-network"})
    with pytest.raises(SettingsError, match="ROUTEIQ_SSRF_ALLOW_PRIVATE"):
        ssrf_policy_from_env({"ROUTEIQ_SSRF_ALLOW_PRIVATE": "perhaps"})


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEIQ_SSRF_HOST_ALLOWLIST", "minio.internal")
    monkeypatch.delenv("ROUTEIQ_SSRF_ALLOW_PRIVATE", raising=False)
    monkeypatch.delenv("ROUTEIQ_SSRF_CIDR_ALLOWLIST", raising=False)
    assert ssrf_policy_from_env().host_allowlist == frozenset({"minio.internal"})
