"""`routeiq train`: train a router model from JSONL outcomes and write its artifact.

Registered by `routeiq_router.cli` when the ml extra is installed; importing this module loads
neither torch nor scikit-learn (the command does, when it runs).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import typer

from routeiq_router.strategies.catalog import TRAINED_STRATEGIES

__all__ = ["parse_cost", "register"]

STRATEGIES = TRAINED_STRATEGIES
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
        typer.Option("--threads", min=1, help="torch threads for embedding (default: one per CPU)"),
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
        )
    except (DataError, TrainingError, ArtifactError, EmbeddingModelNotFoundError) as error:
        raise _fail(str(error)) from None
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
    typer.echo(f"artifact: {out} (sha256 of manifest.json: {digest})")


def _strategies_with(knob: str) -> str:
    return "/".join(name for name, value in KNOBS.items() if value == knob)


def register(app: typer.Typer) -> None:
    """Add `routeiq train` to the `routeiq` command."""
    app.command("train")(train_command)
