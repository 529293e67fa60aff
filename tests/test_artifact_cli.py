"""`routeiq artifact ...` as a user runs it: subprocesses, exit codes, stdout and stderr."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped,unused-ignore]
import pytest
from moto.server import ThreadedMotoServer

from routeiq_router.artifacts.manifest import MANIFEST
from tests.gateway_process import ROUTEIQ, gateway_environment
from tests.test_artifacts import digest_of, make_artifact


def artifact(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROUTEIQ, "artifact", *map(str, args)],
        env=gateway_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def router(tmp_path: Path) -> Path:
    return make_artifact(tmp_path / "router")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub"
    private.parent.mkdir()
    done = artifact("keygen", "--out-private", private, "--out-public", public)
    assert done.returncode == 0, done.stderr
    return private, public


def test_the_artifact_commands_are_listed() -> None:
    done = artifact("--help")
    assert done.returncode == 0, done.stderr
    for command in ("inspect", "verify", "keygen", "sign", "pack"):
        assert command in done.stdout


def test_inspect_prints_the_manifest_and_digest(router: Path) -> None:
    done = artifact("inspect", router)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (
        shown["digest"] == digest_of(router) == hashlib.sha256((router / MANIFEST).read_bytes()).hexdigest()
    )
    assert shown["source"] == str(router)
    assert shown["strategy"] == "knn"
    assert shown["signature"] == "absent"
    assert shown["candidates"] == ["small", "large"]
    assert {entry["path"] for entry in shown["files"]} == {"centroids.npz", "classifier.skops", "labels.json"}


def test_inspect_refuses_a_tampered_artifact_with_the_reason(router: Path) -> None:
    (router / "model.pkl").write_bytes(b"\x80\x04.")
    done = artifact("inspect", router)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("routeiq: error: unlisted file(s) in the artifact: model.pkl")
    assert "[unlisted_file]" in done.stderr


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = artifact("keygen", "--out-private", private, "--out-public", public.with_name("other.pub"))
    assert again.returncode == 2
    assert "exists; refusing to overwrite a key" in again.stderr
    assert not public.with_name("other.pub").exists()


def test_sign_then_verify_with_the_public_key(router: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    signed = artifact("sign", router, "--key", private)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.strip() == f"signed {digest_of(router)}"
    done = artifact("verify", router, "--public-key", public, "--digest", digest_of(router))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"verified {digest_of(router)}"
    packed = tmp_path / "router.tar.gz"
    assert artifact("pack", router, packed).returncode == 0
    done = artifact("verify", f"file://{packed}", "--public-key", public)
    assert done.stdout.strip() == f"verified {digest_of(router)}"
    assert json.loads(artifact("inspect", packed).stdout)["signature"] == "present"
    unkeyed = artifact("verify", packed)
    assert unkeyed.returncode == 0
    assert "give --public-key to check the signature" in unkeyed.stderr


def test_verify_refuses_with_the_reason(router: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    _, public = keys
    unsigned = artifact("verify", router, "--public-key", public)
    assert unsigned.returncode == 1
    assert "no manifest.sig" in unsigned.stderr
    assert "[signature_missing]" in unsigned.stderr
    other = tmp_path / "other"
    other.mkdir()
    assert (
        artifact("keygen", "--out-private", other / "k.pem", "--out-public", other / "k.pub").returncode == 0
    )
    assert artifact("sign", router, "--key", other / "k.pem").returncode == 0
    wrong_key = artifact("verify", router, "--public-key", public)
    assert wrong_key.returncode == 1
    assert "does not verify with the configured public key" in wrong_key.stderr
    wrong_digest = artifact("verify", router, "--digest", "0" * 64)
    assert wrong_digest.returncode == 1
    assert f"digest mismatch: manifest.json has sha256 {digest_of(router)}" in wrong_digest.stderr
    (router / "labels.json").write_bytes(b'{"models": ["large", "small"]}')
    tampered = artifact("verify", router)
    assert tampered.returncode == 1
    assert "labels.json: sha256" in tampered.stderr
    assert "[sha256_mismatch]" in tampered.stderr


def test_a_truncated_tarball_is_refused(router: Path, tmp_path: Path) -> None:
    packed = tmp_path / "router.tar.gz"
    assert artifact("pack", router, packed).returncode == 0
    packed.write_bytes(packed.read_bytes()[:-100])
    done = artifact("verify", packed)
    assert done.returncode == 1
    assert done.stderr.strip() == "routeiq: error: truncated or corrupt archive [archive_corrupt]"


def test_pack_is_reproducible(router: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tgz"
    done = artifact("pack", router, first)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"packed {digest_of(router)} into {first}"
    assert artifact("pack", router, second).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    inside = artifact("pack", router, router / "self.tar.gz")
    assert inside.returncode == 2
    assert "outside the artifact directory" in inside.stderr
    wrong_name = artifact("pack", router, tmp_path / "a.zip")
    assert wrong_name.returncode == 2


def test_usage_errors_exit_2(router: Path, tmp_path: Path) -> None:
    cases = {
        ("verify", str(router), "--digest", "abc"): "not a sha256 digest",
        ("verify", str(router), "--public-key", str(tmp_path / "none.pub")): "public key",
        ("verify", "ftp://host/router"): "unsupported scheme 'ftp'",
        ("sign", str(router), "--key", str(tmp_path / "none.pem")): "private key",
        ("sign", str(tmp_path / "nowhere"), "--key", str(tmp_path / "none.pem")): "not a directory",
    }
    (tmp_path / "bad.pub").write_text("not a key")
    cases[("verify", str(router), "--public-key", str(tmp_path / "bad.pub"))] = "not an ed25519 public key"
    for args, message in cases.items():
        done = artifact(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("routeiq: error: "), args
        assert message in done.stderr, (args, done.stderr)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_verify_from_s3_honours_the_ssrf_settings(router: Path, moto_endpoint: str, tmp_path: Path) -> None:
    aws = {
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="cli-models")
    packed = tmp_path / "router.tar.gz"
    assert artifact("pack", router, packed).returncode == 0
    client.put_object(Bucket="cli-models", Key="prod.tar.gz", Body=packed.read_bytes())
    refused = artifact("verify", "s3://cli-models/prod.tar.gz", **aws)
    assert refused.returncode == 1
    assert "127.0.0.1, a loopback address; refused" in refused.stderr
    allowed = artifact(
        "verify", "s3://cli-models/prod.tar.gz", ROUTEIQ_SSRF_CIDR_ALLOWLIST="127.0.0.0/8", **aws
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == f"verified {digest_of(router)}"
    bad_setting = artifact("verify", "s3://cli-models/prod.tar.gz", ROUTEIQ_SSRF_CIDR_ALLOWLIST="nope", **aws)
    assert bad_setting.returncode == 2
    assert "ROUTEIQ_SSRF_CIDR_ALLOWLIST" in bad_setting.stderr
