"""`routeiq train`: train a router model from JSONL outcomes and write its artifact;
`routeiq embedder build|inspect|verify|sign`: the onnx and static embedders.

Registered by `routeiq_router.cli` when the ml extra is installed; importing this module loads
neither torch nor scikit-learn (the command does, when it runs).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from routeiq_router.artifacts.manifest import EMBEDDER_KINDS as EMBEDDERS
from routeiq_router.strategies.catalog import TRAINED_STRATEGIES

__all__ = ["parse_cost", "register"]

STRATEGIES = TRAINED_STRATEGIES
_BUILD_NEEDS = (
    "the torch embedder, and building an onnx or static one, need the ml extra "
    "(torch, sentence-transformers, onnx, model2vec): pip install 'routeiq[ml]'"
)
KNOBS = {
    "knn": "cost_weight",
    "mlp": "cost_weight",
    "svm": "cost_weight",
    "elo": "max_cost",
    "mf": "threshold",
}


def _fail(message: str) -> typer.Exit:
    typer.echo(f"routeiq: error: {message}", err=True)
    return typer.Exit(2)


def parse_cost(argument: str) -> tuple[str, float]:
    """`MODEL=USD_PER_1K_TOKENS` -> (model, cost); ValueError naming the problem."""
    model, separator, value = argument.rpartition("=")
    if not separator or not model:
        raise ValueError(f"--cost {argument!r}: expected MODEL=USD_PER_1K_TOKENS, e.g. gpt-4o=0.00625")
    try:
        cost = float(value)
    except ValueError:
        raise ValueError(f"--cost {argument!r}: {value!r} is not a number") from None
    if not math.isfinite(cost) or cost < 0:
        raise ValueError(f"--cost {argument!r}: the cost must be a number >= 0")
    return model, cost


def train_command(
    strategy: Annotated[str, typer.Option("--strategy", help=f"One of: {', '.join(STRATEGIES)}")],
    data: Annotated[Path, typer.Option("--data", help="JSONL: prompts with per-model scores or preferences")],
    out: Annotated[Path, typer.Option("--out", help="Artifact directory to create (must be empty)")],
    cost: Annotated[
        list[str] | None,
        typer.Option("--cost", metavar="MODEL=USD", help="Cost per 1K tokens; repeat for each model"),
    ] = None,
    holdout: Annotated[float, typer.Option("--holdout", help="Share of examples held out to evaluate")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and of the training")] = 0,
    embedding_model: Annotated[
        str | None,
        typer.Option(
            "--embedding-model",
            help="Directory, or a name under SENTENCE_TRANSFORMERS_HOME (default: bundled all-MiniLM-L6-v2)",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Threads for embedding (default: one per CPU)"),
    ] = None,
    embedder: Annotated[
        str,
        typer.Option(
            "--embedder",
            help=(
                "static (default: fastest, served without torch), onnx (torch's vectors, served "
                "without torch) or torch (the sentence-transformer itself, served with torch)"
            ),
        ),
    ] = "static",
    embedder_path: Annotated[
        Path | None,
        typer.Option(
            "--embedder-path",
            help=(
                "The onnx/static embedder directory, from `routeiq embedder build` (default: build "
                "one from the embedding model once and keep it in ~/.cache/routeiq/embedders)"
            ),
        ),
    ] = None,
    embedder_public_key: Annotated[
        Path | None,
        typer.Option("--embedder-public-key", help="Require the embedder's manifest.sig made with this key"),
    ] = None,
    cost_weight: Annotated[
        float | None,
        typer.Option("--cost-weight", help="knn/mlp/svm knob: score - weight * cost / max cost (default 0)"),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost", help="elo knob: best rated model costing at most this (USD per 1K tokens)"
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="mf knob: escalate when P(costlier model wins) > this (default 0.5)"
        ),
    ] = None,
) -> None:
    """Train a router model (knn, mlp, svm, elo, mf) and write its artifact."""
    if strategy not in STRATEGIES:
        raise _fail(f"--strategy {strategy!r}: trainable strategies are {', '.join(STRATEGIES)}")
    knobs = {"cost_weight": cost_weight, "max_cost": max_cost, "threshold": threshold}
    for name, value in knobs.items():
        if value is not None and KNOBS[strategy] != name:
            raise _fail(
                f"--{name.replace('_', '-')} is the knob of {_strategies_with(name)}, not of {strategy}"
            )
    knob = knobs[KNOBS[strategy]]
    costs: dict[str, float] = {}
    try:
        for argument in cost or []:
            model, value = parse_cost(argument)
            costs[model] = value
    except ValueError as error:
        raise _fail(str(error)) from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _fail(f"--out {out}: must be an empty or new directory")
    if not 0.0 <= holdout < 1.0:
        raise _fail(f"--holdout {holdout}: expected a share in [0, 1), e.g. 0.2")
    if embedder not in EMBEDDERS:
        raise _fail(f"--embedder {embedder!r}: one of {', '.join(EMBEDDERS)}")
    if embedder == "torch" and (embedder_path is not None or embedder_public_key is not None):
        raise _fail("--embedder-path and --embedder-public-key are for --embedder onnx or static")
    if embedder != "torch" and embedding_model is not None and embedder_path is not None:
        raise _fail("--embedding-model is what an embedder is built from; --embedder-path names a built one")
    key_bytes = None
    if embedder_public_key is not None:
        try:
            key_bytes = embedder_public_key.read_bytes()
        except OSError as error:
            raise _fail(f"--embedder-public-key {embedder_public_key}: {error.strerror}") from None

    from routeiq_router.artifacts.manifest import ArtifactError, sha256_hex
    from routeiq_router.ml.data import DataError, model_names, read_jsonl
    from routeiq_router.ml.embeddings import EmbeddingModelNotFoundError
    from routeiq_router.ml.models import ROUTER_MODELS
    from routeiq_router.ml.train import TrainingError, train_artifact

    try:
        ROUTER_MODELS[strategy].check_knob(knob)
        models = model_names(read_jsonl(data)[0])
    except ValueError as error:  # DataError is a ValueError too
        message = (
            str(error) if isinstance(error, DataError) else f"--{KNOBS[strategy].replace('_', '-')}: {error}"
        )
        raise _fail(message) from None
    unknown = sorted(set(costs) - set(models))
    if unknown:
        raise _fail(f"--cost {unknown[0]}: no outcome for this model in {data} (models: {', '.join(models)})")
    missing = [model for model in models if model not in costs]
    cost_matters = strategy == "mf" or (knob is not None and (strategy == "elo" or knob > 0))
    if missing and cost_matters:
        raise _fail(f"{strategy} with this knob needs --cost for every model; missing: {', '.join(missing)}")
    for model in missing:
        typer.echo(f"routeiq: warning: no --cost for {model}: it counts as free (0 USD)", err=True)

    started = time.perf_counter()
    try:
        manifest, result = train_artifact(
            strategy,
            data,
            out,
            costs=costs,
            holdout=holdout,
            seed=seed,
            knob=knob,
            embedding_model=embedding_model,
            threads=threads,
            embedder_kind=embedder,
            embedder_path=embedder_path,
            embedder_public_key=key_bytes,
        )
    except (DataError, TrainingError, ArtifactError, EmbeddingModelNotFoundError) as error:
        raise _fail(str(error)) from None
    except ModuleNotFoundError as error:
        raise _fail(f"{error.name} is missing: {_BUILD_NEEDS}") from None
    seconds = time.perf_counter() - started
    digest = sha256_hex(manifest.to_bytes())
    metrics = result.metrics
    typer.echo(
        f"trained {strategy} on {len(result.train_rows)} examples "
        f"({len(result.heldout_rows)} held out) in {seconds:.1f}s"
    )
    if "router_score" in metrics:
        typer.echo(f"held-out mean score over {int(metrics['heldout_scored_examples'])} scored prompts:")
        for name in ("router", "best_single", "random", "oracle"):
            typer.echo(
                f"  {name.replace('_', ' '):<12} {metrics[f'{name}_score']:.4f}"
                f"   cost {metrics[f'{name}_cost']:.6f} USD/1K tokens"
            )
    typer.echo(f"{KNOBS[strategy]} = {result.model.knob}")
    if manifest.embedding is not None:
        typer.echo(f"embedder: {manifest.embedding.embedder_kind} ({manifest.embedding.model})")
    typer.echo(f"artifact: {out} (sha256 of manifest.json: {digest})")


def _strategies_with(knob: str) -> str:
    return "/".join(name for name, value in KNOBS.items() if value == knob)


embedder_app = typer.Typer(
    name="embedder",
    help="Build, inspect, verify and sign onnx and static embedders (see docs/ml-routing.md).",
    no_args_is_help=True,
)


@embedder_app.command("build")
def embedder_build(
    kind: Annotated[str, typer.Option("--kind", help="onnx (ONNX Runtime) or static (model2vec)")],
    out: Annotated[Path, typer.Option("--out", help="Embedder directory to create (must be empty)")],
    embedding_model: Annotated[
        str | None,
        typer.Option(
            "--embedding-model", help="A sentence-transformer directory (default: bundled all-MiniLM-L6-v2)"
        ),
    ] = None,
    dimensions: Annotated[
        int, typer.Option("--dimensions", min=2, help="static: PCA dimensions of the distilled vectors")
    ] = 256,
) -> None:
    """Build an onnx or static embedder from a sentence-transformer, offline (needs the ml extra)."""
    if kind not in ("onnx", "static"):
        raise _fail(f"--kind {kind!r}: onnx or static (torch needs no building)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _fail(f"--out {out}: must be an empty or new directory")
    from routeiq_router.artifacts.manifest import ArtifactError
    from routeiq_router.ml.embedders import build_embedder
    from routeiq_router.ml.embeddings import EmbeddingModelNotFoundError

    started = time.perf_counter()
    try:
        manifest, digest = build_embedder(kind, out, source=embedding_model, dimensions=dimensions)  # type: ignore[arg-type]
    except (ArtifactError, EmbeddingModelNotFoundError) as error:
        raise _fail(str(error)) from None
    except ModuleNotFoundError as error:
        raise _fail(f"{error.name} is missing: {_BUILD_NEEDS}") from None
    size = sum(entry.size for entry in manifest.files)
    typer.echo(
        f"built {kind} embedder of {manifest.model} ({manifest.dimension}-d, {size / 2**20:.1f} MiB) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    typer.echo(f"embedder: {out} (sha256 of manifest.json: {digest})")


def _read_embedder(path: Path, public_key: Path | None = None, digest: str | None = None) -> Any:
    from routeiq_router.artifacts.manifest import ArtifactError
    from routeiq_router.artifacts.verify import read_embedder

    key = None
    if public_key is not None:
        try:
            key = public_key.read_bytes()
        except OSError as error:
            raise _fail(f"public key {public_key}: {error.strerror}") from None
    try:
        return read_embedder(path, public_key=key, expected_digest=digest)
    except ArtifactError as error:
        typer.echo(f"routeiq: error: {error} [{error.reason}]", err=True)
        raise typer.Exit(1) from None
    except ValueError as error:  # a malformed key or digest
        raise _fail(str(error)) from None


@embedder_app.command("inspect")
def embedder_inspect(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="An embedder directory")],
) -> None:
    """Verify every file's sha256 and print the embedder's manifest with its digest (JSON)."""
    verified = _read_embedder(path)
    document = verified.manifest.model_dump(mode="json", by_alias=True, exclude_none=True)
    typer.echo(
        json.dumps({"digest": verified.digest, "signature": verified.signature_status, **document}, indent=2)
    )


@embedder_app.command("verify")
def embedder_verify(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="An embedder directory")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Require a valid manifest.sig made with this key")
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option("--digest", metavar="SHA256", help="Require this digest (sha256 of manifest.json)"),
    ] = None,
) -> None:
    """Verify an embedder directory as training does; prints `verified <digest>`."""
    verified = _read_embedder(path, public_key, digest)
    typer.echo(f"verified {verified.digest}")


@embedder_app.command("sign")
def embedder_sign(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="The embedder directory")],
    key: Annotated[Path, typer.Option("--key", metavar="PRIVATE.pem", help="The ed25519 private key (PEM)")],
) -> None:
    """Verify the embedder in DIR, then write its manifest.sig (keys: `routeiq artifact keygen`)."""
    from routeiq_router.artifacts.manifest import SIGNATURE
    from routeiq_router.artifacts.signing import KeyFormatError, load_private_key, sign

    verified = _read_embedder(path)
    try:
        private = load_private_key(key.read_bytes())
    except OSError as error:
        raise _fail(f"private key {key}: {error.strerror}") from None
    except KeyFormatError as error:
        raise _fail(f"private key {key}: {error}") from None
    (path / SIGNATURE).write_bytes(sign(verified.manifest_bytes, private))
    typer.echo(f"signed {verified.digest}")


def register(app: typer.Typer) -> None:
    """Add `routeiq train` and `routeiq embedder` to the `routeiq` command."""
    app.command("train")(train_command)
    app.add_typer(embedder_app, name="embedder")
