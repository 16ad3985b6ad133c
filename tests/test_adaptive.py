"""Adaptive N: the stopping rules, their replay on stored samples, and the online strategy."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ttscale
from ttscale.aggregation.stopping import (
    BayesFactorRule,
    BudgetedBayesFactorRule,
    FixedRule,
    Tally,
    bayes_factor,
    parse_rule,
)
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.adaptive import (
    adaptive_curve,
    orders_for,
    replay_order,
    replay_question,
)
from ttscale.evaluation.replay.metrics import QuestionSamples, prepare

SRC = str(Path(ttscale.__file__).resolve().parents[1])
RULES = [BayesFactorRule(threshold=10), BayesFactorRule(threshold=100),
         BudgetedBayesFactorRule()]


def run_rule(rule: BayesFactorRule | BudgetedBayesFactorRule, answers: list[int | None]) -> int:
    tally = Tally()
    for a in answers:
        tally = tally.add(a)
        if rule.should_stop(tally):
            break
    return tally.drawn


@pytest.mark.parametrize("rule", RULES)
def test_unanimous_samples_stop_early(rule: BayesFactorRule) -> None:
    assert run_rule(rule, [0] * 80) <= 6


@pytest.mark.parametrize("rule", [BayesFactorRule(threshold=10), BayesFactorRule(threshold=100)])
def test_uniform_samples_run_to_n_max(rule: BayesFactorRule) -> None:
    # every sample a new answer: the leader is never more likely than the rest to be the mode
    assert run_rule(rule, list(range(80))) == 80
    # two answers alternating: a tie at every even count, never settled
    assert run_rule(rule, [i % 2 for i in range(80)]) == 80


def test_budgeted_rule_ends_at_its_horizon_on_uniform_samples() -> None:
    rule = BudgetedBayesFactorRule(horizon=32)
    assert 16 < run_rule(rule, list(range(80))) <= 32


def test_no_answer_never_stops_before_a_vote() -> None:
    rule = BayesFactorRule(threshold=10, n_max=20)
    assert run_rule(rule, [None] * 15 + [0] * 5) == 18  # three votes needed, like [0, 0, 0]
    assert run_rule(rule, [None] * 30) == 20


def test_threshold_monotone() -> None:
    rng = random.Random(0)
    for _ in range(20):
        answers: list[int | None] = [0]
        for _ in range(79):  # class ids in first-seen order
            answers.append(min(rng.choice([0, 0, 0, 1, 1, 2]), max(a or 0 for a in answers) + 1))
        used = [run_rule(BayesFactorRule(threshold=t), answers) for t in (3, 10, 30, 100)]
        assert used == sorted(used)
        used = [run_rule(BudgetedBayesFactorRule(threshold=t), answers) for t in (5, 15, 40)]
        assert used == sorted(used)


def test_bayes_factor_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    for counts in ([2], [5, 2, 1], [4, 3], [6, 1, 1, 1]):
        alphas = np.array([c + 1.0 for c in counts] + [1.3])
        draws = rng.dirichlet(alphas, 200_000)
        p = float((draws.argmax(axis=1) == 0).mean())
        assert bayes_factor(counts) == pytest.approx(len(alphas) * p / (1 - p), rel=0.03)


def test_tally_rejects_skipped_class_ids() -> None:
    with pytest.raises(ConfigError, match="first-seen order"):
        Tally().add(1)


def test_parse_rule_forms() -> None:
    assert parse_rule("bayes_factor,threshold=100").threshold == 100  # type: ignore[attr-defined]
    assert parse_rule("budgeted,horizon=48", n_max=40).n_max == 40
    with pytest.raises(ConfigError, match="unknown stopping rule"):
        parse_rule("sprt")
    with pytest.raises(ConfigError, match="must be a number"):
        parse_rule("bayes_factor,threshold=high")
    with pytest.raises(ConfigError, match="threshold must be > 1"):
        parse_rule("budgeted,threshold=1")
    for bad, says in [("budgeted,power=nan", "power must be a finite number"),
                      ("budgeted,horizon=inf", "horizon must be a finite number"),
                      ("budgeted,horizon=2.5", "horizon must be a whole number")]:
        with pytest.raises(ConfigError, match=says):
            parse_rule(bad)


def synthetic(seed: int, n: int = 40) -> list[tuple[str | None, int]]:
    rng = random.Random(seed)
    return [(rng.choice(["7", "7", "7", "3", None]), rng.randint(50, 150)) for _ in range(n)]


def test_replay_is_deterministic_with_a_seed() -> None:
    s = synthetic(1)
    rule = BudgetedBayesFactorRule()
    a = replay_question(s, "7", rule, orders=7, seed=3)
    assert a == replay_question(s, "7", rule, orders=7, seed=3)
    assert a != replay_question(s, "7", rule, orders=7, seed=4)


def test_replay_counts_the_tokens_of_every_drawn_sample() -> None:
    s = [("1", 10), (None, 1000), ("1", 20), ("2", 40), ("1", 80)]
    p = prepare([(a, t, None) for a, t in s], "1")
    out = replay_order(p, FixedRule(n_max=3), [1, 0, 3, 2, 4])
    assert (out.drawn, out.tokens) == (3, 1000 + 10 + 40)
    assert out.correct  # a tie 1:1, to the earliest-drawn class ("1")
    out = replay_order(p, FixedRule(n_max=2), [3, 0])
    assert not out.correct  # "2" drawn first wins the tie


def test_replay_draws_without_replacement() -> None:
    for order in orders_for(10, 5, random.Random(0)):
        assert sorted(order) == list(range(10))


def test_fixed_rule_at_all_samples_is_majority() -> None:
    qs = [QuestionSamples(str(i), "7", tuple((a, t, None) for a, t in synthetic(i)))
          for i in range(6)]
    point = adaptive_curve(qs, FixedRule(n_max=40), orders=3)
    assert point.mean_tokens == pytest.approx(
        sum(sum(s[1] for s in q.samples) for q in qs) / len(qs))


def test_online_strategy_samples_in_batches_and_counts_every_token() -> None:
    from ttscale.backends.fake import FakeBackend
    from ttscale.solve import solve

    texts = ["so \\boxed{7}", "it is \\boxed{3} I think", "no idea at all", "\\boxed{7}"]
    fb = FakeBackend(script=lambda _p, i: texts[i % 4])
    r = solve("What?", backend=fb, strategy="adaptive_majority", n=12, seed=5)
    seeds = [p.seed for _, p in fb.calls]
    assert [p.n for _, p in fb.calls] == [2] * len(fb.calls)  # batches of 2
    assert seeds == [5 + 2 * k for k in range(len(fb.calls))]  # no sample drawn twice
    drawn = 2 * len(fb.calls)
    assert len(r.traces) == drawn
    # the texts drawn, in order, are exactly samples 5, 6, ... of the script
    assert [t.text for t in r.traces] == [texts[(5 + i) % 4] for i in range(drawn)]
    words = sum(len(texts[(5 + i) % 4].split()) for i in range(drawn))
    prompt = fb.count_tokens(fb.calls[0][0])
    assert r.usage.completion_tokens == words == sum(t.completion_tokens for t in r.traces)
    assert r.usage.prompt_tokens == prompt * drawn
    assert r.usage.calls == len(fb.calls)
    assert r.answer == "7"
    # the rule saw the same tally a replay would: it stops exactly when the rule first says so
    rule = BudgetedBayesFactorRule(n_max=12)
    from ttscale.strategies.adaptive_majority import tally_of

    assert rule.should_stop(tally_of(r.traces)) or drawn == 12
    assert drawn == 2 or not rule.should_stop(tally_of(r.traces[:-2]))


def test_online_strategy_runs_to_n_on_scattered_answers() -> None:
    from ttscale.backends.fake import FakeBackend
    from ttscale.solve import solve

    fb = FakeBackend(script=lambda _p, i: f"\\boxed{{{i}}}")
    r = solve("q", backend=fb, strategy="adaptive_majority", n=9)
    assert len(r.traces) == 9 and [p.n for _, p in fb.calls] == [2, 2, 2, 2, 1]


def test_online_strategy_refuses_a_bad_rule() -> None:
    from ttscale.strategies.adaptive_majority import AdaptiveMajority

    with pytest.raises(ConfigError, match="unknown stopping rule"):
        AdaptiveMajority(rule="nope")


def test_cli_replay_adaptive_majority(tmp_path: Path) -> None:
    rows = [{"problem_num": q, "gold_answer": "7",
             "all_answers": [[a, t] for a, t in synthetic(q, 16)]} for q in range(5)]
    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])

    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ttscale", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=120)

    assert cli("eval", "import-samples", f, "--out", tmp_path / "run").returncode == 0
    done = cli("eval", "replay", tmp_path / "run", "--strategies", "majority,adaptive_majority",
               "--n", "16", "--rule", "fixed", "--rule", "bayes_factor,threshold=10",
               "--resamples", "4", "--json")
    assert done.returncode == 0, done.stderr
    points = {p["strategy"]: p for p in map(json.loads, done.stdout.splitlines())}
    fixed = points["adaptive_majority[fixed()]"]
    assert fixed["accuracy"] == points["majority"]["accuracy"]
    assert fixed["mean_tokens"] == points["majority"]["mean_tokens"]
    assert points["adaptive_majority[bayes_factor(threshold=10)]"]["mean_tokens"] < fixed[
        "mean_tokens"]
    bad = cli("eval", "replay", tmp_path / "run", "--strategies", "adaptive_majority",
              "--rule", "bayes_factor,speed=1")
    assert bad.returncode != 0 and "has no option 'speed'" in bad.stderr
