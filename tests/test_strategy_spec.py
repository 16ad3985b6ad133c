"""Strategy specs NAME[:KEY=VALUE,...]: parsing, lists, validation against any strategy
dataclass, and their use by solve, the CLI, eval (with stored search trees) and the server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import ttscale
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.records import load_records
from ttscale.evaluation.runs.store import Store
from ttscale.registry import strategies
from ttscale.server.service import Settings, parse_spec, plan
from ttscale.solve import solve
from ttscale.strategies.base import Env, State, result
from ttscale.strategies.spec import (
    StrategySpec,
    check_strategy,
    make_strategy,
    split_specs,
)
from ttscale.types import Result

SRC = str(Path(ttscale.__file__).resolve().parents[1])


@dataclass(frozen=True, kw_only=True)
class Toy:
    """A strategy of another family: a plain frozen dataclass with keyword fields."""

    rounds: int = 2
    temperature_boost: float = 0.5
    cue: str = "Wait"
    forced: bool = False
    name: str = "toy"
    needs_verifier: bool = False

    def step(self, state: State, env: Env) -> State:
        return replace(state, done=True)

    def finish(self, state: State, env: Env) -> Result:
        return result(state, env, self.name, [], f"{self.rounds}:{self.cue}:{self.forced}")


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(strategies._targets, "toy", f"{__name__}:Toy")


def test_parse_reads_json_values_and_prints_back() -> None:
    spec = StrategySpec.parse("beam:width=4, max_steps=10,delimiter=\"\\n\",aggregate=best")
    assert spec.options == (("width", 4), ("max_steps", 10), ("delimiter", "\n"),
                            ("aggregate", "best"))
    assert StrategySpec.parse(str(spec)) == spec


@pytest.mark.parametrize(("text", "message"), [
    ("", "bad strategy ''"), ("beam:", "bad strategy 'beam:'"),
    ("beam:width", "bad strategy option 'width'"), ("beam:width=2,width=4", "given twice"),
    ("beam:n=4", "set the number of samples with -n"),
    ("beam:colour=red", "strategy beam has no option colour: its options are width, "
                        "max_steps, delimiter, aggregate"),
    ("beam:width=two", "strategy beam option width must be a whole number, got two"),
    ("beam:width=2.5", "option width must be a whole number, got 2.5"),
    ("greedy:width=2", "strategy greedy takes no options, got width"),
    ("nope:x=1", "unknown strategy 'nope'"),
    # an option that may also be None is checked as its other type
    ("rsa:k=three", "strategy rsa option k must be a whole number, got three"),
    ("auto:budget=lots", "strategy auto option budget must be a number, got lots"),
    ("auto:budget=NaN", "strategy auto option budget must be a finite number, got NaN"),
    ("auto:budget=1e400", "option budget must be a finite number, got Infinity"),
])
def test_bad_specs_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        check_strategy(text)
    assert "\n" not in str(err.value)


def test_an_option_that_may_be_none_takes_none_or_its_type() -> None:
    assert check_strategy("rsa:k=null").options == (("k", None),)
    assert check_strategy("auto:budget=2000").options == (("budget", 2000),)


def test_lists_attach_options_to_the_strategy_before() -> None:
    assert split_specs("majority,beam:width=4,max_steps=8,dvts:width=4") == [
        "majority", "beam:width=4,max_steps=8", "dvts:width=4"]
    assert split_specs(" majority , greedy ,") == ["majority", "greedy"]
    with pytest.raises(ConfigError, match="comes before any strategy"):
        split_specs("width=4,beam")


def test_any_frozen_dataclass_gets_parsing_and_checks(toy: None) -> None:
    s = make_strategy("toy:rounds=3,cue=Hmm,forced=true,temperature_boost=1", 8)
    assert (s.rounds, s.cue, s.forced, s.temperature_boost) == (3, "Hmm", True, 1)
    with pytest.raises(ConfigError, match="its options are rounds, temperature_boost, cue, "
                                          "forced"):
        check_strategy("toy:round=3")
    with pytest.raises(ConfigError, match="option forced must be true or false, got 1"):
        check_strategy("toy:forced=1")
    assert solve("?", backend=FakeBackend(), strategy="toy:rounds=5").answer == "5:Wait:False"


def test_cli_solve_takes_a_spec_and_refuses_a_bad_one(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC, TTSCALE_CACHE=str(tmp_path))
    run = [sys.executable, "-m", "ttscale", "solve", "What is 2+2?", "--backend", "fake",
           "-n", "4", "--verifier", "self_judge", "--json", "--strategy"]
    ok = subprocess.run([*run, "beam:width=2,max_steps=2"], env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["strategy"] == "beam" and out["tree"]["width"] == 2
    assert out["tree"]["children"][0]["text"] == "The answer is 42."
    bad = subprocess.run([*run, "beam:width=3"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("error: beam width 3 does not divide n 4: use n = a "
                                  "multiple of the width (e.g. -n 6) or a width that divides "
                                  "n (e.g. width=2)")


def step_script(prompt: object, i: int) -> str:
    prefill = getattr(prompt, "prefill", "")
    if not prefill:
        return f"Step {i}.\n\nrest"
    return prefill + f"The answer is \\boxed{{{i % 2 + 1}}}."


def test_eval_runs_searches_and_stores_their_trees(tmp_path: Path) -> None:
    cfg = EvalConfig(strategies=("majority", "beam:width=2,max_steps=2", "dvts:width=2"),
                     ns=(2, 4))
    assert cfg.verifier == "self_judge"  # a search needs one: the default is chosen
    assert cfg.solved == ("beam:width=2,max_steps=2", "dvts:width=2")
    settings = run_settings(cfg, model="fake", model_sha256="f" * 64, dataset="t", split="test")
    fb = FakeBackend(script=step_script, yes_logprob=-0.2)
    with Store.open(tmp_path, settings) as store:
        Harness(cfg, CachedBackend(fb, store, "f" * 64), store).run(
            [Problem("q0", "What is 1+1?", "2")])
        rows = {(r.strategy, r.n) for r in store.results()}
        assert {("beam:width=2,max_steps=2", 4), ("dvts:width=2", 2)} <= rows
        labels = [t.strategy for t in store.trees()]
    assert labels == ["beam:width=2,max_steps=2, n=2, seed=0", "beam:width=2,max_steps=2, n=4, "
                      "seed=0", "dvts:width=2, n=2, seed=0", "dvts:width=2, n=4, seed=0"]
    _settings, records = load_records(tmp_path)
    tree = records[0].trees[1].tree
    assert len(tree["children"]) == 4 and tree["children"][0]["text"] == "Step 0."
    with pytest.raises(ConfigError, match="beam width 2 is larger than n 1"):
        EvalConfig(strategies=("beam:width=2",), ns=(1, 2))


def test_server_plans_take_specs() -> None:
    assert parse_spec("beam@8:width=4") == ("beam:width=4", 8)
    p = plan(question="2+2?", model="beam@8:width=4/fake", served=["fake"],
             settings=Settings())
    assert (p.strategy, p.n, p.verifier, p.model) == ("beam:width=4", 8, "self_judge",
                                                      "beam@8:width=4/fake")
    p = plan(question="2+2?", model="fake", served=["fake"], settings=Settings(),
             strategy="dvts:width=2", n=4)
    assert p.model == "dvts@4:width=2/fake"
    with pytest.raises(ConfigError, match="has no option colour"):
        plan(question="2+2?", model="beam@4:colour=1", served=["fake"], settings=Settings())
    with pytest.raises(ConfigError, match="has no option x"):
        Settings(default_strategy="beam@4:x=1")


def test_the_cache_keeps_whether_a_stop_string_ended_a_sample(tmp_path: Path) -> None:
    from ttscale.answers import solve_prompt
    from ttscale.params import SamplingParams

    fb = FakeBackend(script=lambda _p, i: "one\n\ntwo" if i % 2 else "all in one")
    params = SamplingParams(n=4, stop=("\n\n",))
    with Store.open(tmp_path, {"kind": "t"}) as store:
        cached = CachedBackend(fb, store, "f" * 64)
        fresh = cached.generate([solve_prompt("q")], params).generations[0]
        again = cached.generate([solve_prompt("q")], params).generations[0]
    assert [g.hit_stop for g in fresh] == [False, True, False, True]
    assert [g.hit_stop for g in again] == [g.hit_stop for g in fresh]
    assert len(fb.calls) == 1  # the second call was read back
