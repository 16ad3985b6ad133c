"""Verifier specs NAME[:ARG][,KEY=VALUE]: parsed in one place, checked before anything loads."""

from __future__ import annotations

import pytest

from ttscale.errors import ConfigError
from ttscale.evaluation.harness import EvalConfig
from ttscale.solve import check
from ttscale.verifiers.spec import VerifierSpec, check_verifier
from ttscale.verifiers.steps import split_steps


def test_parse_names_args_and_json_options() -> None:
    spec = VerifierSpec.parse('hf_prm:/models/prm,step_delimiter="\\n",batch_size=4,x=a b')
    assert spec == VerifierSpec("hf_prm", "/models/prm",
                                (("step_delimiter", "\n"), ("batch_size", 4), ("x", "a b")))
    assert VerifierSpec.parse("self_judge") == VerifierSpec("self_judge")
    assert VerifierSpec.parse("llm_judge,pessimistic=true,z=1.5").options == (
        ("pessimistic", True), ("z", 1.5))


@pytest.mark.parametrize("bad, says", [
    ("", "bad verifier"), ("hf_prm:", "bad verifier"), ("llm_judge,k", "bad verifier option"),
    ("llm_judge,2k=1", "bad verifier option"), ("nope", "unknown verifier 'nope'"),
    ("self_judge:extra", "does not take 'extra'"), ("hf_prm", "needs an argument"),
    # option values are checked against the verifier's annotations
    ("llm_judge,z=abc", "verifier llm_judge option z must be a number, got abc"),
    ("llm_judge,z=NaN", "option z must be a finite number, got NaN"),
    ("llm_judge,logprob=0", "option logprob must be true or false, got 0"),
    ("llm_judge,k=2.5", "option k must be a whole number, got 2.5"),
    ("self_judge,reduction=null", "option reduction must be text, got null"),
])
def test_bad_specs_fail_with_one_sentence(bad: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_verifier(bad)


def test_solve_and_eval_check_specs_before_loading() -> None:
    with pytest.raises(ConfigError, match="does not take batch"):
        check("q", strategy="best_of_n", verifier="llm_judge,batch=2", n=2, temperature=0.7,
              max_tokens=8, seed=0)
    # hf_prm with a model is only parsed here: nothing is loaded
    check("q", strategy="best_of_n", verifier="hf_prm:Qwen/Qwen2.5-Math-PRM-7B,batch_size=2",
          n=2, temperature=0.7, max_tokens=8, seed=0)
    assert EvalConfig(strategies=("best_of_n",), verifier="llm_judge,k=2").verifier == \
        "llm_judge,k=2"
    with pytest.raises(ConfigError, match="unknown verifier"):
        EvalConfig(strategies=("best_of_n",), verifier="oracle")


def test_split_steps_is_configurable_and_never_empty() -> None:
    assert split_steps("a\n\n b \n\n\n\nc") == ["a", "b", "c"]
    assert split_steps("Step 1: x\nStep 2: y", "\n") == ["Step 1: x", "Step 2: y"]
    assert split_steps("") == [""]
    with pytest.raises(ConfigError, match="delimiter"):
        split_steps("a", "")
