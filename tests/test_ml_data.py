"""Training data: the synthetic example dataset and the JSONL format `routeiq train` reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routeiq_router.ml.data import (
    DataError,
    Example,
    example_preferences,
    example_scores,
    model_names,
    parse_jsonl,
    score_matrix,
    split_indices,
)
from tests.test_ml_support import CHEAP, DATA, SPECIALIST, STRONG, generator


def test_committed_example_data_is_what_the_generator_produces() -> None:
    assert DATA.read_text(encoding="utf-8") == generator().render(), (
        "examples/routing-data/prompts.jsonl is stale: run python examples/routing-data/generate.py"
    )


def test_example_data_is_varied_synthetic_and_in_every_format() -> None:
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert 600 <= len(records) <= 1200
    assert len({record["prompt"] for record in records}) == len(records), "no duplicate prompts"
    assert {record["topic"] for record in records} == {"code", "math", "chat", "translation", "legal-summary"}
    assert {"scores", "preferences"} <= records[0].keys()
    assert any("scores" not in record and "preferences" in record for record in records)
    assert any("winner" in record for record in records)
    examples = parse_jsonl(DATA.read_bytes())
    assert model_names(examples) == sorted([STRONG, CHEAP, SPECIALIST])
    assert "SYNTHETIC" in (DATA.parent / "README.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in (generator().__doc__ or "")


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("not json", "data.jsonl:2: not valid JSON"),
        ("[1, 2]", "data.jsonl:2: expected a JSON object"),
        ('{"scores": {"a": 0.5}}', "data.jsonl:2: prompt: missing"),
        ('{"prompt": "  ", "scores": {"a": 0.5}}', "data.jsonl:2: prompt: expected a non-empty string"),
        (
            '{"prompt": "p", "scores": {"a": 1.5}}',
            "data.jsonl:2: scores.a: expected a number between 0 and 1",
        ),
        ('{"prompt": "p", "scores": {"a": true}}', "data.jsonl:2: scores.a: expected a number"),
        ('{"prompt": "p", "scores": []}', "data.jsonl:2: scores: expected an object"),
        ('{"prompt": "p", "preferences": [["a"]]}', "data.jsonl:2: preferences[0]: expected [winner, loser]"),
        ('{"prompt": "p", "preferences": [["a", "a"]]}', "data.jsonl:2: preferences[0]: a model cannot win"),
        ('{"prompt": "p", "winner": "a"}', "data.jsonl:2: loser: missing"),
        ('{"prompt": "p", "score": {"a": 1}}', "data.jsonl:2: score: unknown field"),
        ('{"prompt": "p"}', "data.jsonl:2: no outcome"),
        ('{"prompt": "p", "preferences": []}', "data.jsonl:2: no outcome"),
    ],
)
def test_bad_lines_are_refused_naming_line_and_field(line: str, where: str) -> None:
    good = '{"prompt": "hello", "scores": {"a": 0.5, "b": 0.7}}'
    with pytest.raises(DataError) as caught:
        parse_jsonl(f"{good}\n{line}\n".encode(), "data.jsonl")
    assert str(caught.value).startswith(where), str(caught.value)
    assert caught.value.line == 2


def test_blank_lines_are_skipped_and_an_empty_file_is_refused() -> None:
    examples = parse_jsonl(b'\n{"prompt": "p", "winner": "a", "loser": "b", "id": 7, "topic": "t"}\n\n')
    assert examples == [Example(prompt="p", preferences=(("a", "b"),), line=2)]
    with pytest.raises(DataError, match="no examples"):
        parse_jsonl(b"\n\n")


def test_preferences_derived_from_scores_skip_ties_and_explicit_ones_win() -> None:
    scored = Example(prompt="p", scores={"a": 0.9, "b": 0.5, "c": 0.88})
    assert sorted(example_preferences(scored)) == [("a", "b"), ("c", "b")], "a and c are within 0.05"
    explicit = Example(prompt="p", scores={"a": 0.9, "b": 0.5}, preferences=(("b", "a"),))
    assert example_preferences(explicit) == [("b", "a")]


def test_scores_derived_from_preferences_are_win_rates_of_compared_models() -> None:
    example = Example(prompt="p", preferences=(("a", "b"), ("a", "c"), ("c", "b")))
    assert example_scores(example) == {"a": 1.0, "b": 0.0, "c": 0.5}
    matrix = score_matrix([example], ["a", "b", "c", "d"])
    assert matrix[0, :3].tolist() == [1.0, 0.0, 0.5]
    assert np.isnan(matrix[0, 3])
    assert np.isnan(score_matrix([example], ["a", "b"], derive=False)).all(), "derive=False: explicit only"


def test_split_is_seeded_disjoint_and_complete() -> None:
    train, held = split_indices(100, 0.2, seed=3)
    again_train, again_held = split_indices(100, 0.2, seed=3)
    assert (train == again_train).all()
    assert (held == again_held).all()
    assert len(held) == 20
    assert not set(train) & set(held)
    assert len(set(train) | set(held)) == 100
    assert not (split_indices(100, 0.2, seed=4)[1] == held).all()
    with pytest.raises(ValueError, match="holdout"):
        split_indices(10, 1.0, seed=0)
