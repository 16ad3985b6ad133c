"""The curves PNG and the self-contained report page: pure builders, a real run, a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.replay.auto import auto_curve
from ttscale.evaluation.replay.metrics import CurvePoint, curve
from ttscale.evaluation.report import html as report
from ttscale.evaluation.report.html import build_html, question_view, write_report
from ttscale.evaluation.report.outputs import RESULTS, rebuild_report, write_outputs
from ttscale.evaluation.report.plots import allocation_png_bytes, plot_curves, plot_png_bytes
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.importers import ImportedQuestion
from ttscale.evaluation.runs.imports import store_imported
from ttscale.evaluation.runs.records import (
    QuestionRecord,
    TraceRecord,
    load_records,
    question_samples,
)
from ttscale.evaluation.runs.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NASTY = 'what is 1+1? </script><b>x</b> & "q" \\ <!-- <script>alert(1)</script>'


def _point(strategy: str, n: int, acc: float, tokens: float) -> CurvePoint:
    return CurvePoint(strategy, n, acc, acc - 0.1, acc + 0.1, tokens, 12,
                      (("easy", 4, 1.0), ("medium", 4, acc), ("hard", 4, None)))


POINTS = [_point("majority", 1, 0.4, 100.0), _point("majority", 4, 0.6, 400.0),
          _point("weighted_best_of_n", 1, 0.45, 180.0)]


def _record(question: str = NASTY) -> QuestionRecord:
    traces = tuple(TraceRecord(0, i, f"step </script>\n\nThe answer is \\boxed{{{a}}}.", a, 20,
                               10 + i, score=s)
                   for i, (a, s) in enumerate([("2", 0.9), ("3", 0.2), ("2.0", float("nan")),
                                               (None, None)]))
    tree = {"text": "root <i>", "score": 0.5, "children": [
        {"text": "kept", "score": 0.9, "children": []},
        {"text": "cut", "score": 0.1, "pruned": True}]}
    from ttscale.evaluation.runs.store import ResultRow, TreeRow
    from ttscale.types import Usage

    rows = (ResultRow("eval", "q<0>", "majority", 4, 0, "2", True, Usage(80, 46)),)
    return QuestionRecord("q<0>", question, "2", traces, rows, (TreeRow(1, "q<0>", "beam", tree),))


def _embedded(page: str) -> dict[str, Any]:
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert block is not None
    data: dict[str, Any] = json.loads(block.group(1))
    return data


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    out = plot_curves(POINTS, tmp_path / "curves.png", title="test")
    data = out.read_bytes()
    assert out == tmp_path / "curves.png"
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert plot_png_bytes(POINTS[:1]).startswith(PNG_MAGIC)


def test_plot_without_points_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no curve points"):
        plot_curves([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_page_is_self_contained_and_embeds_the_data() -> None:
    page = build_html({"model": "m", "dataset": "d", "split": "test",
                       "sampling": {"temperature": 0.7, "max_tokens": 64}},
                      [_record()], POINTS, plot_png_bytes(POINTS))
    assert "http://" not in page and "https://" not in page
    # every src/href is inline data, nothing to fetch
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert 'id="curves"' in page or "id='curves'" in page
    assert "temperature=0.7, max_tokens=64" in page
    assert "weighted_best_of_n" in page and "40.0%" in page  # the points table
    q = _embedded(page)["questions"][0]
    assert q["question"] == NASTY and q["id"] == "q<0>"
    assert [t["correct"] for t in q["traces"]] == [True, False, True, None]
    assert q["traces"][2]["score"] is None  # NaN cannot go through JSON.parse
    assert q["trees"][0]["tree"]["children"][1]["pruned"] is True
    assert q["results"][0]["tokens"] == 126


def test_question_text_cannot_break_out_of_the_script_block() -> None:
    page = build_html({}, [_record()], [], None)
    assert "</script><b>x</b>" not in page and "<!--" not in page
    # the page's own three script blocks are the only ones closed
    assert page.count("</script>") == 3
    assert "no curves yet" in page and "<img" not in page


def test_question_view_groups_answers_and_checks_each_string_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    from ttscale.answers import equivalent as real

    def counted(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(report, "equivalent", counted)
    traces = tuple(TraceRecord(0, i, "", a, 0, 5) for i, a in enumerate(["3", "2", "3", "3"]))
    v = question_view(QuestionRecord("q", "q", "2", traces))
    assert sorted(calls) == [("2", "2"), ("2", "3")]
    assert [(c["answers"], c["votes"], c["correct"]) for c in v["classes"]] == [
        (["3"], 3, False), (["2"], 1, True)]
    assert v["majority_correct"] is False and v["pass_rate"] == 0.25


def _eval_run(run_dir: Path) -> list[CurvePoint]:
    """A real run directory, generated by the harness with a scripted backend."""
    fake = FakeBackend(script=lambda _p, i: f"step\n\nThe answer is \\boxed{{{i % 3}}}.",
                       yes_logprob=-0.2)
    cfg = EvalConfig(strategies=("majority", "weighted_best_of_n"), ns=(1, 2, 4))
    settings = run_settings(cfg, model="fake", model_sha256="fake", dataset="x", split="test")
    problems = [Problem("q0", NASTY, "1"), Problem("q1", "2-2?", "0"),
                Problem("q2", "5-3?", "2")]
    store = Store.open(run_dir, settings)
    try:
        Harness(cfg, CachedBackend(fake, store, "fake"), store).run(problems)
    finally:
        store.close()
    _settings, records = load_records(run_dir)
    samples = question_samples(records)
    return [p for s in cfg.strategies for p in curve(samples, cfg.ns, s, resamples=20)]


def test_report_of_a_harness_run(tmp_path: Path) -> None:
    points = _eval_run(tmp_path)
    assert len(points) == 6
    path = write_report(tmp_path, points)
    assert path == tmp_path / "report.html"
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)
    page = path.read_text(encoding="utf-8")
    assert "model sha256" in page and "https://" not in page
    qs = {q["id"]: q for q in _embedded(page)["questions"]}
    assert list(qs) == ["q0", "q1", "q2"]
    q0 = qs["q0"]  # samples 0..3 answer 0, 1, 2, 0: majority 0 is wrong, gold 1 in a quarter
    assert q0["question"] == NASTY
    assert [t["answer"] for t in q0["traces"]] == ["0", "1", "2", "0"]
    assert [(c["answers"], c["votes"], c["correct"]) for c in q0["classes"]] == [
        (["0"], 2, False), (["1"], 1, True), (["2"], 1, False)]
    assert q0["majority_correct"] is False and q0["pass_rate"] == 0.25
    assert all(t["score"] is not None and t["verifier_tokens"] > 0 for t in q0["traces"])
    assert all(t["text"].startswith("step") and t["prompt_tokens"] > 0 for t in q0["traces"])
    assert {(r["strategy"], r["n"]) for r in q0["results"]} == {
        (s, n) for s in ("majority", "weighted_best_of_n") for n in (1, 2, 4)}
    assert qs["q1"]["majority_correct"] is True  # q1's gold 0 is the majority


def _with_auto(run_dir: Path) -> list[CurvePoint]:
    """The eval run's curves and ``auto`` replayed on it, cross-fitted over its questions."""
    points = _eval_run(run_dir)
    _settings, records = load_records(run_dir)
    return points + auto_curve(records, [1, 2, 4], folds=3, resamples=4)


def test_report_draws_auto_and_where_its_tokens_went(tmp_path: Path) -> None:
    points = _with_auto(tmp_path)
    auto = [p for p in points if p.strategy == "auto"]
    assert [p.n for p in auto] == [1, 2, 4]
    # three predicted-difficulty bins, every question in one of them
    assert all(len(p.predicted_tokens) == 3 and sum(p.predicted_share) == pytest.approx(1.0)
               for p in auto)
    assert allocation_png_bytes(points[:-3]) is None  # no auto, no allocation plot
    page = write_report(tmp_path, points).read_text(encoding="utf-8")
    assert (tmp_path / "allocation.png").read_bytes().startswith(PNG_MAGIC)
    assert "id='allocation'" in page and "Where auto spent its tokens" in page
    assert "<td>auto</td>" in page  # a row of its own in the points table
    # results.jsonl keeps the allocation: the page rebuilt from it alone shows it again
    write_outputs(tmp_path, points, resamples=20, seed=0, report=False)
    (tmp_path / "allocation.png").unlink()
    assert '"predicted_share"' in (tmp_path / RESULTS).read_text(encoding="utf-8")
    assert "id='allocation'" in rebuild_report(tmp_path).read_text(encoding="utf-8")
    assert (tmp_path / "allocation.png").is_file()


def test_a_report_without_auto_has_no_allocation_plot(tmp_path: Path) -> None:
    page = write_report(tmp_path, _eval_run(tmp_path)).read_text(encoding="utf-8")
    assert "id='allocation'" not in page and not (tmp_path / "allocation.png").exists()


def _import_run(run_dir: Path) -> None:
    questions = [ImportedQuestion("a", "7", (("7", 10), ("8", 12), (None, 3))),
                 ImportedQuestion("b", "1/2", (("0.5", 4),))]
    store_imported(run_dir, questions, Path("model.jsonl"), "boinf")


def test_report_of_an_import_run_without_points(tmp_path: Path) -> None:
    _import_run(tmp_path)
    page = write_report(tmp_path, []).read_text(encoding="utf-8")
    assert not (tmp_path / "curves.png").exists()
    assert "no curves yet" in page and "import:model" in page
    qs = _embedded(page)["questions"]
    assert [q["question"] for q in qs] == ["a", "b"]  # an import knows only the ids
    assert [t["correct"] for t in qs[0]["traces"]] == [True, False, None]
    assert qs[0]["traces"][2]["text"] == "" and qs[0]["traces"][0]["prompt_tokens"] == 0
    assert qs[1]["majority_correct"] is True


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
    if found is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh (it installs Debian's "
                    "chromium package) to open report.html in a headless browser")
    return found


def _dump_dom(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran (image loads included), and the browser's log."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


@pytest.mark.parametrize("kind", ["eval", "import", "auto"])
def test_report_renders_in_a_real_browser(tmp_path: Path, kind: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if kind in ("eval", "auto"):
        page = write_report(run_dir, _eval_run(run_dir) if kind == "eval" else
                            _with_auto(run_dir))
        first = NASTY
    else:
        _import_run(run_dir)
        page = write_report(run_dir, [])
        first = "a"
    dom, log = _dump_dom(page, tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    # any console line (an uncaught error, a refused resource) means the page misbehaved
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [] and attrs.get("data-errors") == "0", console
    assert attrs.get("data-ready") == "1"
    assert "data-errors" not in dom[:dom.index("<head")]  # the <html> counter of late errors
    assert attrs.get("data-img-ok") == (None if kind == "import" else "1")
    assert attrs.get("data-alloc-ok") == ("1" if kind == "auto" else None)
    shown = re.search(r'<pre class="question" id="question-text">(.*?)</pre>', dom, re.S)
    assert shown is not None and html.unescape(shown.group(1)) == first
    if kind != "import":  # the question's markup stayed text
        assert "&lt;b&gt;x&lt;/b&gt;" in shown.group(1)
    assert dom.count('<li data-i="') == (2 if kind == "import" else 3)
