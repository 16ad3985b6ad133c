"""Datasets: every offline set with its gold answers, local JSONL, the lazy extras."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ttscale.errors import ConfigError, MissingExtra
from ttscale.evaluation.datasets import DATASETS, Problem, gold_text, load_dataset

# Generated and online sets list no sizes.
OFFLINE = [(d.name, split, size) for d in DATASETS if d.sizes
           for split, size in zip(d.splits, d.sizes, strict=True)]


@pytest.mark.parametrize(("name", "split", "size"), OFFLINE)
def test_offline_sets_load_with_questions_and_golds(name: str, split: str, size: int) -> None:
    problems = load_dataset(name, split)
    assert len(problems) == size
    assert all(p.question.strip() and p.gold.strip() for p in problems)
    assert len({p.id for p in problems}) == size


def test_offline_listing_covers_the_named_sets() -> None:
    names = {d.name for d in DATASETS}
    assert {"gsm8k", "math500", "math", "svamp", "asdiv"} <= names
    assert {"gym:TASK", "PATH.jsonl"} <= names


def test_gsm8k_test_and_the_old_import_path() -> None:
    problems = load_dataset("gsm8k", "test")
    assert len(problems) == 1319
    assert problems[0].gold == "18" and problems[0].id == "gsm8k-test-0"
    assert problems[0].question.startswith("Janet")
    # ttscale.data still works for one release, with a warning that names the new path.
    sys.modules.pop("ttscale.data", None)
    with pytest.warns(DeprecationWarning, match="ttscale.evaluation"):
        old = importlib.import_module("ttscale.data")
    assert old.Problem is Problem and old.gsm8k("test")[:3] == problems[:3]


def test_golds_are_extracted_per_source() -> None:
    # The last \boxed{} of the MATH solution, with nested braces.
    assert load_dataset("math", "test", limit=1)[0].gold == "2"
    math500 = load_dataset("math500", "test", limit=1)[0]
    assert math500.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500.meta["unique_id"] == "test/precalculus/807.json"
    svamp = load_dataset("svamp", "test", limit=1)[0]
    assert svamp.gold == "145"  # 145.0 in the file
    assert "93 groups. How big is each group" in svamp.question  # body joined to question
    asdiv = load_dataset("asdiv", "test", limit=1)[0]
    assert asdiv.gold == "9"  # "9 (apples)" in the file
    assert asdiv.question == ("Seven red apples and two green apples are in the basket. "
                              "How many apples are in the basket?")
    # A gold that only looks like a unit keeps its parentheses: "-(1/3)".
    assert "-(1/3)" in {p.gold for p in load_dataset("asdiv", "test")}


def test_limit_and_ids_select_in_dataset_order() -> None:
    assert [p.id for p in load_dataset("gsm8k", "train", limit=2)] == [
        "gsm8k-train-0", "gsm8k-train-1"]
    picked = load_dataset("gsm8k", "test", ids=["gsm8k-test-5", "gsm8k-test-2"])
    assert [p.id for p in picked] == ["gsm8k-test-2", "gsm8k-test-5"]
    with pytest.raises(ConfigError, match="gsm8k test has no problem 'nope'.*check the ids"):
        load_dataset("gsm8k", "test", ids=["nope"])
    with pytest.raises(ConfigError, match="limit must be a positive number"):
        load_dataset("gsm8k", "test", limit=0)


def test_unknown_dataset_and_split_list_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("gsm9k", "test")
    assert str(err.value).startswith("unknown dataset 'gsm9k': choose one of gsm8k, math500")
    assert "gym:TASK" in str(err.value) and "PATH.jsonl" in str(err.value)
    with pytest.raises(ConfigError, match="^math500 has no split 'train': choose test$"):
        load_dataset("math500", "train")
    with pytest.raises(ConfigError, match="apply to gym: sets only"):
        load_dataset("gsm8k", "test", seed=3)
    with pytest.raises(ConfigError, match="apply to JSONL and hf: sets only"):
        load_dataset("gsm8k", "test", answer_field="x")


def test_local_jsonl_default_and_named_fields(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": " 1+1? ", "answer": 2.0}\n\n'
                    '{"question": "q2", "answer": "so #### 1,000", "id": "x7", "level": 3}\n')
    problems = load_dataset(str(path), "test")
    assert problems == [Problem("mine-0", "1+1?", "2"),
                        Problem("x7", "q2", "1000", {"level": 3})]
    other = tmp_path / "other.jsonl"
    other.write_text('{"prompt": "Q", "gold": "\\\\boxed{7}"}\n')
    [p] = load_dataset(str(other), "test", question_field="prompt", answer_field="gold")
    assert (p.question, p.gold) == ("Q", "7")


def test_local_jsonl_bad_lines_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    # Line 3 (after a blank line) lacks the answer.
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b"}\n')
    with pytest.raises(ConfigError) as err:
        load_dataset(str(path), "test")
    assert str(err.value) == ("bad.jsonl line 3 has no field 'answer': add it, or name the "
                              "right field with question_field= / answer_field=")
    path.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ConfigError, match="^bad.jsonl line 2 is not valid JSON"):
        load_dataset(str(path), "test")
    path.write_text('{"text": "a", "answer": "1"}\n')
    with pytest.raises(ConfigError, match="no question field among question, problem, input: "
                                          "pass question_field=NAME"):
        load_dataset(str(path), "test")
    with pytest.raises(ConfigError, match="no dataset file at"):
        load_dataset(str(tmp_path / "absent.jsonl"), "test")


@pytest.mark.parametrize(("text", "says"), [
    ('{"question": "a", "answer": "1"}\n{"question": "  ", "answer": "2"}\n',
     "bad.jsonl line 2 has an empty 'question': fill it in or remove that line"),
    ('{"id": "x", "question": "a", "answer": "1"}\n{"id": "x", "question": "b", "answer": 2}\n',
     "bad.jsonl line 2 repeats the id 'x': give each question its own id"),
    ("\n\n", "bad.jsonl holds no questions: write one object with question and answer "
             "fields per line"),
])
def test_local_jsonl_without_usable_questions_is_refused(tmp_path: Path, text: str,
                                                         says: str) -> None:
    """An empty question, an id given twice (a run keys its rows by id) or an empty file."""
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_dataset(str(path), "test")
    assert str(err.value) == says


def test_gym_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails even if installed
    with pytest.raises(MissingExtra) as err:
        load_dataset("gym:basic_arithmetic", "test", limit=3)
    assert str(err.value) == "reasoning_gym is not installed: run pip install 'ttscale[gym]'"


def test_gym_generates_seeded_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def create_dataset(task: str, **kwargs: Any) -> list[dict[str, Any]]:
        seen.update(kwargs, task=task)
        return [{"question": f"{kwargs['seed']}+{i}?", "answer": kwargs["seed"] + i,
                 "metadata": {"i": i}} for i in range(kwargs["size"])]

    fake = types.ModuleType("reasoning_gym")
    fake.create_dataset = create_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "reasoning_gym", fake)
    problems = load_dataset("gym:basic_arithmetic", "test", limit=3, seed=5, max_terms=4)
    assert seen == {"task": "basic_arithmetic", "seed": 5, "size": 3, "max_terms": 4}
    assert [(p.id, p.question, p.gold) for p in problems] == [
        ("gym:basic_arithmetic-5-0", "5+0?", "5"), ("gym:basic_arithmetic-5-1", "5+1?", "6"),
        ("gym:basic_arithmetic-5-2", "5+2?", "7")]
    assert problems[1].meta["metadata"] == {"i": 1}
    with pytest.raises(ConfigError, match="gym:basic_arithmetic has no split 'train'"):
        load_dataset("gym:basic_arithmetic", "train")


def test_hf_missing_extra_and_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtra, match=r"pip install 'ttscale\[hf\]'"):
        load_dataset("hf:HuggingFaceH4/MATH-500", "test")
    fake = types.ModuleType("datasets")
    calls: list[tuple[Any, ...]] = []

    def hf_load(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((repo, config, split))
        return [{"problem": "What is $1+1$?", "answer": "2", "level": 1}]

    fake.load_dataset = hf_load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    [p] = load_dataset("hf:openai/gsm8k:main", "test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert (p.id, p.question, p.gold, dict(p.meta)) == ("gsm8k-test-0", "What is $1+1$?", "2",
                                                        {"level": 1})
    with pytest.raises(ConfigError, match="not a Hugging Face dataset name"):
        load_dataset("hf:gsm8k", "test")


def test_gold_text_forms() -> None:
    assert gold_text(3) == "3" and gold_text(0.5) == "0.5" and gold_text(True) == "True"
    assert gold_text("work\n#### -1,234") == "-1234"
    assert gold_text("$\\boxed{\\frac{a}{b}}$") == "\\frac{a}{b}"
