"""Fetching artifacts from paths, file://, s3:// (moto's server over HTTP) and gs:// (a GCS
emulator over HTTP), behind the SSRF policy."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
import pytest
from moto.server import ThreadedMotoServer

from routeiq_router.artifacts.manifest import MANIFEST, ArtifactError
from routeiq_router.artifacts.publish import pack_artifact
from routeiq_router.artifacts.sources import (
    RemoteAccess,
    fetch_artifact,
    load_artifact,
    parse_source,
    source_version,
)
from routeiq_router.artifacts.ssrf import SsrfError, SsrfPolicy, resolve_host
from routeiq_router.settings import load_settings
from tests.test_artifacts import digest_of, make_artifact, refused

LOCAL = SsrfPolicy.from_values(cidrs=["127.0.0.0/8"])  # the test servers listen on loopback
STRICT = SsrfPolicy()


# -- the SSRF policy -----------------------------------------------------------------------------


def resolver(table: dict[str, list[str]]) -> Any:
    """Names from `table`, else the system resolver (address literals, localhost)."""

    def resolve(host: str, port: int | None) -> list[str]:
        return table[host] if host in table else resolve_host(host, port)

    return resolve


DNS = resolver(
    {
        "s3.example.com": ["93.184.216.34"],
        "minio.internal": ["10.1.2.3"],
        "metadata.google.internal": ["169.254.169.254"],
        "mixed.example.com": ["93.184.216.34", "192.168.1.10"],
        "mapped.example.com": ["::ffff:127.0.0.1"],
        "v6.example.com": ["2606:4700::1111"],
    }
)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("10.0.0.8", "private"),
        ("minio.internal", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("mixed.example.com", "private"),
        ("mapped.example.com", "loopback"),
    ],
)
def test_non_public_addresses_are_refused(host: str, kind: str) -> None:
    with pytest.raises(SsrfError, match=kind) as caught:
        SsrfPolicy.from_values(resolver=DNS).check_host(host, 443)
    assert caught.value.reason == "ssrf"
    assert "ROUTEIQ_SSRF_" in str(caught.value)


def test_public_addresses_are_allowed() -> None:
    policy = SsrfPolicy.from_values(resolver=DNS)
    for host in ("8.8.8.8", "2001:4860:4860::8888", "s3.example.com", "v6.example.com"):
        policy.check_host(host, 443)
    policy.check_url("https://s3.example.com/bucket")


def test_the_metadata_address_is_refused_even_when_private_addresses_are_allowed() -> None:
    permissive = SsrfPolicy.from_values(allow_private=True, resolver=DNS)
    permissive.check_host("10.0.0.8", 80)  # private: allowed now
    for host in ("169.254.169.254", "metadata.google.internal", "::ffff:169.254.169.254", "fd00:ec2::254"):
        with pytest.raises(SsrfError, match="instance-metadata"):
            permissive.check_host(host, 80)
    by_cidr = SsrfPolicy.from_values(cidrs=["169.254.169.254/32"], resolver=DNS)
    by_cidr.check_host("metadata.google.internal", 80)
    with pytest.raises(SsrfError, match="private"):
        by_cidr.check_host("10.0.0.8", 80)


def test_an_allowlisted_host_is_allowed_without_resolving_it() -> None:
    def no_dns(host: str, port: int | None) -> list[str]:
        raise AssertionError("an allowlisted host must not be resolved")

    policy = SsrfPolicy.from_values(hosts=["MinIO.internal."], resolver=no_dns)
    policy.check_host("minio.internal", 9000)
    policy.check_url("http://minio.internal:9000")
    with pytest.raises(AssertionError):
        policy.check_host("other.internal", 9000)


def test_a_cidr_allowlist_allows_only_its_networks() -> None:
    policy = SsrfPolicy.from_values(cidrs=["10.0.0.0/8", "fd00::/8"], resolver=DNS)
    policy.check_host("minio.internal", 9000)
    policy.check_host("fd12::1", 9000)
    with pytest.raises(SsrfError, match="loopback"):
        policy.check_host("127.0.0.1", 9000)
    with pytest.raises(SsrfError, match=r"192\.168\.1\.10"):
        policy.check_host("mixed.example.com", 443)  # every address must pass, not just one


def test_unresolvable_hosts_and_other_schemes_are_refused() -> None:
    policy = SsrfPolicy.from_values(resolver=DNS)
    with pytest.raises(SsrfError, match="does not resolve"):
        policy.check_host("nowhere.invalid", 443)
    with pytest.raises(SsrfError, match="only http:// and https://"):
        policy.check_url("file:///etc/passwd")
    with pytest.raises(SsrfError, match="no host"):
        policy.check_url("http:///path")


def test_the_policy_comes_from_the_settings() -> None:
    settings = load_settings(
        {
            "ROUTEIQ_SSRF_ALLOW_PRIVATE": "false",
            "ROUTEIQ_SSRF_HOST_ALLOWLIST": "minio.internal, s3.local",
            "ROUTEIQ_SSRF_CIDR_ALLOWLIST": "127.0.0.0/8",
        }
    )
    policy = SsrfPolicy.from_settings(settings)
    assert policy.host_allowlist == frozenset({"minio.internal", "s3.local"})
    assert policy.cidr_allowlist == (ipaddress.ip_network("127.0.0.0/8"),)
    assert not policy.allow_private
    policy.check_host("127.0.0.1", 80)
    assert SsrfPolicy.from_settings(load_settings({"ROUTEIQ_SSRF_ALLOW_PRIVATE": "true"})).allow_private


# -- files -----------------------------------------------------------------------------------------


def test_paths_and_file_uris_load(tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    packed = tmp_path / "router.tar.gz"
    pack_artifact(directory, packed)
    expected = digest_of(directory)
    for uri in (
        str(directory),
        f"file://{directory}",
        str(packed),
        f"file://{packed}",
        f"file://localhost{packed}",
    ):
        assert load_artifact(uri, ssrf=STRICT).digest == expected, uri
    with refused("fetch", "no such file"):
        load_artifact(str(tmp_path / "missing"), ssrf=STRICT)
    with refused("fetch", "not an artifact"):
        load_artifact(str(directory / MANIFEST), ssrf=STRICT)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://server/share/router", "names a local path"),
        ("http://example.com/router.tar.gz", "unsupported scheme 'http'"),
        ("s3://Bad_Bucket/key", "not a valid bucket name"),
        ("s3://bucket/key?versionId=1", "query strings"),
        ("", "empty"),
    ],
)
def test_malformed_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_source(uri)
    with refused("fetch", message):
        fetch_artifact(uri, ssrf=STRICT)


def test_the_version_of_a_file_source_changes_when_the_artifact_changes(tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    before = source_version(str(directory), ssrf=STRICT)
    assert source_version(f"file://{directory}", ssrf=STRICT) == before
    (directory / "labels.json").write_bytes(b'{"models": []}')
    assert source_version(str(directory), ssrf=STRICT) != before
    packed = tmp_path / "a.tar.gz"
    packed.write_bytes(b"one")
    first = source_version(str(packed), ssrf=STRICT)
    packed.write_bytes(b"three")
    assert source_version(str(packed), ssrf=STRICT) != first


# -- S3, through moto's server -------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The environment a gateway pod would have for an S3-compatible store, and a client."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"models-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    client.routeiq_bucket = bucket
    return client


def upload_directory(client: Any, bucket: str, prefix: str, directory: Path) -> None:
    for path in sorted(directory.iterdir()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def test_s3_tarball_object_loads(s3: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    pack_artifact(directory, tmp_path / "router.tar.gz")
    s3.put_object(
        Bucket=s3.routeiq_bucket, Key="routers/prod.tar.gz", Body=(tmp_path / "router.tar.gz").read_bytes()
    )
    artifact = load_artifact(
        f"s3://{s3.routeiq_bucket}/routers/prod.tar.gz", ssrf=LOCAL, expected_digest=digest_of(directory)
    )
    assert artifact.digest == digest_of(directory)
    assert artifact.json("labels.json") == {"models": ["small", "large"]}


def test_s3_prefix_loads(s3: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "routers/prod", directory)
    s3.put_object(
        Bucket=s3.routeiq_bucket, Key="routers/prod-other/manifest.json", Body=b"{}"
    )  # a sibling prefix
    for uri in (f"s3://{s3.routeiq_bucket}/routers/prod", f"s3://{s3.routeiq_bucket}/routers/prod/"):
        artifact = load_artifact(uri, ssrf=LOCAL)
        assert artifact.digest == digest_of(directory)
        assert sorted(artifact.files) == ["centroids.npz", "classifier.skops", "labels.json"]


def test_s3_is_refused_when_the_endpoint_is_private_unless_allowed(s3: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "r", directory)
    uri = f"s3://{s3.routeiq_bucket}/r"
    with refused("ssrf", "127.0.0.1", "loopback", "ROUTEIQ_SSRF_ALLOW_PRIVATE"):
        load_artifact(uri, ssrf=STRICT)
    with refused("ssrf", "127.0.0.1"):
        source_version(uri, ssrf=STRICT)
    assert load_artifact(uri, ssrf=SsrfPolicy(allow_private=True)).digest == digest_of(directory)
    assert load_artifact(uri, ssrf=SsrfPolicy.from_values(hosts=["127.0.0.1"])).digest == digest_of(directory)


def test_s3_artifacts_are_verified_after_download(s3: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "tampered", directory)
    s3.put_object(
        Bucket=s3.routeiq_bucket, Key="tampered/labels.json", Body=b'{"models": ["large", "small"]}'
    )
    with refused("sha256_mismatch", "labels.json"):
        load_artifact(f"s3://{s3.routeiq_bucket}/tampered", ssrf=LOCAL)
    upload_directory(s3, s3.routeiq_bucket, "smuggled", directory)
    s3.put_object(Bucket=s3.routeiq_bucket, Key="smuggled/model.pkl", Body=b"\x80\x04.")
    with refused("unlisted_file", "model.pkl"):
        load_artifact(f"s3://{s3.routeiq_bucket}/smuggled", ssrf=LOCAL)
    upload_directory(s3, s3.routeiq_bucket, "nested", directory)
    s3.put_object(Bucket=s3.routeiq_bucket, Key="nested/old/manifest.json", Body=b"{}")
    with refused("unlisted_file", "nested/old/", "folder"):
        load_artifact(f"s3://{s3.routeiq_bucket}/nested", ssrf=LOCAL)
    s3.put_object(Bucket=s3.routeiq_bucket, Key="cut.tar.gz", Body=b"\x1f\x8b\x08\x00")
    with refused("archive_corrupt", "truncated or corrupt archive"):
        load_artifact(f"s3://{s3.routeiq_bucket}/cut.tar.gz", ssrf=LOCAL)


def test_s3_missing_objects_and_buckets_are_fetch_errors(s3: Any) -> None:
    with refused("fetch", "no such object"):
        load_artifact(f"s3://{s3.routeiq_bucket}/none.tar.gz", ssrf=LOCAL)
    with refused("fetch", "no objects under this prefix"):
        load_artifact(f"s3://{s3.routeiq_bucket}/none", ssrf=LOCAL)
    with refused("fetch", "no such bucket"):
        load_artifact("s3://no-such-bucket-here/router", ssrf=LOCAL)


def test_s3_size_limits_apply_before_download(s3: Any, tmp_path: Path) -> None:
    from routeiq_router.artifacts.archive import Limits

    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "big", directory)
    with refused("too_large", "over the limit"):
        load_artifact(f"s3://{s3.routeiq_bucket}/big", ssrf=LOCAL, limits=Limits(max_file_bytes=200))
    s3.put_object(Bucket=s3.routeiq_bucket, Key="big.tar.gz", Body=b"x" * 5000)
    with refused("too_large", "big.tar.gz"):
        load_artifact(f"s3://{s3.routeiq_bucket}/big.tar.gz", ssrf=LOCAL, limits=Limits(max_total_bytes=4000))


def test_the_version_of_an_s3_source_changes_when_the_artifact_changes(s3: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "v", directory)
    prefix_uri = f"s3://{s3.routeiq_bucket}/v"
    before = source_version(prefix_uri, ssrf=LOCAL)
    assert source_version(prefix_uri, ssrf=LOCAL) == before
    s3.put_object(Bucket=s3.routeiq_bucket, Key="v/manifest.sig", Body=b"c2ln\n")
    assert source_version(prefix_uri, ssrf=LOCAL) != before
    s3.put_object(Bucket=s3.routeiq_bucket, Key="v.tar.gz", Body=b"one")
    tar_uri = f"s3://{s3.routeiq_bucket}/v.tar.gz"
    first = source_version(tar_uri, ssrf=LOCAL)
    s3.put_object(Bucket=s3.routeiq_bucket, Key="v.tar.gz", Body=b"two")
    assert source_version(tar_uri, ssrf=LOCAL) != first


# -- GCS, through an emulator (the optional gcs extra) -------------------------------------------


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    pytest.importorskip("google.cloud.storage", reason="gs:// needs the gcs extra (google-cloud-storage)")
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    server = emulator.create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    server.stop()


@pytest.fixture
def gcs(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from google.cloud import storage  # type: ignore[import-untyped,import-not-found,attr-defined,unused-ignore]

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    client = storage.Client()
    return client.create_bucket(f"models-{os.urandom(4).hex()}")


def test_gcs_tarball_and_prefix_load(gcs: Any, tmp_path: Path) -> None:
    directory = make_artifact(tmp_path / "router")
    pack_artifact(directory, tmp_path / "router.tar.gz")
    gcs.blob("routers/prod.tar.gz").upload_from_filename(str(tmp_path / "router.tar.gz"))
    for path in directory.iterdir():
        gcs.blob(f"routers/prod/{path.name}").upload_from_string(path.read_bytes())
    for uri in (f"gs://{gcs.name}/routers/prod.tar.gz", f"gs://{gcs.name}/routers/prod"):
        assert load_artifact(uri, ssrf=LOCAL).digest == digest_of(directory), uri
        assert source_version(uri, ssrf=LOCAL).startswith("gs:")
    with refused("ssrf", "127.0.0.1", "loopback"):
        load_artifact(f"gs://{gcs.name}/routers/prod", ssrf=STRICT)
    gcs.blob("routers/prod/model.pkl").upload_from_string(b"\x80\x04.")
    with refused("unlisted_file", "model.pkl"):
        load_artifact(f"gs://{gcs.name}/routers/prod", ssrf=LOCAL)
    with refused("fetch", "no such object"):
        load_artifact(f"gs://{gcs.name}/routers/none.tar.gz", ssrf=LOCAL)


def test_gs_without_the_gcs_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if not installed
    if "google.cloud" in sys.modules:  # imported by an earlier test: forget the submodule there too
        monkeypatch.delattr(sys.modules["google.cloud"], "storage", raising=False)
    with refused("fetch", "google-cloud-storage", "routeiq[gcs]"):
        load_artifact("gs://bucket/router.tar.gz", ssrf=STRICT)


def test_ssrf_errors_are_artifact_errors() -> None:
    assert issubclass(SsrfError, ArtifactError)


def test_s3_buckets_are_addressed_by_path_so_requests_go_only_to_the_checked_host(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    # virtual-hosted style would send the request to <bucket>.localhost, a host the policy never saw
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint.replace("127.0.0.1", "localhost"))
    directory = make_artifact(tmp_path / "router")
    upload_directory(s3, s3.routeiq_bucket, "p", directory)
    only_localhost = SsrfPolicy.from_values(hosts=["localhost"])
    assert load_artifact(f"s3://{s3.routeiq_bucket}/p", ssrf=only_localhost).digest == digest_of(directory)
    with refused("ssrf", "'localhost'", "loopback"):
        load_artifact(f"s3://{s3.routeiq_bucket}/p", ssrf=STRICT)


# -- per-call access settings (RemoteAccess): what the operator passes from a Secret ------------------


@pytest.fixture
def bare_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS endpoint, credentials or region in the environment or in config files."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def moto_access(endpoint: str, **overrides: Any) -> RemoteAccess:
    values: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "aws_access_key_id": "explicit-key-id",
        "aws_secret_access_key": "explicit-secret",
    }
    return RemoteAccess(**(values | overrides))


def test_remote_access_keeps_credentials_together_and_out_of_repr() -> None:
    with pytest.raises(ValueError, match="together"):
        RemoteAccess(aws_access_key_id="id")
    with pytest.raises(ValueError, match="together"):
        RemoteAccess(aws_secret_access_key="secret")
    with pytest.raises(ValueError, match="session_token needs"):
        RemoteAccess(aws_session_token="token")
    access = RemoteAccess(
        endpoint_url="http://minio:9000",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI",
        aws_session_token="session-token",
        gcs_credentials_info={"private_key": "-----BEGIN PRIVATE KEY-----"},
    )
    shown = repr(access)
    assert "http://minio:9000" in shown
    for secret in ("AKIDEXAMPLE", "wJalrXUtnFEMI", "session-token", "PRIVATE KEY"):
        assert secret not in shown
    assert access.boto3_arguments() == {
        "endpoint_url": "http://minio:9000",
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI",
        "aws_session_token": "session-token",
    }
    assert RemoteAccess().boto3_arguments() == {}


@pytest.mark.usefixtures("bare_aws_environment")
def test_s3_with_explicit_endpoint_region_and_credentials(moto_endpoint: str, tmp_path: Path) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    bucket = f"models-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    directory = make_artifact(tmp_path / "router")
    upload_directory(client, bucket, "explicit", directory)
    pack_artifact(directory, tmp_path / "router.tar.gz")
    client.put_object(Bucket=bucket, Key="explicit.tar.gz", Body=(tmp_path / "router.tar.gz").read_bytes())
    access = moto_access(moto_endpoint, aws_session_token="a-session-token")
    for uri in (f"s3://{bucket}/explicit", f"s3://{bucket}/explicit.tar.gz"):
        artifact = load_artifact(uri, ssrf=LOCAL, access=access, expected_digest=digest_of(directory))
        assert artifact.digest == digest_of(directory)
        assert sorted(fetch_artifact(uri, ssrf=LOCAL, access=access)) == [
            "centroids.npz",
            "classifier.skops",
            "labels.json",
            "manifest.json",
        ]
        assert source_version(uri, ssrf=LOCAL, access=access).startswith("s3:")


@pytest.mark.usefixtures("bare_aws_environment")
def test_an_explicit_s3_endpoint_is_checked_like_an_environment_one(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    bucket = f"models-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    upload_directory(client, bucket, "r", make_artifact(tmp_path / "router"))
    uri = f"s3://{bucket}/r"
    access = moto_access(moto_endpoint)
    with refused("ssrf", "127.0.0.1", "loopback", "ROUTEIQ_SSRF_ALLOW_PRIVATE"):
        load_artifact(uri, ssrf=STRICT, access=access)
    with refused("ssrf", "127.0.0.1", "loopback"):
        source_version(uri, ssrf=STRICT, access=access)
    assert load_artifact(uri, ssrf=SsrfPolicy.from_values(hosts=["127.0.0.1"]), access=access).digest
    # buckets are addressed by path, so requests go only to the checked host (not <bucket>.localhost)
    by_name = moto_access(moto_endpoint.replace("127.0.0.1", "localhost"))
    assert load_artifact(uri, ssrf=SsrfPolicy.from_values(hosts=["localhost"]), access=by_name).digest
    with refused("ssrf", "'localhost'"):
        load_artifact(uri, ssrf=SsrfPolicy.from_values(hosts=["127.0.0.1"]), access=by_name)
    # the explicit endpoint wins over the environment's (which the policy would refuse here)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://10.255.0.1:9000")
    assert load_artifact(uri, ssrf=LOCAL, access=access).digest
    with refused("ssrf", "10.255.0.1", "private"):
        load_artifact(uri, ssrf=LOCAL, access=RemoteAccess(region="us-east-1"))


@pytest.mark.usefixtures("bare_aws_environment")
def test_invalid_explicit_s3_settings_are_fetch_errors() -> None:
    with refused("fetch", "invalid S3 settings", "not a url"):
        load_artifact("s3://bucket/r", ssrf=LOCAL, access=RemoteAccess(endpoint_url="not a url"))
    with refused("fetch", "invalid S3 settings", "bad region!"):
        source_version("s3://bucket/r", ssrf=LOCAL, access=RemoteAccess(region="bad region!"))


class _TokenServer:
    """An OAuth2 token endpoint on loopback: records each JWT-bearer assertion, answers a token."""

    def __init__(self) -> None:
        import http.server
        import threading
        import urllib.parse

        assertions: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                assertions.extend(form.get("assertion", []))
                body = b'{"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.assertions = assertions
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # named by "localhost" so that an SSRF policy can tell it from the GCS emulator on 127.0.0.1
        self.url = f"http://localhost:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def service_account_info(token_uri: str) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "routeiq-test",
        "private_key_id": "key-1",
        "private_key": pem,
        "client_email": "model-reader@routeiq-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }


def test_gcs_with_service_account_credentials(gcs: Any, tmp_path: Path) -> None:
    import base64
    import json

    directory = make_artifact(tmp_path / "router")
    for path in directory.iterdir():
        gcs.blob(f"sa/{path.name}").upload_from_string(path.read_bytes())
    uri = f"gs://{gcs.name}/sa"
    private_ok = SsrfPolicy(allow_private=True)  # localhost may also resolve to ::1
    tokens = _TokenServer()
    try:
        access = RemoteAccess(gcs_credentials_info=service_account_info(tokens.url))
        assert load_artifact(uri, ssrf=private_ok, access=access).digest == digest_of(directory)
        assert source_version(uri, ssrf=private_ok, access=access).startswith("gs:")
        # the requests were authorised with the service account: it signed a token request
        assert tokens.assertions
        claims = json.loads(base64.urlsafe_b64decode(tokens.assertions[0].split(".")[1] + "=="))
        assert claims["iss"] == "model-reader@routeiq-test.iam.gserviceaccount.com"
        assert "devstorage.read_only" in claims["scope"]
        # a custom token URI is an endpoint the credentials call: checked like one
        emulator_only = SsrfPolicy.from_values(hosts=["127.0.0.1"])
        with refused("ssrf", "'localhost'", "loopback"):
            source_version(uri, ssrf=emulator_only, access=access)
        assert source_version(uri, ssrf=emulator_only).startswith("gs:")  # anonymous, as before
    finally:
        tokens.close()
    with refused("fetch", "invalid GCS service-account credentials"):
        load_artifact(
            uri, ssrf=private_ok, access=RemoteAccess(gcs_credentials_info={"type": "service_account"})
        )
