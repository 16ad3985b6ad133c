"""Side by side with the peers: ttscale, optillm and its_hub on one llama.cpp server, the
same questions and one token meter.

    .venv/bin/python bench/peers/compare_peers.py --model qwen2.5-coder-1.5b \\
        --dataset gsm8k --ids 0-29                   # resumable: rerun to go on
    .venv/bin/python bench/peers/compare_peers.py --model smollm2-135m --ids 0-1 \\
        --max-tokens 256                             # a quick end-to-end check
    .venv/bin/python bench/peers/compare_peers.py --report-only --ids 0-29

One xllamacpp server serves the model; a counting proxy in front of it (peer_meter.py) is
the only way in, and its counts are every system's tokens. Questions are the outer loop:
each question is run by every approach before the next one starts, so a partial run is a
fair comparison on the questions done. Each (system, approach, question) is one JSON line
appended to bench/results/peers-MODEL-DATASET.jsonl as it completes; a rerun skips them.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
from peer_report import report
from peer_systems import (
    ALL,
    HERE,
    Approach,
    OptillmProxy,
    Outcome,
    TtscaleRunner,
    Worker,
    install_peer,
)

RESULTS = HERE.parent / "results"


def parse_ids(spec: str) -> list[str]:
    """``0-29,40`` -> positions as strings; anything else is kept as a problem id."""
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if dash and lo.isdigit() and hi.isdigit():
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(part)
    return out


def questions(dataset: str, split: str, ids: str) -> list[tuple[str, str, str]]:
    """(id, question, gold) of the chosen problems, by position or by id."""
    from ttscale.evaluation import load_dataset

    wanted = parse_ids(ids)
    positions = [int(w) for w in wanted if w.isdigit()]
    probs = load_dataset(dataset, split, limit=max(positions) + 1 if positions and
                         len(positions) == len(wanted) else None)
    by_id = {p.id: p for p in probs}
    chosen = [probs[int(w)] if w.isdigit() else by_id[w] for w in wanted]
    return [(p.id, p.question, p.gold) for p in chosen]


def grade(text: str, gold: str) -> tuple[str | None, bool]:
    """The same extraction and math-verify equivalence for every system's final text."""
    from ttscale.answers import equivalent, extract_answer

    answer = extract_answer(text) if text else None
    return answer, bool(answer is not None and equivalent(answer, gold))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Bench:
    """The server, the meter and every system's runner, started once per run."""

    def __init__(self, args: argparse.Namespace, approaches: list[Approach],
                 log: IO[str]) -> None:
        self.args, self.log, self.notes = args, log, dict[str, str]()
        self.installed: dict[str, str] = {}
        systems = {a.system for a in approaches}
        for peer in sorted(systems - {"ttscale"}):
            err, self.installed[peer] = install_peer(peer, log)
            if err:
                self.notes[peer] = err
        self.server = subprocess.Popen(
            [sys.executable, str(HERE / "peer_server.py"), "--model", args.model,
             "--parallel", str(args.parallel), "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE)
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        if not line:
            raise SystemExit("the llama.cpp server did not start (see the log)")
        self.info: dict[str, Any] = json.loads(line)
        proxy, model = self.info["proxy"], args.model
        self.ttscale: TtscaleRunner | None = None
        self.workers: dict[str, Worker] = {}
        self.optillm: OptillmProxy | None = None
        if "ttscale" in systems:
            self.ttscale = TtscaleRunner(f"{proxy}/t/ttscale/v1", model, self.info["gguf"],
                                         self.info["sha256"], self.info["params"])
            for spec in {a.verifier for a in approaches if a.verifier}:
                self.ttscale.preload(spec)
        if "optillm" in systems and "optillm" not in self.notes:
            try:
                self.optillm = OptillmProxy(f"{proxy}/t/optillm/v1", free_port(), log)
                self.workers["optillm"] = Worker("optillm", [self.optillm.url + "/v1", model],
                                                 log)
            except RuntimeError as e:
                self.notes["optillm"] = f"optillm's proxy did not start: {e}"
        if "its_hub" in systems and "its_hub" not in self.notes:
            self.workers["its_hub"] = Worker("its_hub", [f"{proxy}/t/its_hub/v1", model], log)

    def wait_idle(self, timeout: float = 1800.0) -> None:
        """Until no slot of the server is busy: what a timed-out job left decoding is
        charged to that job's lane before the next job reads the meter."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            slots = httpx.get(self.info["upstream"] + "/slots", timeout=30).json()
            if not any(s.get("is_processing") for s in slots):
                return
            time.sleep(1.0)

    def meter(self) -> dict[str, dict[str, int]]:
        data: dict[str, dict[str, int]] = httpx.get(self.info["proxy"] + "/meter",
                                                    timeout=30).json()
        return data

    def run(self, a: Approach, question: str) -> Outcome:
        from ttscale.answers import SYSTEM_PROMPT

        if a.system in self.notes:
            return Outcome("", self.notes[a.system])
        if a.system == "ttscale":
            assert self.ttscale is not None
            try:
                return self.ttscale.run(a, question, self.args.max_tokens)
            except Exception as e:
                return Outcome("", f"{type(e).__name__}: {e}"[:2000])
        # every system gets the same system prompt (ttscale's) and the same question
        job = {"approach": a.method, "n": a.n, "question": question, "system": SYSTEM_PROMPT,
               "max_tokens": self.args.max_tokens}
        return self.workers[a.system].ask(job, self.args.job_timeout)

    def close(self) -> None:
        for w in self.workers.values():
            w.stop()
        if self.optillm is not None:
            self.optillm.stop()
        if self.ttscale is not None:
            self.ttscale.close()
        if self.server.stdin is not None:
            self.server.stdin.close()
        try:
            self.server.wait(60)
        except subprocess.TimeoutExpired:
            self.server.kill()


def record(a: Approach, qid: str, gold: str, out: Outcome, used: dict[str, int],
           seconds: float) -> dict[str, Any]:
    answer, correct = grade(out.text, gold)
    return {"system": a.system, "approach": a.name, "qid": qid, "gold": gold,
            "answer": answer, "correct": correct, "tokens": used.get("total", 0),
            "prompt_tokens": used.get("prompt_tokens", 0),
            "completion_tokens": used.get("completion_tokens", 0),
            "prompt_computed": used.get("prompt_computed", 0),
            "requests": used.get("requests", 0), "retokenized": used.get("retokenized", 0),
            "offloaded_tokens": out.offloaded_tokens, "offloaded_flops": out.offloaded_flops,
            "wall_seconds": round(seconds, 2), "error": out.error,
            "text": out.text[-4000:], "detail": out.detail or {}}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    d["total"] = d.get("prompt_tokens", 0) + d.get("completion_tokens", 0)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="gsm8k")
    ap.add_argument("--split", default="test")
    ap.add_argument("--ids", default="0-29", help="positions (0-29,40) or problem ids")
    ap.add_argument("--systems", default="ttscale,optillm,its_hub")
    ap.add_argument("--approaches", default="", help="only these approach names (a,b,...)")
    ap.add_argument("--max-tokens", type=int, default=1024, help="completion cap per call")
    ap.add_argument("--parallel", type=int, default=8, help="server slots")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--job-timeout", type=float, default=3600.0, help="seconds per job")
    ap.add_argument("--out", type=Path, default=None, help="the results file (.jsonl)")
    ap.add_argument("--retry-errors", action="store_true", help="rerun jobs that failed")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    # a kill (e.g. of the background run) unwinds like Ctrl-C: the server and workers stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    systems = args.systems.split(",")
    names = set(filter(None, args.approaches.split(",")))
    approaches = [a for a in ALL if a.system in systems and
                  (a.name in names if names else not a.optional)]
    out = args.out or RESULTS / f"peers-{args.model}-{args.dataset}.jsonl"
    title = (f"{args.dataset} {args.split} {args.ids}, {args.model}, one llama.cpp server, "
             "tokens by its meter")
    # the report shows every approach of these systems that has results; the optional
    # ones are counted on their own questions
    order = [(a.system, a.name, a.optional) for a in ALL if a.system in systems]
    if not args.report_only:
        run(args, approaches, out)
    summary = report(out, order, title)
    print(f"\n{summary['questions']} questions finished by every approach\n")
    print(summary["table"])
    print("\nverdict:", json.dumps(summary["verdict"]))


def run(args: argparse.Namespace, approaches: list[Approach], out: Path) -> None:
    qs = questions(args.dataset, args.split, args.ids)
    done: set[tuple[str, str, str]] = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if not (args.retry_errors and r.get("error")):
                done.add((r["system"], r["approach"], r["qid"]))
    todo = [(q, a) for q in qs for a in approaches if (a.system, a.name, q[0]) not in done]
    print(f"{len(todo)} jobs to run ({len(done)} done before)", flush=True)
    if not todo:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".workers.log")
    with log_path.open("a") as log, out.open("a") as sink:
        bench = Bench(args, approaches, log)
        meta = {"server": bench.info, "notes": bench.notes, "installed": bench.installed,
                "args": vars(args) | {
            "out": str(out)}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        Path(f"{out.with_suffix('')}.meta.json").write_text(
            json.dumps(meta, indent=1, default=str) + "\n")
        try:
            for i, ((qid, question, gold), a) in enumerate(todo, 1):
                before = bench.meter().get(a.system, {})
                start = time.perf_counter()
                outcome = bench.run(a, question)
                seconds = time.perf_counter() - start
                bench.wait_idle()
                used = diff(bench.meter().get(a.system, {}), before)
                rec = record(a, qid, gold, outcome, used, seconds)
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                print(f"[{i}/{len(todo)}] {qid} {a.system}:{a.name} "
                      f"{'ok ' if rec['correct'] else 'bad'} answer={rec['answer']!r} "
                      f"gold={gold} tokens={rec['tokens']} off={rec['offloaded_tokens']} "
                      f"{seconds:.1f}s" + (f" ERROR {outcome.error[:200]}"
                                            if outcome.error else ""), flush=True)
        finally:
            bench.close()


if __name__ == "__main__":
    main()
