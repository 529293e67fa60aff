"""Router-model artifacts: a good one verifies and decodes; each unsafe or tampered one is
refused with its reason, before anything in it is loaded."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import pickle
import tarfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io  # type: ignore[import-untyped,unused-ignore]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]

from routeiq_router.artifacts.archive import Limits, read_tarball
from routeiq_router.artifacts.manifest import (
    MANIFEST,
    SIGNATURE,
    ArtifactError,
    EmbeddingInfo,
    TrainingData,
    write_artifact,
)
from routeiq_router.artifacts.publish import pack_artifact, sign_manifest, tarball_bytes
from routeiq_router.artifacts.signing import KeyFormatError, generate_keypair, load_public_key
from routeiq_router.artifacts.verify import normalize_digest, read_artifact

CENTROIDS = np.arange(12, dtype=np.float32).reshape(3, 4)


class Smuggled:
    """A type no loader trusts: skops can store it, the loader must refuse it."""

    def __init__(self) -> None:
        self.value = 42


class _Trap:
    """Unpickling this would create `marker`: proof that a loader ran code from an artifact."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def classifier() -> LogisticRegression:
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    return LogisticRegression().fit(features, ["small", "large", "small", "large"])


def payload() -> dict[str, bytes]:
    return {
        "centroids.npz": npz_bytes(centroids=CENTROIDS, labels=np.array([0, 1, 1], dtype=np.int64)),
        "labels.json": json.dumps({"models": ["small", "large"]}).encode(),
        "classifier.skops": skops.io.dumps(classifier()),
    }


def make_artifact(directory: Path, files: dict[str, bytes] | None = None) -> Path:
    write_artifact(
        directory,
        strategy="knn",
        files=payload() if files is None else files,
        candidates=["small", "large"],
        training_data=TrainingData(sha256="ab" * 32, examples=4),
        embedding=EmbeddingInfo(model="all-MiniLM-L6-v2", dimension=4),
        metrics={"accuracy": 0.75},
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return directory


def digest_of(directory: Path) -> str:
    return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()


def tar_gz(entries: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A .tar.gz of hand-made entries (links, devices, odd paths) that `tar` users may send."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue())


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def refused(reason: str, *message_parts: str) -> Any:
    """Context manager: an ArtifactError with `reason` whose message holds every part."""

    class _Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, error: Any, trace: Any) -> bool:
            assert isinstance(error, ArtifactError), f"expected ArtifactError({reason}), got {error!r}"
            assert error.reason == reason, f"reason {error.reason!r} ({error}), expected {reason!r}"
            for part in message_parts:
                assert part in str(error), f"{part!r} not in {str(error)!r}"
            return True

    return _Check()


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    return make_artifact(tmp_path / "router")


# -- a good artifact -----------------------------------------------------------------------------


def test_a_directory_artifact_verifies_and_decodes(artifact_dir: Path) -> None:
    artifact = read_artifact(artifact_dir)
    assert artifact.digest == digest_of(artifact_dir)
    assert read_artifact(str(artifact_dir)).digest == artifact.digest
    assert artifact.manifest.strategy == "knn"
    assert artifact.manifest.candidates == ["small", "large"]
    assert sorted(artifact.files) == ["centroids.npz", "classifier.skops", "labels.json"]
    arrays = artifact.npz("centroids.npz")
    np.testing.assert_array_equal(arrays["centroids"], CENTROIDS)
    assert arrays["centroids"].dtype == np.float32
    np.testing.assert_array_equal(arrays["labels"], [0, 1, 1])
    assert artifact.json("labels.json") == {"models": ["small", "large"]}
    model = artifact.skops("classifier.skops", trusted=[])
    assert list(model.predict(np.array([[0.0, 1.0], [1.0, 0.0]]))) == ["small", "large"]
    assert (artifact.signature_present, artifact.signature_verified) == (False, False)
    summary = artifact.summary()
    assert summary["digest"] == artifact.digest
    assert summary["signature"] == "absent"
    assert summary["formatVersion"] == 1
    assert [entry["path"] for entry in summary["files"]] == [
        "centroids.npz",
        "classifier.skops",
        "labels.json",
    ]


def test_a_tarball_of_the_artifact_is_the_same_artifact_and_packing_is_reproducible(
    artifact_dir: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert pack_artifact(artifact_dir, first) == digest_of(artifact_dir)
    (artifact_dir / "labels.json").touch()  # a new mtime must not change the archive
    pack_artifact(artifact_dir, second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first, "r:gz") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == [MANIFEST, "centroids.npz", "classifier.skops", "labels.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    artifact = read_artifact(first)
    assert artifact.digest == digest_of(artifact_dir)
    assert artifact.files == read_artifact(artifact_dir).files
    np.testing.assert_array_equal(artifact.npz("centroids.npz")["centroids"], CENTROIDS)


def test_a_tarball_may_hold_the_artifact_under_one_top_level_directory(artifact_dir: Path) -> None:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [(_dir("router-v3"), None)]
    entries += [
        file_entry(f"router-v3/{path.name}", path.read_bytes()) for path in sorted(artifact_dir.iterdir())
    ]
    artifact = read_artifact(_files_of(tar_gz(entries)))
    assert artifact.digest == digest_of(artifact_dir)
    # `tar czf x.tar.gz -C dir .` writes ./name entries
    dotted = [(_dir("."), None)] + [file_entry(f"./{p.name}", p.read_bytes()) for p in artifact_dir.iterdir()]
    assert read_artifact(_files_of(tar_gz(dotted))).digest == digest_of(artifact_dir)


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _files_of(data: bytes) -> dict[str, bytes]:
    return read_tarball(data)


def test_files_given_as_a_mapping_verify(artifact_dir: Path) -> None:
    files = {path.name: path.read_bytes() for path in artifact_dir.iterdir()}
    artifact = read_artifact(files, expected_digest="SHA256:" + digest_of(artifact_dir).upper())
    assert artifact.digest == digest_of(artifact_dir)


# -- tampering and pinning -----------------------------------------------------------------------


def test_a_changed_payload_byte_is_refused(artifact_dir: Path) -> None:
    path = artifact_dir / "centroids.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with refused("sha256_mismatch", "centroids.npz", "does not match the manifest"):
        read_artifact(artifact_dir)


def test_a_payload_of_another_size_is_refused(artifact_dir: Path) -> None:
    with (artifact_dir / "labels.json").open("ab") as handle:
        handle.write(b" ")
    with refused("size_mismatch", "labels.json"):
        read_artifact(artifact_dir)


def test_a_missing_payload_is_refused(artifact_dir: Path) -> None:
    (artifact_dir / "labels.json").unlink()
    with refused("file_missing", "labels.json", "listed in manifest.json but missing"):
        read_artifact(artifact_dir)


def test_a_wrong_expected_digest_is_refused(artifact_dir: Path) -> None:
    with refused("digest", "digest mismatch", digest_of(artifact_dir), "0" * 64):
        read_artifact(artifact_dir, expected_digest="0" * 64)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        normalize_digest("abc")


def test_a_manifest_with_an_unknown_format_version_is_refused(artifact_dir: Path) -> None:
    document = json.loads((artifact_dir / MANIFEST).read_bytes())
    document["formatVersion"] = 2
    (artifact_dir / MANIFEST).write_text(json.dumps(document))
    with refused("manifest", "formatVersion", "format version 2 is not supported"):
        read_artifact(artifact_dir)


def test_an_artifact_without_a_manifest_is_refused(artifact_dir: Path) -> None:
    (artifact_dir / MANIFEST).unlink()
    with refused("manifest", "no manifest.json"):
        read_artifact(artifact_dir)


# -- signatures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


def test_a_signed_artifact_verifies_with_its_public_key_in_pem_or_raw_base64(
    artifact_dir: Path, keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = keys
    assert sign_manifest(artifact_dir, private_pem) == digest_of(artifact_dir)
    signature = base64.b64decode((artifact_dir / SIGNATURE).read_bytes().strip(), validate=True)
    assert len(signature) == 64
    artifact = read_artifact(artifact_dir, public_key=public_pem)
    assert (artifact.signature_present, artifact.signature_verified) == (True, True)
    assert artifact.summary()["signature"] == "verified"
    raw = load_public_key(public_pem).public_bytes_raw()
    assert read_artifact(artifact_dir, public_key=base64.b64encode(raw).decode()).signature_verified
    unchecked = read_artifact(artifact_dir)  # no key configured: the signature is not checked
    assert (unchecked.signature_present, unchecked.signature_verified) == (True, False)


def test_a_bad_signature_is_refused(artifact_dir: Path, keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    sign_manifest(artifact_dir, private_pem)
    signature = bytearray(base64.b64decode((artifact_dir / SIGNATURE).read_bytes()))
    signature[0] ^= 0x01
    (artifact_dir / SIGNATURE).write_bytes(base64.b64encode(bytes(signature)))
    with refused("signature", "does not verify with the configured public key"):
        read_artifact(artifact_dir, public_key=public_pem)
    (artifact_dir / SIGNATURE).write_bytes(b"not base64!")
    with refused("signature", "not the base64 of a 64-byte ed25519 signature"):
        read_artifact(artifact_dir, public_key=public_pem)


def test_a_manifest_changed_after_signing_is_refused(artifact_dir: Path, keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    sign_manifest(artifact_dir, private_pem)
    manifest = (artifact_dir / MANIFEST).read_bytes()
    (artifact_dir / MANIFEST).write_bytes(manifest.replace(b'"accuracy": 0.75', b'"accuracy": 0.99'))
    with refused("signature", "does not verify"):
        read_artifact(artifact_dir, public_key=public_pem)


def test_a_missing_signature_is_refused_when_a_key_is_configured(
    artifact_dir: Path, keys: tuple[bytes, bytes]
) -> None:
    with refused("signature_missing", "no manifest.sig", "only signed artifacts"):
        read_artifact(artifact_dir, public_key=keys[1])
    assert not read_artifact(artifact_dir).signature_present  # without a key an unsigned one loads


def test_a_signature_by_another_key_is_refused(artifact_dir: Path, keys: tuple[bytes, bytes]) -> None:
    other_private, _ = generate_keypair()
    sign_manifest(artifact_dir, other_private)
    with refused("signature", "does not verify", "key id"):
        read_artifact(artifact_dir, public_key=keys[1])


def test_malformed_keys_are_refused(artifact_dir: Path, keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(KeyFormatError, match="base64 of 32 raw bytes"):
        load_public_key("c2hvcnQ=")
    with pytest.raises(KeyFormatError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError, match="not a PEM private key"):
        sign_manifest(artifact_dir, keys[1])  # the public key is no private key
    assert not (artifact_dir / SIGNATURE).exists()


def test_a_tampered_artifact_is_neither_signed_nor_packed(
    artifact_dir: Path, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    (artifact_dir / "labels.json").write_bytes(b'{"models": ["evil"]}')
    with refused("size_mismatch", "labels.json"):
        sign_manifest(artifact_dir, keys[0])
    assert not (artifact_dir / SIGNATURE).exists()
    with refused("size_mismatch", "labels.json"):
        pack_artifact(artifact_dir, tmp_path / "out.tar.gz")
    assert not (tmp_path / "out.tar.gz").exists()


# -- no pickle, ever -----------------------------------------------------------------------------


def test_a_smuggled_pickle_file_is_refused_by_name(artifact_dir: Path, tmp_path: Path) -> None:
    (artifact_dir / "model.pkl").write_bytes(pickle.dumps(_Trap(tmp_path / "ran")))
    with refused("unlisted_file", "model.pkl", "never pickle"):
        read_artifact(artifact_dir)
    files = {path.name: path.read_bytes() for path in artifact_dir.iterdir()}
    with refused("unlisted_file", "model.pkl"):
        read_artifact(read_tarball(tarball_bytes(files)))
    assert not (tmp_path / "ran").exists()


def test_a_manifest_listing_a_pickle_is_refused(artifact_dir: Path) -> None:
    document = json.loads((artifact_dir / MANIFEST).read_bytes())
    document["files"][0]["path"] = "model.pkl"
    (artifact_dir / MANIFEST).write_text(json.dumps(document))
    with refused("manifest", "model.pkl", "no pickle"):
        read_artifact(artifact_dir)


def test_an_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}, None], dtype=object)
    directory = make_artifact(tmp_path / "a", {"model.npz": npz_bytes(weights=CENTROIDS, objects=objects)})
    artifact = read_artifact(directory)  # the digests are right; decoding is what is refused
    with refused("pickle", "model.npz", "'objects'", "dtype=object"):
        artifact.npz("model.npz")


def test_a_pickle_named_npz_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    directory = make_artifact(tmp_path / "a", {"model.npz": pickle.dumps(_Trap(marker))})
    with refused("format", "model.npz", "not a valid zip archive"):
        read_artifact(directory).npz("model.npz")
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(_Trap(marker))) is None  # the trap is real:
    assert marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    data = skops.io.dumps({"model": classifier(), "extra": Smuggled()})
    artifact = read_artifact(make_artifact(tmp_path / "a", {"model.skops": data}))
    with refused("untrusted_type", "model.skops", f"{__name__}.Smuggled"):
        artifact.skops("model.skops", trusted=[])
    loaded = artifact.skops("model.skops", trusted=[f"{__name__}.Smuggled"])  # trusting it by name loads it
    assert isinstance(loaded["extra"], Smuggled)
    assert loaded["extra"].value == 42


def test_decoders_refuse_files_of_another_kind_or_not_listed(artifact_dir: Path) -> None:
    artifact = read_artifact(artifact_dir)
    with refused("format", "labels.json", "not a .npz file"):
        artifact.npz("labels.json")
    with refused("file_missing", "other.json"):
        artifact.json("other.json")
    broken = read_artifact(make_artifact(artifact_dir.parent / "b", {"x.json": b"{"}))
    with refused("format", "x.json", "not valid JSON"):
        broken.json("x.json")


def test_an_npz_that_decompresses_past_the_limit_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, zeros=np.zeros(1_000_000, dtype=np.uint8))
    assert len(buffer.getvalue()) < 10_000
    artifact = read_artifact(
        make_artifact(tmp_path / "a", {"z.npz": buffer.getvalue()}), limits=Limits(max_file_bytes=100_000)
    )
    with refused("too_large", "z.npz", "decompresses to"):
        artifact.npz("z.npz")


# -- unsafe containers ---------------------------------------------------------------------------


def test_a_truncated_or_corrupt_tarball_is_refused(artifact_dir: Path, tmp_path: Path) -> None:
    packed = tmp_path / "a.tar.gz"
    pack_artifact(artifact_dir, packed)
    data = packed.read_bytes()
    for cut in (len(data) - 4, len(data) // 2, 10, 0):
        truncated = tmp_path / f"cut{cut}.tar.gz"
        truncated.write_bytes(data[:cut])
        with refused("archive_corrupt", "truncated or corrupt archive"):
            read_artifact(truncated)
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (tmp_path / "corrupt.tar.gz").write_bytes(bytes(corrupt))
    with refused("archive_corrupt", "truncated or corrupt archive"):
        read_artifact(tmp_path / "corrupt.tar.gz")
    (tmp_path / "text.tar.gz").write_bytes(b"this is not gzip")
    with refused("archive_corrupt", "truncated or corrupt archive"):
        read_artifact(tmp_path / "text.tar.gz")


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (file_entry("../evil.json", b"{}"), "'..'"),
        (file_entry("router/../../evil.json", b"{}"), "'..'"),
        (file_entry("/etc/evil.json", b"{}"), "absolute"),
        (file_entry("a/b/evil.json", b"{}"), "nested path"),
        ((_link("labels2.json", "/etc/passwd", tarfile.SYMTYPE), None), "a link"),
        ((_link("labels2.json", "labels.json", tarfile.LNKTYPE), None), "a link"),
        ((_link("tty.json", "", tarfile.CHRTYPE), None), "not a regular file"),
        ((_link("fifo.json", "", tarfile.FIFOTYPE), None), "not a regular file"),
        ((_dir("a/b"), None), "nested"),
    ],
    ids=[
        "dotdot",
        "dotdot-inside",
        "absolute",
        "nested",
        "symlink",
        "hardlink",
        "device",
        "fifo",
        "nested-dir",
    ],
)
def test_unsafe_tar_entries_are_refused(
    artifact_dir: Path, entry: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    good = [file_entry(path.name, path.read_bytes()) for path in sorted(artifact_dir.iterdir())]
    data = tar_gz([*good, entry])
    with refused("unsafe_entry", message):
        read_tarball(data)
    assert read_artifact(read_tarball(tar_gz(list(good)))).digest == digest_of(artifact_dir)


def test_tar_entries_twice_or_at_two_levels_are_refused(artifact_dir: Path) -> None:
    good = [file_entry(path.name, path.read_bytes()) for path in sorted(artifact_dir.iterdir())]
    with refused("unsafe_entry", "twice"):
        read_tarball(tar_gz([*good, file_entry("labels.json", b"{}")]))
    with refused("unsafe_entry", "one top-level directory"):
        read_tarball(tar_gz([*good, file_entry("other/x.json", b"{}")]))


def test_size_limits_are_enforced_before_reading_everything(artifact_dir: Path, tmp_path: Path) -> None:
    with refused("too_large", "centroids.npz", "over the limit"):
        read_artifact(artifact_dir, limits=Limits(max_file_bytes=200))
    with refused("too_large", "the artifact"):
        read_artifact(artifact_dir, limits=Limits(max_total_bytes=2000))
    with refused("too_large", "files, over the limit of 2"):
        read_artifact(artifact_dir, limits=Limits(max_files=2))
    # a gzip bomb: 50 MB of zeros in ~50 KB stops at the limit, never decompressed whole
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    with refused("too_large", "decompresses to over"):
        read_tarball(bomb, Limits(max_total_bytes=1_000_000, max_files=4))
    with refused("too_large", "over the limit"):
        read_tarball(tar_gz([file_entry("big.npz", b"x" * 5000)]), Limits(max_file_bytes=4000))


def test_links_and_folders_in_an_artifact_directory_are_refused(artifact_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (artifact_dir / "extra.json").symlink_to(secret)
    with refused("unsafe_entry", "extra.json", "symbolic link"):
        read_artifact(artifact_dir)
    (artifact_dir / "extra.json").unlink()
    (artifact_dir / "sub").mkdir()
    with refused("unlisted_file", "sub/"):
        read_artifact(artifact_dir)


def test_a_file_swapped_for_a_link_while_it_is_read_is_refused_as_an_artifact_error(
    artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_NOFOLLOW meets a link swapped in after the listing (ELOOP): a refusal, not a raw OSError."""
    import errno
    import os

    def swapped(path: Any, flags: int, *args: Any) -> int:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))

    monkeypatch.setattr(os, "open", swapped)  # archive.read_directory opens with os.open
    with refused("fetch", "cannot read the artifact"):
        read_artifact(artifact_dir)
