"""The per-worker model cache, and the slot that keeps the previous model serving when a new
artifact is refused."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from routeiq_router.artifacts.cache import ModelCache
from routeiq_router.artifacts.loader import ArtifactSlot, ArtifactTrust
from routeiq_router.artifacts.manifest import SIGNATURE, ArtifactError
from routeiq_router.artifacts.publish import sign_manifest
from routeiq_router.artifacts.signing import generate_keypair, load_public_key
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact
from routeiq_router.settings import load_settings
from tests.test_artifacts import digest_of, make_artifact, npz_bytes

# -- the cache -----------------------------------------------------------------------------------


def test_the_cache_loads_each_digest_once_and_drops_the_least_recently_used() -> None:
    cache: ModelCache[str] = ModelCache(max_entries=2)
    calls: list[str] = []

    def loader(digest: str) -> str:
        calls.append(digest)
        return f"model-{digest}"

    assert cache.get_or_load("a", lambda: loader("a")) == "model-a"
    assert cache.get_or_load("a", lambda: loader("a")) == "model-a"
    cache.get_or_load("b", lambda: loader("b"))
    cache.get_or_load("a", lambda: loader("a"))  # a is now the most recently used
    cache.get_or_load("c", lambda: loader("c"))  # evicts b
    assert calls == ["a", "b", "c"]
    assert cache.digests() == ["a", "c"]
    assert "b" not in cache
    assert cache.get("b") is None
    cache.get_or_load("b", lambda: loader("b"))
    assert calls == ["a", "b", "c", "b"]
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 4)


def test_the_default_cache_holds_four_models() -> None:
    cache: ModelCache[int] = ModelCache()
    for number in range(6):
        cache.get_or_load(str(number), lambda number=number: number)  # type: ignore[misc]
    assert cache.digests() == ["2", "3", "4", "5"]
    with pytest.raises(ValueError, match="at least 1"):
        ModelCache(max_entries=0)


def test_a_failed_load_is_not_cached() -> None:
    cache: ModelCache[str] = ModelCache()

    def broken() -> str:
        raise ArtifactError("bad", reason="format")

    with pytest.raises(ArtifactError):
        cache.get_or_load("a", broken)
    assert "a" not in cache
    assert cache.get_or_load("a", lambda: "ok") == "ok"


def test_concurrent_requests_for_one_digest_load_it_once() -> None:
    cache: ModelCache[object] = ModelCache()
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def slow() -> object:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(10)
        return object()

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("d", slow))) for _ in range(4)
    ]
    threads[0].start()
    started.wait(10)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.1)  # let the others reach the per-digest lock
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == 1
    assert len(results) == 4
    assert all(result is results[0] for result in results)


# -- the serving slot ----------------------------------------------------------------------------


def decode(artifact: VerifiedArtifact) -> np.ndarray:
    return artifact.npz("centroids.npz")["centroids"]


def trust(**kwargs: object) -> ArtifactTrust:
    return ArtifactTrust(ssrf=SsrfPolicy(), **kwargs)  # type: ignore[arg-type]


def replace_artifact(directory: Path, centroids: np.ndarray) -> None:
    staging = directory.parent / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    make_artifact(staging, {"centroids.npz": npz_bytes(centroids=centroids)})
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def test_a_refused_artifact_is_counted_and_the_previous_model_keeps_serving(tmp_path: Path) -> None:
    directory = tmp_path / "router"
    replace_artifact(directory, np.zeros((2, 2), dtype=np.float32))
    refusals: list[tuple[str, str]] = []
    slot = ArtifactSlot(str(directory), decode, trust(), on_refused=lambda r, m: refusals.append((r, m)))
    assert slot.load() is True
    assert slot.current is not None
    first = slot.current
    assert first.digest == digest_of(directory)
    np.testing.assert_array_equal(first.model, np.zeros((2, 2)))

    (directory / "centroids.npz").write_bytes(npz_bytes(centroids=np.ones((2, 2), dtype=np.float32)))
    assert slot.poll() is False
    assert slot.current is first, "the previous model keeps serving"
    assert slot.refusals == {"sha256_mismatch": 1}
    assert len(refusals) == 1
    assert "centroids.npz" in refusals[0][1]
    assert slot.last_error is not None
    assert "centroids.npz" in slot.last_error
    assert slot.poll() is False
    assert sum(slot.refusals.values()) == 1, "an unchanged refused source is not fetched again"

    replace_artifact(directory, np.full((2, 2), 7, dtype=np.float32))
    assert slot.poll() is True
    assert slot.current is not None
    assert slot.current.digest == digest_of(directory) != first.digest
    np.testing.assert_array_equal(slot.current.model, np.full((2, 2), 7))
    assert slot.poll() is False  # unchanged: nothing to do


def test_an_unsigned_artifact_is_refused_when_a_key_is_configured(tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair()
    directory = tmp_path / "router"
    replace_artifact(directory, np.zeros((1, 1), dtype=np.float32))
    slot = ArtifactSlot(str(directory), decode, trust(public_key=load_public_key(public_pem)))
    assert slot.load() is False
    assert slot.current is None
    assert slot.refusals == {"signature_missing": 1}
    sign_manifest(directory, private_pem)  # signing changes the source: the next poll loads it
    assert slot.poll() is True
    assert slot.current is not None
    (directory / SIGNATURE).write_bytes(b"AAAA" * 22 + b"\n")
    assert slot.poll() is False
    assert slot.refusals["signature"] == 1
    assert slot.current is not None


def test_a_pinned_digest_refuses_any_other_artifact(tmp_path: Path) -> None:
    directory = tmp_path / "router"
    replace_artifact(directory, np.zeros((1, 1), dtype=np.float32))
    pinned = digest_of(directory)
    slot = ArtifactSlot(str(directory), decode, trust(expected_digest=pinned))
    assert slot.load() is True
    replace_artifact(directory, np.ones((1, 1), dtype=np.float32))
    assert slot.poll() is False
    assert slot.refusals == {"digest": 1}
    assert slot.current is not None
    assert slot.current.digest == pinned


def test_decoder_failures_and_fetch_failures_keep_the_previous_model(tmp_path: Path) -> None:
    directory = tmp_path / "router"
    replace_artifact(directory, np.zeros((1, 1), dtype=np.float32))
    fail = {"now": False}

    def fragile(artifact: VerifiedArtifact) -> np.ndarray:
        if fail["now"]:
            raise RuntimeError("decoder bug")
        return decode(artifact)

    slot = ArtifactSlot(str(directory), fragile, trust())
    assert slot.load()
    first = slot.current
    fail["now"] = True
    replace_artifact(directory, np.ones((1, 1), dtype=np.float32))
    assert slot.poll() is False
    assert slot.refusals == {"decode": 1}
    assert slot.current is first
    shutil.rmtree(directory)
    assert slot.poll() is False
    assert slot.poll() is False
    assert slot.refusals["fetch"] == 2, "an unreachable source is retried on every poll"
    assert slot.current is first


def test_models_are_shared_by_digest_across_slots(tmp_path: Path) -> None:
    directory = tmp_path / "router"
    replace_artifact(directory, np.zeros((1, 1), dtype=np.float32))
    packed = tmp_path / "copy"
    shutil.copytree(directory, packed)
    cache: ModelCache[np.ndarray] = ModelCache()
    decoded: list[str] = []

    def counting(artifact: VerifiedArtifact) -> np.ndarray:
        decoded.append(artifact.digest)
        return decode(artifact)

    one = ArtifactSlot(str(directory), counting, trust(), cache=cache)
    two = ArtifactSlot(f"file://{packed}", counting, trust(), cache=cache)
    assert one.load()
    assert two.load()
    assert decoded == [digest_of(directory)]
    assert one.current is not None
    assert two.current is not None
    assert one.current.model is two.current.model


def test_trust_from_settings() -> None:
    _, public_pem = generate_keypair()
    settings = load_settings({"ROUTEIQ_SSRF_CIDR_ALLOWLIST": "10.0.0.0/8"})
    built = ArtifactTrust.from_settings(settings, public_key=public_pem, expected_digest="SHA256:" + "A" * 64)
    assert built.expected_digest == "a" * 64
    assert built.public_key is not None
    assert built.ssrf == SsrfPolicy.from_values(cidrs=["10.0.0.0/8"])
    with pytest.raises(ValueError, match="not a sha256 digest"):
        ArtifactTrust(ssrf=SsrfPolicy(), expected_digest="nope")
