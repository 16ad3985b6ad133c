"""TURN: the label-free temperature choice, with a fake model whose entropy depends on the
temperature, through ``ttscale eval --temperature auto``, and with the real 135M model."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.cli.main import app
from ttscale.errors import ConfigError
from ttscale.evaluation.temperature import (
    TemperatureSearch,
    choose_temperature,
    mean_entropy,
    token_entropy,
    turning_point,
)
from ttscale.params import SamplingParams
from ttscale.types import Generation, TokenLogprob

QUESTIONS = ["What is 2+2?", "What is 3+5?", "What is 7*6?"]


def falls_apart_above(start: float) -> FakeBackend:
    """Half the tokens always uncertain, the other half sure until the temperature passes
    ``start``, then quickly unsure, as a model whose samples degrade."""
    def lps(_p: object, _seed: int, pos: int, s: SamplingParams) -> list[float]:
        if pos % 2 == 0:
            return [-0.6, -0.8, -3.0]
        gap = max(0.1, 4.0 - 8.0 * max(0.0, s.temperature - start))
        return [-0.05, -0.05 - gap, -1.05 - gap]

    return FakeBackend(responses=["a b c d e f"], token_logprobs=lps)


def test_token_entropy_scales_with_temperature() -> None:
    top = [math.log(0.7), math.log(0.2), math.log(0.1)]
    h1 = token_entropy(top, 1.0)
    assert h1 == pytest.approx(-sum(p * math.log(p) for p in (0.7, 0.2, 0.1)))
    assert token_entropy(top, 0.1) < token_entropy(top, 0.5) < h1 < token_entropy(top, 3.0)
    assert token_entropy(top, 100.0) == pytest.approx(math.log(3), abs=1e-2)
    assert token_entropy([-0.3], 1.0) == 0.0  # one candidate: no uncertainty


def test_mean_entropy_averages_tokens_then_samples() -> None:
    half = TokenLogprob("a", math.log(0.5), (("a", math.log(0.5)), ("b", math.log(0.5))))
    sure = TokenLogprob("a", 0.0, (("a", 0.0),))
    gens = [Generation("", 1, 2, "stop", (half, sure)), Generation("", 1, 1, "stop", (half,)),
            Generation("", 1, 0, "stop", ())]
    assert mean_entropy(gens, 1.0) == pytest.approx((math.log(2) / 2 + math.log(2)) / 2)


def test_turning_point_matches_the_reference_rule() -> None:
    grid = np.arange(0.1, 1.5, 0.1)
    # log-entropy concave, then convex from 0.8 on: the paper's shape
    h = np.exp(np.where(grid < 0.8, -1 / grid, -1 / 0.8 + 3 * (grid - 0.8) ** 2))
    x = grid.tolist()
    second = np.gradient(np.gradient(np.log(h), grid), grid)
    expected = x[int(np.flatnonzero(second[1:-1] > 0)[0]) + 1]
    assert turning_point(x, h.tolist()) == expected
    assert 0.6 <= expected <= 0.9
    with pytest.raises(ConfigError, match="at least 3 temperatures"):
        turning_point([0.1, 0.2], [1.0, 2.0])


@pytest.mark.parametrize("start", [0.3, 0.5, 0.7])
def test_the_choice_follows_where_the_model_falls_apart(start: float) -> None:
    fb = falls_apart_above(start)
    c = choose_temperature(fb, QUESTIONS, TemperatureSearch(questions=2, samples=3,
                                                            max_tokens=8))
    # the grid point at which the model starts to fall apart, or the next one
    assert start - 1e-9 <= c.temperature <= start + 0.2 + 1e-9
    assert list(c.entropies) == sorted(c.entropies)  # entropy rises with temperature
    # one call per temperature, 2 prompts x 3 samples of 6 tokens each, top-20 asked
    assert len(fb.calls) == 7 * 2 and c.usage.completion_tokens == 7 * 2 * 3 * 6
    assert {params.temperature for _, params in fb.calls} == set(c.grid)
    assert all(params.top_logprobs == 20 and params.logprobs for _, params in fb.calls)


def test_best_of_n_adds_the_papers_adjustment() -> None:
    c = choose_temperature(falls_apart_above(0.7), QUESTIONS,
                           TemperatureSearch(questions=1, samples=2, aggregation="best_of_n"))
    assert c.turning_point == 0.7 and c.temperature == pytest.approx(0.8)


def test_search_settings_are_validated() -> None:
    for kwargs, words in (({"grid": (0.0, 0.5, 1.0)}, "positive, increasing"),
                          ({"samples": 0}, "must be positive"), ({"top_k": 50}, "top_k"),
                          ({"aggregation": "vote"}, "unknown aggregation")):
        with pytest.raises(ConfigError, match=words):
            TemperatureSearch(**kwargs)
    with pytest.raises(ConfigError, match="at least one question"):
        choose_temperature(FakeBackend(), ["  "])


def test_eval_temperature_auto_chooses_once_and_resumes(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["eval", "--dataset", "gsm8k", "--limit", "2", "--backend", "fake", "--n", "2",
            "--temperature", "auto", "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "turning point" in first.output and "mean token entropy" in first.output
    with sqlite3.connect(out / "run.sqlite") as conn:
        settings = json.loads(conn.execute("SELECT settings FROM run").fetchone()[0])
    chosen = settings["sampling"]["temperature"]
    assert chosen in TemperatureSearch().grid  # the fake's entropy is flat: an interior point
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert f"temperature {chosen:g}, chosen when" in again.output
    assert "turning point" not in again.output
    bad = runner.invoke(app, [*args[:-4], "--temperature", "warm", "--out", str(out)])
    assert bad.exit_code == 2 and "--temperature must be a number or auto" in bad.output


@pytest.mark.slow
def test_real_model_entropy_rises_and_a_grid_temperature_is_chosen(
        small_backend: object) -> None:
    from ttscale.backends.base import Backend

    assert isinstance(small_backend, Backend)
    search = TemperatureSearch(grid=(0.2, 0.6, 1.0, 1.4), questions=2, samples=2,
                               max_tokens=24, top_k=10)
    c = choose_temperature(small_backend, QUESTIONS, search)
    assert c.temperature in search.grid[1:-1]
    assert c.entropies[0] < c.entropies[-1] and all(h >= 0 for h in c.entropies)
    assert 0 < c.usage.completion_tokens <= 4 * 2 * 2 * 24
    assert c.usage.calls >= 4
