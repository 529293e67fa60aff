"""Training data: JSONL prompts with per-model outcomes, as `routeiq train --data` reads them.

One JSON object per line (blank lines are skipped):

    {"prompt": "Prove that ...", "scores": {"gpt-4o": 0.82, "gpt-4o-mini": 0.41}}
    {"prompt": "Translate ...", "preferences": [["gpt-4o-mini", "gpt-4o"], ...]}
    {"prompt": "Hi!", "winner": "gpt-4o-mini", "loser": "gpt-4o"}

- `scores`: outcome per model, a number in [0, 1] (a judge's grade scaled to 0..1, a pass
  rate, ...); higher is better; the models may differ from line to line.
- `preferences`: `[winner, loser]` pairs; `winner` + `loser`: one pair. A line may hold scores
  and preferences; it needs at least one outcome.
- Optional, ignored: `id`, `topic`, `difficulty`, `metadata`. Any other field is refused (a
  misspelt `score` would otherwise silently drop the outcome).

Derivations (the strategies need one kind of outcome or the other):
- preferences from scores, for ELO and MF on lines without explicit preferences: every pair of
  models whose scores differ by at least `PREFERENCE_MARGIN` (0.05), the higher one winning;
  closer pairs count as ties and are left out. Explicit preferences of a line win over
  derived ones.
- scores from preferences, for KNN, MLP and SVM on lines without scores: each model compared
  on the line scores its win rate there (wins / comparisons: 1, 0.5, 0); models not compared
  have no score on that line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "IGNORED_FIELDS",
    "PREFERENCE_MARGIN",
    "DataError",
    "Example",
    "example_preferences",
    "example_scores",
    "model_names",
    "parse_jsonl",
    "read_jsonl",
    "score_matrix",
    "split_indices",
]

PREFERENCE_MARGIN = 0.05
OUTCOME_FIELDS = ("scores", "preferences", "winner", "loser")
IGNORED_FIELDS = ("id", "topic", "difficulty", "metadata")
_KNOWN_FIELDS = ("prompt", *OUTCOME_FIELDS, *IGNORED_FIELDS)


class DataError(ValueError):
    """A training-data line that cannot be used; the message names the file, line and field."""

    def __init__(self, source: str, line: int | None, field: str | None, message: str) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.source = source
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class Example:
    """One training prompt and its outcomes (as given; see the derivations above)."""

    prompt: str
    scores: Mapping[str, float] = field(default_factory=dict)
    preferences: tuple[tuple[str, str], ...] = ()
    line: int = 0


def _model_name(value: object, source: str, line: int, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(source, line, where, f"expected a model name (non-empty string), got {value!r}")
    return value


def _parse_scores(value: object, source: str, line: int) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise DataError(source, line, "scores", 'expected an object of model scores, e.g. {"gpt-4o": 0.8}')
    scores: dict[str, float] = {}
    for model, score in value.items():
        _model_name(model, source, line, "scores")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
            or not 0.0 <= score <= 1.0
        ):
            raise DataError(
                source, line, f"scores.{model}", f"expected a number between 0 and 1, got {score!r}"
            )
        scores[model] = float(score)
    return scores


def _parse_pair(winner: object, loser: object, source: str, line: int, where: str) -> tuple[str, str]:
    pair = (_model_name(winner, source, line, where), _model_name(loser, source, line, where))
    if pair[0] == pair[1]:
        raise DataError(source, line, where, f"a model cannot win against itself ({pair[0]!r})")
    return pair


def _parse_line(document: object, source: str, line: int) -> Example:
    if not isinstance(document, dict):
        raise DataError(source, line, None, f"expected a JSON object, got {type(document).__name__}")
    for key in document:
        if key not in _KNOWN_FIELDS:
            raise DataError(source, line, str(key), f"unknown field (known: {', '.join(_KNOWN_FIELDS)})")
    prompt = document.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        detail = "missing" if prompt is None else f"expected a non-empty string, got {prompt!r}"
        raise DataError(source, line, "prompt", detail)
    scores = _parse_scores(document["scores"], source, line) if "scores" in document else {}
    pairs: list[tuple[str, str]] = []
    if "preferences" in document:
        raw = document["preferences"]
        if not isinstance(raw, list):
            raise DataError(source, line, "preferences", "expected a list of [winner, loser] pairs")
        for index, item in enumerate(raw):
            where = f"preferences[{index}]"
            if not isinstance(item, list) or len(item) != 2:
                raise DataError(source, line, where, f"expected [winner, loser], got {item!r}")
            pairs.append(_parse_pair(item[0], item[1], source, line, where))
    if "winner" in document or "loser" in document:
        for name in ("winner", "loser"):
            if name not in document:
                raise DataError(source, line, name, "missing (winner and loser go together)")
        pairs.append(_parse_pair(document["winner"], document["loser"], source, line, "winner"))
    if not scores and not pairs:
        raise DataError(source, line, None, "no outcome: give scores, preferences, or winner and loser")
    return Example(prompt=prompt, scores=scores, preferences=tuple(pairs), line=line)


def parse_jsonl(data: bytes, source: str = "<data>") -> list[Example]:
    """Every example of a JSONL document; DataError naming the first bad line and field."""
    examples: list[Example] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(source, number, None, "not UTF-8 text") from None
        try:
            document: Any = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                source, number, None, f"not valid JSON: {error.msg} (column {error.colno})"
            ) from None
        examples.append(_parse_line(document, source, number))
    if not examples:
        raise DataError(source, None, None, "no examples (expected one JSON object per line)")
    return examples


def read_jsonl(path: Path) -> tuple[list[Example], bytes]:
    """The examples of a JSONL file and the file's bytes (whose sha256 the manifest records)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(str(path), None, None, f"cannot read: {error.strerror or error}") from None
    return parse_jsonl(data, str(path)), data


def model_names(examples: Sequence[Example]) -> list[str]:
    """Every model that has an outcome somewhere in the data, sorted."""
    names: set[str] = set()
    for example in examples:
        names.update(example.scores)
        for winner, loser in example.preferences:
            names.update((winner, loser))
    return sorted(names)


def example_preferences(example: Example, margin: float = PREFERENCE_MARGIN) -> list[tuple[str, str]]:
    """The line's explicit preferences, else those derived from its scores."""
    if example.preferences:
        return list(example.preferences)
    models = sorted(example.scores)
    pairs: list[tuple[str, str]] = []
    for i, first in enumerate(models):
        for second in models[i + 1 :]:
            difference = example.scores[first] - example.scores[second]
            if difference >= margin:
                pairs.append((first, second))
            elif -difference >= margin:
                pairs.append((second, first))
    return pairs


def example_scores(example: Example) -> dict[str, float]:
    """The line's scores, else each compared model's win rate on the line."""
    if example.scores:
        return dict(example.scores)
    wins: dict[str, int] = {}
    games: dict[str, int] = {}
    for winner, loser in example.preferences:
        wins[winner] = wins.get(winner, 0) + 1
        wins.setdefault(loser, 0)
        for model in (winner, loser):
            games[model] = games.get(model, 0) + 1
    return {model: wins[model] / games[model] for model in games}


def score_matrix(
    examples: Sequence[Example], models: Sequence[str], *, derive: bool = True
) -> npt.NDArray[np.float32]:
    """(examples, models) outcome scores, NaN where a model has none on a line. `derive=False`
    uses explicit scores only (what held-out evaluation compares)."""
    matrix = np.full((len(examples), len(models)), np.nan, dtype=np.float32)
    column = {model: index for index, model in enumerate(models)}
    for row, example in enumerate(examples):
        scores = example_scores(example) if derive else example.scores
        for model, score in scores.items():
            if model in column:
                matrix[row, column[model]] = score
    return matrix


def split_indices(count: int, holdout: float, seed: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(train, held-out) example indices: a seeded shuffle, the last `holdout` share held out."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(count)
    held = round(count * holdout)
    return np.sort(order[: count - held]), np.sort(order[count - held :])
