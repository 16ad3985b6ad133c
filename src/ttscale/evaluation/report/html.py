"""``report.html``: one self-contained page per run: settings, curves, and every question.

The page loads nothing from anywhere (no CDN, no fonts): CSS and JS are inline, the curves PNG
(and, when ``auto`` was replayed, the PNG of where its tokens went) is a ``data:`` URI, and
the run's questions are a JSON block that plain JS renders with ``textContent`` only, so
question and trace text can hold any markup without being run. After rendering, ``<body>``
carries ``data-ready="1"``, ``data-errors`` (script errors seen) and, once each image has
loaded, ``data-img-ok="1"`` / ``data-alloc-ok="1"``: a headless browser test reads these.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.answers import equivalent, group_answers
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.runs.records import QuestionRecord, load_records

_SETTINGS_KEYS: tuple[str, ...] = ("model", "dataset", "split", "source", "format")
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "max_tokens")


def _finite(value: Any) -> Any:
    """JSON without NaN or infinities (JSON.parse rejects them): those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def question_view(record: QuestionRecord) -> dict[str, Any]:
    """What the page shows of one question: answer classes with votes and summed scores,
    result rows, traces and trees. Equivalence is decided once per distinct answer string.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> ts = tuple(TraceRecord(0, i, f"so {a}", a, 5, 10, score=0.5)
        ...            for i, a in enumerate(["1/2", "3", "0.5"]))
        >>> v = question_view(QuestionRecord("q", "half?", "0.5", ts))
        >>> [(c["answers"], c["votes"], c["score"], c["correct"]) for c in v["classes"]]
        [(['1/2', '0.5'], 2, 1.0, True), (['3'], 1, 0.5, False)]
        >>> v["majority_correct"], round(v["pass_rate"], 3)
        (True, 0.667)
    """
    distinct = list(dict.fromkeys(t.answer for t in record.traces if t.answer is not None))
    correct_of = {a: equivalent(record.gold, a) for a in distinct}
    classes: list[dict[str, Any]] = []
    for group in group_answers(distinct):
        members = [distinct[i] for i in group]
        inside = [t for t in record.traces if t.answer in members]
        scored = [t.score for t in inside if t.score is not None]
        classes.append({"answers": members, "votes": len(inside),
                        "score": sum(scored) if scored else None,
                        "correct": correct_of[members[0]]})
    # ties go to the class seen first, as in the vote itself
    top = max(classes, key=lambda c: c["votes"]) if classes else None
    traces = [{"seed": t.seed, "index": t.index, "answer": t.answer,
               "correct": None if t.answer is None else correct_of[t.answer],
               "tokens": t.tokens, "prompt_tokens": t.prompt_tokens,
               "completion_tokens": t.completion_tokens, "finish": t.finish_reason,
               "score": t.score, "verifier_tokens": t.verifier_tokens, "text": t.text}
              for t in record.traces]
    right = sum(bool(t["correct"]) for t in traces)
    view: dict[str, Any] = _finite({
        "id": record.id, "question": record.question, "gold": record.gold,
        "meta": record.meta, "classes": classes, "traces": traces,
        "majority_correct": None if top is None else top["correct"],
        "pass_rate": right / len(traces) if traces else None,
        "results": [{"strategy": r.strategy, "n": r.n, "seed": r.seed, "answer": r.answer,
                     "correct": r.correct, "tokens": r.usage.total_tokens}
                    for r in record.results],
        "trees": [{"strategy": t.strategy, "tree": t.tree} for t in record.trees]})
    return view


def _json_for_script(value: Any) -> str:
    # <, > and & as \u escapes: no "</script>" or "<!--" can end or confuse the script block,
    # and JSON.parse reads them back unchanged.
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _settings_rows(settings: dict[str, Any],
                   records: Sequence[QuestionRecord]) -> list[tuple[str, str]]:
    rows = [(k, str(settings[k])) for k in _SETTINGS_KEYS if k in settings]
    if "model_sha256" in settings:
        rows.insert(1, ("model sha256", str(settings["model_sha256"])[:16]))
    sampling = settings.get("sampling")
    if isinstance(sampling, dict):
        rows.append(("sampling", ", ".join(f"{k}={sampling[k]}" for k in _SAMPLING_KEYS
                                           if k in sampling)))
    rows.append(("run kind", str(settings.get("kind", "?"))))
    rows.append(("questions", str(len(records))))
    rows.append(("traces", str(sum(len(r.traces) for r in records))))
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _points_table(points: Sequence[CurvePoint]) -> str:
    head = ("strategy", "n", "accuracy", "95% CI", "tokens / question", "FLOPs / question",
            "s / question", "easy", "medium", "hard")
    out = ["<table id='points'><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead>"]
    for p in points:
        cells = [html.escape(p.strategy), str(p.n), _pct(p.accuracy),
                 f"{_pct(max(p.ci_low, 0.0))} – {_pct(min(p.ci_high, 1.0))}",
                 f"{p.mean_tokens:,.0f}",
                 "–" if p.mean_flops is None else f"{p.mean_flops:.2e}",
                 "–" if p.mean_seconds is None else f"{p.mean_seconds:.1f}"]
        tokens = list(p.bin_tokens) or [None] * len(p.bins)
        for (_name, count, acc), tok in zip(p.bins, tokens, strict=False):
            extra = "" if tok is None else f", {tok:,.0f} tok"
            cells.append(f"{_pct(acc)} <small>({count}{extra})</small>" if count else "–")
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def build_html(settings: dict[str, Any], records: Sequence[QuestionRecord],
               points: Sequence[CurvePoint], png: bytes | None,
               allocation: bytes | None = None) -> str:
    """The whole self-contained page as a string (pure: reads and writes nothing);
    ``allocation`` is the PNG of where ``auto`` spent its tokens, shown under the curves.

    Example:
        >>> page = build_html({"model": "m"}, [QuestionRecord("q1", "1+1?", "2", ())], [], None)
        >>> "no curves yet" in page and '"id":"q1"' in page and "https://" not in page
        True
    """
    title = " · ".join(str(settings[k]) for k in ("model", "dataset", "split") if k in settings)
    settings_table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                             for k, v in _settings_rows(settings, records))
    if png is not None:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        curves = f"<img id='curves' alt='accuracy against tokens' src='{uri}'>"
    else:
        curves = "<p id='no-curves'>no curves yet: replay the run with ttscale eval</p>"
    if allocation is not None:
        uri = "data:image/png;base64," + base64.b64encode(allocation).decode("ascii")
        curves += ("<h3>Where auto spent its tokens</h3><p><small>mean tokens a question in "
                   "each bin of the difficulty the plan predicted after the probe (each "
                   "question played by a plan fitted without it)</small></p>"
                   f"<img id='allocation' alt='auto: tokens by predicted difficulty' "
                   f"src='{uri}'>")
    table = _points_table(points) if points else ""
    # the settings too, so the samples can be rebuilt into a run from the page alone
    data = _json_for_script({"settings": settings,
                             "questions": [question_view(r) for r in records]})
    parts = {"title": html.escape(title or "run"), "settings": settings_table,
             "curves": curves, "points": table, "data": data}
    # one pass, so a value that happens to contain "{data}" is left as it is
    return re.sub(r"\{(title|settings|curves|points|data)\}", lambda m: parts[m[1]], _PAGE)


def write_report(run_dir: Path | str, points: Sequence[CurvePoint], *,
                 loaded: tuple[dict[str, Any], list[QuestionRecord]] | None = None) -> Path:
    """Write ``curves.png`` (when there are points), ``allocation.png`` (when ``auto`` is
    among them) and ``report.html`` into the run directory; returns the path of the page.
    ``loaded``: the run's records without log-probabilities, if already read.

    Example:
        >>> write_report("/nonexistent", [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: /nonexistent holds no run store (run.sqlite): ...
    """
    run_dir = Path(run_dir)
    # the page shows no log-probabilities
    settings, records = loaded or load_records(run_dir, logprobs=False)
    png = allocation = None
    if points:
        from ttscale.evaluation.report.plots import allocation_png_bytes, plot_png_bytes

        title = " · ".join(str(settings[k]) for k in ("model", "dataset") if k in settings)
        png = plot_png_bytes(points, title or "accuracy against compute")
        (run_dir / "curves.png").write_bytes(png)
        allocation = allocation_png_bytes(points)
        if allocation is not None:
            (run_dir / "allocation.png").write_bytes(allocation)
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")  # a reader never sees half a page
    tmp.write_text(build_html(settings, records, points, png, allocation), encoding="utf-8")
    tmp.replace(path)
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ttscale report: {title}</title>
<script>window.__errors = 0; window.addEventListener("error", function () {
  window.__errors++; document.documentElement.setAttribute("data-errors", window.__errors); });
</script>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;padding:0 1.5em 3em;max-width:1400px;
color:#1d2330;background:#fafafa}h1{font-size:1.5em;margin:.8em 0 .3em}h2{font-size:1.2em;
margin:1.4em 0 .5em;border-bottom:1px solid #ccd}h3{font-size:1.05em;margin:1.1em 0 .4em}
table{border-collapse:collapse;margin:.3em 0}th,td{padding:.2em .7em;text-align:left;
border-bottom:1px solid #e2e4ea;vertical-align:top}th{background:#eef0f5;font-weight:600}
#settings th{background:none;color:#556}#curves,#allocation{max-width:100%;
border:1px solid #dde}
.browser{display:grid;grid-template-columns:minmax(180px,260px) 1fr;gap:1.2em}
aside input{width:100%;box-sizing:border-box;margin-bottom:.4em;padding:.3em}
#qlist{list-style:none;padding:0;margin:0;max-height:80vh;overflow:auto;border:1px solid #dde}
#qlist li{padding:.25em .5em;cursor:pointer;display:flex;gap:.5em;border-bottom:1px solid #eef}
#qlist li:hover{background:#eef3ff}#qlist li.sel{background:#d6e4ff}.qid{flex:1;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.rate,small,.k{color:#667}
.ok{color:#11803a;font-weight:600}.bad{color:#c02b2b;font-weight:600}.none{color:#889}
pre{white-space:pre-wrap;word-break:break-word;margin:.3em 0;background:#f0f1f5;padding:.5em;
border-radius:4px}.question{background:#fff;border:1px solid #dde}summary{cursor:pointer}
.tree ul{margin:0;padding-left:1.3em;border-left:1px dashed #bbc}.k{margin-right:.2em}
.f{margin-right:.9em}.f.text{display:block;white-space:pre-wrap}.pruned{opacity:.45}
nav button,.gap{margin-right:1.2em}
</style></head>
<body>
<h1>ttscale report: {title}</h1>
<table id="settings">{settings}</table>
<h2>Accuracy against compute</h2>
{curves}
{points}
<h2>Questions</h2>
<div class="browser"><aside><input id="filter" type="search" placeholder="filter by id or text">
<ul id="qlist"></ul></aside><main id="detail"></main></div>
<script type="application/json" id="data">{data}</script>
<script>
"use strict";
(function () {
  const Q = JSON.parse(document.getElementById("data").textContent).questions;
  const body = document.body, list = document.getElementById("qlist");
  const detail = document.getElementById("detail");
  function el(tag, cls, text, parent) {  // text always goes in as text, never as markup
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }
  function mark(ok) {
    return el("span", ok === true ? "ok" : ok === false ? "bad" : "none",
              ok === true ? "✓" : ok === false ? "✗" : "–");
  }
  function num(x) { return x === null || x === undefined ? "–" : String(+x.toFixed(4)); }
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(100 * x) + "%"; }
  function table(head, rows, parent) {
    const t = el("table", null, null, parent), hr = el("tr", null, null, el("thead", null,
      null, t)), tb = el("tbody", null, null, t);
    head.forEach(function (h) { el("th", null, h, hr); });
    rows.forEach(function (r) {
      const tr = el("tr", null, null, tb);
      r.forEach(function (c) {
        const td = el("td", null, null, tr);
        if (c instanceof Node) td.appendChild(c); else td.textContent = c === null ? "–" : c;
      });
    });
  }
  function treeNode(node, parent) {  // any JSON: dict fields shown, "children" recursed
    const li = el("li", null, null, parent);
    if (node === null || typeof node !== "object") { li.textContent = String(node); return; }
    let kids = Array.isArray(node) ? node : null;
    if (!kids) {
      if (node.pruned) li.className = "pruned";
      Object.keys(node).forEach(function (k) {
        const v = node[k];
        if (k === "children" && Array.isArray(v)) { kids = v; return; }
        const f = el("span", k === "text" ? "f text" : "f", null, li);
        el("span", "k", k + ":", f);
        f.appendChild(document.createTextNode(v !== null && typeof v === "object" ?
          JSON.stringify(v) : typeof v === "number" ? num(v) : String(v)));
      });
    }
    if (kids && kids.length) {
      const ul = el("ul", null, null, li);
      kids.forEach(function (c) { treeNode(c, ul); });
    }
  }
  function show(i) {
    const q = Q[i];
    Array.prototype.forEach.call(list.children, function (li) {
      li.classList.toggle("sel", +li.dataset.i === i);
    });
    detail.textContent = "";
    const nav = el("nav", null, null, detail);
    const prev = el("button", null, "◀ previous", nav), next = el("button", null, "next ▶", nav);
    prev.disabled = i === 0; next.disabled = i === Q.length - 1;
    prev.onclick = function () { show(i - 1); }; next.onclick = function () { show(i + 1); };
    el("h3", null, q.id, detail);
    el("pre", "question", q.question, detail).id = "question-text";
    const gold = el("p", null, "gold answer: ", detail);
    el("code", "gap", q.gold, gold).id = "gold";
    el("span", null, "pass rate: " + pct(q.pass_rate), gold);
    el("h3", null, "Answer classes", detail);
    if (!q.classes.length) el("p", "none", "no answers extracted", detail);
    else table(["answer", "votes", "summed score", "correct"], q.classes.map(function (c) {
      return [c.answers.join("  =  "), c.votes, num(c.score), mark(c.correct)];
    }), detail);
    if (q.results.length) {
      el("h3", null, "Results", detail);
      table(["strategy", "n", "seed", "answer", "correct", "tokens"], q.results.map(
        function (r) { return [r.strategy, r.n, r.seed, r.answer, mark(r.correct), r.tokens]; }),
        detail);
    }
    el("h3", null, "Traces (" + q.traces.length + ")", detail);
    table(["seed/index", "answer", "correct", "tokens (prompt + completion)", "score",
           "finish", "text"], q.traces.map(function (t) {
      let text = el("span", "none", "no text stored");
      if (t.text) {
        text = el("details");
        el("summary", null, t.text.length + " character" +
          (t.text.length === 1 ? "" : "s"), text);
        el("pre", null, t.text, text);
      }
      return [t.seed + "/" + t.index, t.answer, mark(t.correct),
              t.prompt_tokens + " + " + t.completion_tokens, num(t.score), t.finish, text];
    }), detail);
    q.trees.forEach(function (tr, k) {
      el("h3", null, "Search tree " + (k + 1) + ": " + tr.strategy, detail);
      treeNode(tr.tree, el("ul", "tree", null, detail));
    });
  }
  Q.forEach(function (q, i) {
    const li = el("li", null, null, list);
    li.dataset.i = i;
    li.title = q.question;
    li.appendChild(mark(q.majority_correct));
    el("span", "qid", q.id, li);
    el("span", "rate", pct(q.pass_rate), li);
    li.onclick = function () { show(i); };
  });
  document.getElementById("filter").oninput = function (e) {
    const needle = e.target.value.toLowerCase();
    Array.prototype.forEach.call(list.children, function (li) {
      const q = Q[+li.dataset.i];
      li.hidden = (q.id + " " + q.question).toLowerCase().indexOf(needle) < 0;
    });
  };
  if (Q.length) show(0); else el("p", "none", "no questions stored", detail);
  function loaded(id, flag) {  // data-<flag>="1" once the image decoded
    const img = document.getElementById(id);
    function ok() { if (img.naturalWidth > 0) body.dataset[flag] = "1"; }
    if (img) { if (img.complete) ok(); else img.addEventListener("load", ok); }
  }
  loaded("curves", "imgOk");
  loaded("allocation", "allocOk");
  body.dataset.errors = String(window.__errors);
  body.dataset.ready = "1";
})();
</script></body></html>
"""
