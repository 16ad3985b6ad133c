"""Which verifier guided a run's rows: a resumed run refuses another head or another
verifier behind its guided rows, and goes on under another name for the same one."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import PROBLEMS, open_run, questions_file, run_ttscale, script

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.harness import EvalConfig


def heads_named(monkeypatch: pytest.MonkeyPatch, first: str) -> list[str]:
    """Every verifier the eval builds says it is the head named by the list's one item,
    which a test changes to stand for another head behind the same name."""
    from ttscale.evaluation import harness
    from ttscale.verifiers import spec

    head = [first]

    def with_head(name: object, backend: object) -> object:
        made = spec.build_verifier(name, backend)  # type: ignore[arg-type]
        made.identity = head[0]  # type: ignore[attr-defined]
        return made

    monkeypatch.setattr(harness, "build_verifier", with_head)
    return head


def test_a_resumed_run_refuses_another_verifier_behind_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores are kept per verifier name and guided rows per (strategy, n, seed): a resumed
    run whose verifier name now means another head, or whose guided strategies ask for
    another verifier, would silently keep the first one's rows."""
    from ttscale.evaluation import harness
    from ttscale.verifiers import spec

    heads = iter(["SPRM head a (SHA-256 1)", "SPRM head a (SHA-256 1)",
                  "SPRM head b (SHA-256 2)"])

    def with_head(name: object, backend: object) -> object:
        made = spec.build_verifier(name, backend)  # type: ignore[arg-type]
        made.identity = next(heads)  # type: ignore[attr-defined]
        return made

    monkeypatch.setattr(harness, "build_verifier", with_head)
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    cfg = EvalConfig(strategies=("majority", "beam:width=2"), ns=(2,), verifier="self_judge")
    store, h = open_run(tmp_path, cfg, fake)
    h.run(PROBLEMS[:1])
    store.close()
    store, h = open_run(tmp_path, cfg, fake)  # the same head: resumes, nothing redone
    calls = len(fake.calls)
    h.run(PROBLEMS[:1])
    assert len(fake.calls) == calls
    store.close()
    with pytest.raises(ConfigError, match=r"as verifier self_judge came from SPRM head a "
                       r"\(SHA-256 1\), but self_judge now means SPRM head b"):
        open_run(tmp_path, cfg, fake)
    monkeypatch.setattr(harness, "build_verifier", spec.build_verifier)
    judge = EvalConfig(strategies=("beam:width=2",), ns=(2,), verifier="llm_judge")
    with pytest.raises(ConfigError, match="guided strategies stored in .* ran with --verifier "
                       "self_judge, not llm_judge: pass --verifier self_judge to go on"):
        open_run(tmp_path, judge, fake)
    # scores of another verifier on the same samples are welcome: nothing guided asks for it
    open_run(tmp_path, EvalConfig(strategies=("best_of_n",), ns=(2,), verifier="llm_judge"),
             fake)[0].close()



def test_eval_cli_says_which_verifier_a_run_was_guided_by(tmp_path: Path) -> None:
    data, out = questions_file(tmp_path, 2), tmp_path / "run"
    args: list[str | Path] = ["eval", "--dataset", data, "--backend", "fake", "--n", "2",
                              "--out", out, "--concurrency", "1", "--strategies", "beam:width=2"]
    first = run_ttscale(*args, "--verifier", "self_judge")
    assert first.returncode == 0, first.stderr
    other = run_ttscale(*args, "--verifier", "llm_judge")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "ran with --verifier self_judge, not llm_judge" in " ".join(other.stderr.split())


def test_guided_rows_keep_their_verifier_when_its_name_is_rebound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sprm eval --store-as rebinds a name to another head; guided rows made with the old
    head must not be resumed as if the new one had guided them."""
    head = heads_named(monkeypatch, "head a")
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    cfg = EvalConfig(strategies=("beam:width=2",), ns=(2,), verifier="self_judge")
    store, h = open_run(tmp_path, cfg, fake)
    h.run(PROBLEMS[:1])
    store.bind("verifier:self_judge", "head b", replace=True)  # what sprm eval does
    store.close()
    head[0] = "head b"
    with pytest.raises(ConfigError, match="ran with self_judge as head a, but self_judge now "
                       "means head b"):
        open_run(tmp_path, cfg, fake)


def test_guided_rows_go_on_under_another_name_for_the_same_verifier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A head first given as ``sprm`` and later by its path (``sprm`` moved on to a newer
    head) is the same verifier: its guided rows resume; another head under that name is not."""
    head = heads_named(monkeypatch, "head a")
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    first = EvalConfig(strategies=("beam:width=2",), ns=(2,), verifier="self_judge")
    store, h = open_run(tmp_path, first, fake)
    h.run(PROBLEMS[:1])
    store.close()
    # the same head by another name: it resumes, and the first name stays the record
    again = EvalConfig(strategies=("beam:width=2",), ns=(2, 4), verifier="llm_judge")
    store, h = open_run(tmp_path, again, fake)
    h.run(PROBLEMS[:1])
    assert store.bound("guided_by") == "self_judge"
    assert {(r.strategy, r.n) for r in store.results()} == {("beam:width=2", 2),
                                                           ("beam:width=2", 4)}
    store.close()
    head[0] = "head b"
    with pytest.raises(ConfigError, match="ran with --verifier self_judge, not "
                       "self_judge,reduction=min"):
        open_run(tmp_path, EvalConfig(strategies=("beam:width=2",), ns=(2,),
                                      verifier="self_judge,reduction=min"), fake)
