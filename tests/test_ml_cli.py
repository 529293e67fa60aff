"""`routeiq train` as a user runs it: a subprocess writing an artifact, and its refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from routeiq_router.artifacts.manifest import MANIFEST, parse_manifest
from routeiq_router.ml.payload import read_directory
from routeiq_router.ml.runtime import decide, load_router
from routeiq_router.strategies import RoutingRequest
from tests.gateway_process import ROUTEIQ, gateway_environment
from tests.test_ml_support import CHEAP, COSTS, DATA, SPECIALIST, STRONG, deployment

COST_ARGS = [argument for model, cost in COSTS.items() for argument in ("--cost", f"{model}={cost}")]


def routeiq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROUTEIQ, *args], env=gateway_environment(), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    path = tmp_path / "slice.jsonl"
    path.write_text(
        "".join(DATA.read_text(encoding="utf-8").splitlines(keepends=True)[:120]), encoding="utf-8"
    )
    return path


def test_train_writes_a_valid_artifact(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mf-artifact"
    args = ["--strategy", "mf", "--data", str(small_data), "--out", str(out), "--threads", "1", "--seed", "3"]
    result = routeiq("train", *args, *COST_ARGS, "--threshold", "0.4")
    assert result.returncode == 0, result.stderr
    assert "trained mf on 96 examples (24 held out)" in result.stdout
    assert "router" in result.stdout
    assert "random" in result.stdout
    manifest = parse_manifest((out / MANIFEST).read_bytes())
    assert manifest.strategy == "mf"
    assert manifest.candidates == sorted([STRONG, CHEAP, SPECIALIST])
    assert manifest.training_data.sha256 == hashlib.sha256(small_data.read_bytes()).hexdigest()
    assert manifest.training_data.examples == 120
    assert manifest.embedding is not None
    # the default embedder: static, built from the bundled model, its files held by the artifact
    assert manifest.embedding.model.startswith("sentence-transformers/all-MiniLM-L6-v2@static:")
    assert manifest.embedding.dimension == 256
    assert manifest.embedding.embedder is not None
    assert manifest.embedding.embedder.kind == "static"
    assert [entry.path for entry in manifest.files] == [
        "embedder-embeddings.npz",
        "embedder-manifest.json",
        "embedder-tokenizer.json",
        "mf.npz",
    ]
    assert manifest.parameters["costs"] == COSTS
    assert manifest.parameters["knobName"] == "threshold"
    assert manifest.parameters["knob"] == 0.4
    assert manifest.parameters["seed"] == 3
    assert {"router_score", "random_score", "best_single_score", "oracle_score", "router_cost"} <= set(
        manifest.metrics
    )
    assert manifest.metrics["train_examples"] == 96
    assert (
        f"sha256 of manifest.json: {hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()}"
        in result.stdout
    )

    files, read = read_directory(out)
    router = load_router(files, read, threads=None)  # with the embedder the artifact holds
    candidates = [deployment("a", f"openai/{STRONG}"), deployment("b", f"openai/{CHEAP}")]
    request = RoutingRequest(model_group="chat", messages=[{"role": "user", "content": "Hi there!"}])
    assert decide(router, candidates, request).model in {STRONG, CHEAP}


def test_train_elo_needs_no_embedding_model(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "elo-artifact"
    result = routeiq(
        "train",
        "--strategy",
        "elo",
        "--data",
        str(small_data),
        "--out",
        str(out),
        "--max-cost",
        "0.007",
        *COST_ARGS,
    )
    assert result.returncode == 0, result.stderr
    files, manifest = read_directory(out)
    assert manifest.embedding is None
    assert "embeddingProbe" not in manifest.parameters
    assert manifest.parameters["knob"] == 0.007
    router = load_router(files, manifest, threads=None)
    assert router.embedder is None
    request = RoutingRequest(model_group="chat", messages=[{"role": "user", "content": "anything"}])
    everything = [deployment("a", STRONG), deployment("b", CHEAP), deployment("c", SPECIALIST)]
    assert decide(router, everything, request).model != SPECIALIST, "over the budget"


def test_bad_data_is_refused_naming_the_line_and_field(tmp_path: Path) -> None:
    lines = [
        {"prompt": "one", "scores": {STRONG: 0.9, CHEAP: 0.4}},
        {"prompt": "two", "scores": {STRONG: 0.8, CHEAP: 0.7}},
        {"prompt": "three", "scores": {STRONG: 0.8, CHEAP: 7}},
    ]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = routeiq("train", "--strategy", "knn", "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"routeiq: error: {data}:3: scores.{CHEAP}: expected a number between 0 and 1, got 7"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategy", "round-robin"],
            "--strategy 'round-robin': trainable strategies are knn, mlp, svm, elo, mf",
        ),
        (["--strategy", "knn", "--threshold", "0.3"], "--threshold is the knob of mf, not of knn"),
        (["--strategy", "mf", "--threshold", "1.5"], "--threshold: threshold must be between 0 and 1"),
        (["--strategy", "knn", "--cost", "gpt-4o"], "--cost 'gpt-4o': expected MODEL=USD_PER_1K_TOKENS"),
        (["--strategy", "knn", "--cost", "gpt-4o=cheap"], "--cost 'gpt-4o=cheap': 'cheap' is not a number"),
        (
            ["--strategy", "mf", "--cost", "gpt-4o=0.01"],
            "mf with this knob needs --cost for every model; missing:",
        ),
        (
            ["--strategy", "elo", "--max-cost", "0"],
            "elo with this knob needs --cost for every model; missing:",
        ),
        (["--strategy", "knn", "--cost", "gpt-5=0.01"], "--cost gpt-5: no outcome for this model in"),
        (["--strategy", "knn", "--holdout", "1"], "--holdout 1.0: expected a share in [0, 1)"),
    ],
)
def test_bad_options_are_refused(args: list[str], message: str, small_data: Path, tmp_path: Path) -> None:
    result = routeiq("train", "--data", str(small_data), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"routeiq: error: {message}"), result.stderr


def test_a_non_empty_output_directory_is_refused(small_data: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = routeiq("train", "--strategy", "elo", "--data", str(small_data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "must be an empty or new directory" in result.stderr


def test_strategies_command_lists_the_trained_ones() -> None:
    result = routeiq("strategies")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split("\t") for line in result.stdout.splitlines())
    assert rows["knn"] == "heavy"
    assert rows["mf"] == "light"
    assert rows["round-robin"] == "io"
