"""How fast one controller stores samples: ``ttscale eval --backend openai`` against a
stand-in server that answers at once (``bench/standin_server.py``: 300-token completions with
usage and top-5 log-probabilities), at several numbers of questions in flight, before and
after a change, side by side in one run; then ``ttscale serve`` in front of the same stand-in.

"Before" is the code of a git revision, checked out into a temporary worktree and run with
the same interpreter; "after" is this checkout. For each, per concurrency: samples stored per
second (first to last commit, from the store's own timestamps), the controller's CPU seconds
per 1,000 samples and its CPU share, its peak resident memory (VmHWM) and its resident memory
at mid-run and at the end (flat memory: the two agree), and the store's commit latency
(BEGIN to COMMIT of every write transaction, p50 / p99) with the rows per commit.

    python bench/controller_throughput.py                        # before = --before, after = .
    python bench/controller_throughput.py --questions 2000 --concurrency 64,256,1024
    python bench/controller_throughput.py --before none          # this checkout only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# the controller before log-probabilities were decoded by msgspec and packed for the store
BEFORE = "a55b99f"

# Run in the child: time every store transaction, then run the CLI; write what was seen.
CHILD = r"""
import atexit, json, os, resource, sys, threading, time
from contextlib import contextmanager
from ttscale.evaluation import api as _api
from ttscale.evaluation.runs import store as _store
_times, _rss, _phase = [], [], {}
_orig = _store.Store._transaction
@contextmanager
def _timed(self):
    with _orig(self) as conn:
        t = time.perf_counter()
        yield conn
    _times.append(time.perf_counter() - t)
_store.Store._transaction = _timed
def _cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
def _mem(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0
_gen = _api._generate
def _generate(*a, **k):
    # the generation phase alone: the report afterwards reads the whole run back
    done = threading.Event()
    def watch():
        while not done.wait(0.1):
            _rss.append(_mem("VmRSS"))
    threading.Thread(target=watch, daemon=True).start()
    _phase.update(cpu0=_cpu(), t0=time.perf_counter(), commits0=len(_times))
    try:
        return _gen(*a, **k)
    finally:
        done.set()
        _phase.update(cpu1=_cpu(), t1=time.perf_counter(), hwm=_mem("VmHWM"),
                      commits1=len(_times))
_api._generate = _generate
def _dump():
    with open(os.environ["BENCH_STATS"], "w") as f:
        json.dump({"phase": _phase, "rss": _rss, "commits": _times}, f)
atexit.register(_dump)
sys.argv = ["ttscale"] + sys.argv[1:]
from ttscale.cli.main import main
main()
"""


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_standin(tokens: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_server.py"),
                             "--tokens", str(tokens)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    return proc, url


def worktree(ref: str) -> Path:
    """The source tree of ``ref``, checked out once into a temporary worktree."""
    where = Path(tempfile.gettempdir()) / f"ttscale-bench-{ref}"
    if not (where / "src").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                       check=True, capture_output=True)
    return where / "src"


def run_eval(src: Path, url: str, concurrency: int, args: argparse.Namespace,
             extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``ttscale eval`` in its own process; its figures."""
    out = Path(tempfile.mkdtemp(prefix="ttscale-bench-"))
    stats = out / "stats.json"
    env = dict(os.environ, PYTHONPATH=str(src), BENCH_STATS=str(stats))
    cmd = [sys.executable, "-c", CHILD, "eval", "--dataset", "gsm8k", "--split", "train",
           "--limit", str(args.questions), "--n", args.n, "--backend", "openai",
           "--base-url", url, "--concurrency", str(concurrency), "--resamples", "1",
           "--max-tokens", "512", "--out", str(out / "run"), "--json", *extra]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ttscale eval failed ({proc.returncode}): {err.strip()[-800:]}")
    seen = json.loads(stats.read_text())
    with sqlite3.connect(out / "run" / "run.sqlite") as db:
        samples, first, last = db.execute(
            "SELECT COUNT(*), MIN(created), MAX(created) FROM generations").fetchone()
    span = max(last - first, 1e-6)
    ph, rss = seen["phase"], seen["rss"] or [0.0]
    commits = sorted(seen["commits"][ph["commits0"]:ph["commits1"]])
    cpu = ph["cpu1"] - ph["cpu0"]
    return {"samples": samples, "per_s": samples / span,
            "cpu_per_1k": cpu / max(samples, 1) * 1000, "cpu_share": cpu / (ph["t1"] - ph["t0"]),
            "hwm_mb": ph["hwm"], "rss_mid": rss[len(rss) // 2], "rss_end": rss[-1],
            "commits": len(commits), "rows_per_commit": samples / max(len(commits), 1),
            "p50_ms": 1000 * statistics.median(commits) if commits else 0.0,
            "p99_ms": 1000 * commits[int(0.99 * (len(commits) - 1))] if commits else 0.0,
            "wall": time.perf_counter() - began}


async def drive(url: str, in_flight: int, requests: int, n: int) -> tuple[int, int]:
    """``requests`` chat requests, ``in_flight`` at a time: (answered, failed)."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    body = {"model": f"majority@{n}", "max_tokens": 512,
            "messages": [{"role": "user", "content": "What is 6*7?"}]}
    counts = [0, 0]
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                try:
                    r = await http.post("/chat/completions", json=body)
                    counts[r.status_code != 200] += 1
                except httpx.HTTPError:
                    counts[1] += 1

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return counts[0], counts[1]


def run_serve(src: Path, url: str, in_flight: int, args: argparse.Namespace) -> dict[str, Any]:
    """``ttscale serve --backend openai`` in front of the stand-in, driven at ``in_flight``."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttscale", "serve", "--backend", "openai", "--base-url", url,
         "--port", str(port), "--max-concurrency", str(in_flight), "--max-queue",
         str(in_flight), "--max-tokens", "512"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(serve_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ttscale serve did not start")
            time.sleep(0.2)
        peak = [0.0]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                peak[0] = max(peak[0], rss_mb(proc.pid))

        threading.Thread(target=watch, daemon=True).start()
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        answered, failed = asyncio.run(drive(serve_url + "/v1", in_flight, args.requests,
                                             args.serve_n))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        done.set()
        return {"samples": answered * args.serve_n, "per_s": answered * args.serve_n / wall,
                "failed": failed, "cpu_share": cpu / wall,
                "cpu_per_1k": cpu / max(answered * args.serve_n, 1) * 1000,
                "peak_mb": peak[0], "end_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with (none: skip)")
    ap.add_argument("--concurrency", default="64,256,1024", help="questions in flight")
    ap.add_argument("--questions", type=int, default=1500, help="GSM8K train questions per run")
    ap.add_argument("--n", default="1,2,4,8", help="--n of ttscale eval (max: samples each)")
    ap.add_argument("--tokens", type=int, default=300, help="completion tokens per sample")
    ap.add_argument("--requests", type=int, default=2000, help="requests per serve row")
    ap.add_argument("--serve-n", type=int, default=4, help="samples per serve request")
    ap.add_argument("--no-serve", action="store_true", help="skip ttscale serve")
    ap.add_argument("--lean", action="store_true",
                    help="also --top-logprobs 0, before and after")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    sources: list[tuple[str, Path, tuple[str, ...]]] = [("after", ROOT / "src", ())]
    if args.before != "none":
        sources.insert(0, (f"before ({args.before})", worktree(args.before), ()))
    if args.lean:
        lean = ("--top-logprobs", "0")
        if args.before != "none":
            sources.append(("before, top-logprobs 0", sources[0][1], lean))
        sources.append(("after, top-logprobs 0", ROOT / "src", lean))
    standin, url = start_standin(args.tokens)
    print(f"stand-in {url}; {args.questions} questions x n={args.n.split(',')[-1]}, "
          f"{args.tokens} tokens per sample with top-5 log-probabilities; "
          f"{os.cpu_count()} CPUs", flush=True)
    head = (f"{'ttscale eval':<22} {'in flight':>9} {'samples/s':>10} {'CPU s/1k':>9} "
            f"{'CPU':>5} {'peak MB':>8} {'RSS mid':>8} {'RSS end':>8} {'commits':>8} "
            f"{'rows/c':>7} {'p50 ms':>7} {'p99 ms':>7}")
    try:
        print(head)
        figures: dict[tuple[str, int], float] = {}
        for level in levels:
            for label, src, extra in sources:
                r = run_eval(src, url, level, args, extra)
                figures[(label, level)] = r["per_s"]
                print(f"{label:<22} {level:>9} {r['per_s']:>10.0f} {r['cpu_per_1k']:>9.2f} "
                      f"{r['cpu_share']:>5.0%} {r['hwm_mb']:>8.0f} {r['rss_mid']:>8.0f} "
                      f"{r['rss_end']:>8.0f} {r['commits']:>8} {r['rows_per_commit']:>7.1f} "
                      f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}", flush=True)
            if args.before != "none":
                ratio = figures[("after", level)] / figures[(sources[0][0], level)]
                print(f"{'  after / before':<22} {level:>9} {ratio:>9.2f}x", flush=True)
        if not args.no_serve:
            print(f"\n{'ttscale serve':<22} {'in flight':>9} {'samples/s':>10} {'CPU s/1k':>9} "
                  f"{'CPU':>5} {'peak MB':>8} {'RSS end':>8} {'failed':>7}")
            for level in levels:
                for label, src, extra in sources:
                    if extra:
                        continue  # serve asks for no log-probabilities of its own
                    r = run_serve(src, url, level, args)
                    print(f"{label:<22} {level:>9} {r['per_s']:>10.0f} {r['cpu_per_1k']:>9.2f} "
                          f"{r['cpu_share']:>5.0%} {r['peak_mb']:>8.0f} {r['end_mb']:>8.0f} "
                          f"{r['failed']:>7}", flush=True)
    finally:
        standin.terminate()
        standin.wait(10)


if __name__ == "__main__":
    main()
