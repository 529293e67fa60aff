"""The five router models: what each learns, how it scores the candidate models of a prompt,
how it chooses with its quality/cost knob, and how it is saved into and loaded from an artifact.

One module per model family, on a common base:

    base         RouterModel (knob, scoring, saving and loading), TrainingSet, ModelFormatError,
                 the choice helpers and the quality-minus-weighted-cost choice of knn/mlp/svm
    knn          KnnRouter
    classifiers  MlpRouter and SvmRouter (scikit-learn classifiers, saved with skops)
    elo          EloRouter
    mf           MfRouter

and here, ROUTER_MODELS (the model class of each trained strategy) and loading the model of an
artifact by its manifest's strategy.

Every model knows its candidate model names (the manifest's `candidates`, in that order), their
cost (`parameters.costs`, USD per 1K tokens, from `routeiq train --cost`) and its knob
(`parameters.knob`, named by `parameters.knobName`):

| strategy | scores(prompt)                              | knob        | choice among the allowed models        |
|----------|---------------------------------------------|-------------|----------------------------------------|
| knn      | mean outcome of the k nearest training      | cost_weight | max score - cost_weight * cost / max   |
|          | prompts (cosine), per model                 | (0)         | cost; ties: the cheaper                |
| mlp      | P(model is the best), MLP classifier        | cost_weight | as knn                                 |
| svm      | P(model is the best), calibrated RBF SVC    | cost_weight | as knn                                 |
| elo      | Bradley-Terry rating on the Elo scale,      | max_cost    | the best rated costing <= max_cost     |
|          | the same for every prompt                   | (none)      | (none fits: the cheapest)              |
| mf       | v_m . (W x + b): logit of model m on x      | threshold   | RouteLLM-style escalation, see MF      |
|          |                                             | (0.5)       |                                        |

MF's threshold: the allowed models are ordered by cost (cheapest first, config order on equal
cost). Start with the cheapest. Among the more expensive models, take the one most likely to
beat the current one, P(m beats c | x) = sigmoid(score(m) - score(c)); move to it if that
probability is greater than the threshold, and repeat from there; otherwise stop. With two
models this is exactly RouteLLM's rule (the strong model only if its win probability over
the weak one exceeds the threshold). Raising the threshold can only stop the walk earlier, so
it monotonically moves traffic to cheaper models: 0 always ends on the most expensive model,
1 always stays on the cheapest.
"""

from __future__ import annotations

from collections.abc import Mapping

from routeiq_router.artifacts.manifest import Manifest
from routeiq_router.ml.models.base import ModelFormatError, RouterModel, TrainingSet
from routeiq_router.ml.models.classifiers import MLP_TRUSTED_TYPES, SVM_TRUSTED_TYPES, MlpRouter, SvmRouter
from routeiq_router.ml.models.elo import EloRouter
from routeiq_router.ml.models.knn import KnnRouter
from routeiq_router.ml.models.mf import MfRouter
from routeiq_router.ml.payload import FilesReader, PayloadReader

__all__ = [
    "MLP_TRUSTED_TYPES",
    "ROUTER_MODELS",
    "SVM_TRUSTED_TYPES",
    "EloRouter",
    "KnnRouter",
    "MfRouter",
    "MlpRouter",
    "ModelFormatError",
    "RouterModel",
    "SvmRouter",
    "TrainingSet",
    "model_from_files",
    "model_from_reader",
]

ROUTER_MODELS: dict[str, type[RouterModel]] = {
    model.strategy: model for model in (KnnRouter, MlpRouter, SvmRouter, EloRouter, MfRouter)
}


def model_from_reader(reader: PayloadReader, manifest: Manifest, *, knob: float | None = None) -> RouterModel:
    """The router model of an artifact, by its manifest's strategy."""
    try:
        cls = ROUTER_MODELS[manifest.strategy]
    except KeyError:
        raise ModelFormatError(
            f"manifest.json: strategy {manifest.strategy!r} has no trained model (known: {', '.join(ROUTER_MODELS)})"
        ) from None
    return cls.from_reader(reader, manifest, knob=knob)


def model_from_files(
    files: Mapping[str, bytes], manifest: Manifest, *, knob: float | None = None
) -> RouterModel:
    """`model_from_reader` over the payload files' bytes."""
    return model_from_reader(FilesReader(files), manifest, knob=knob)
