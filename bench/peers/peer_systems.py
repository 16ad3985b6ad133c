"""The systems compared and how each is run: the approach tables, ttscale in-process through
its OpenAI backend, and the peers (optillm, its_hub) in their own virtual environments."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"

# Each peer is installed by the bench itself, never as a dependency of ttscale: a list of
# attempts, each a list of pip argument lists; the first that succeeds is kept.
# optillm's full dependency set (torch, transformers>=5,<5.13, spacy, gradio, litellm,
# google-cloud-aiplatform, adaptive-classifier -> optimum[onnxruntime], ...) sent pip's
# resolver backtracking through transformers and optimum releases for over 10 minutes
# here; the fallback installs optillm without them plus what its proxy and its built-in
# approaches import (the plugins that need the rest fail to load, which optillm logs and
# skips). torch is pinned in the first attempt: unpinned it is the CUDA wheel (GBs).
PEER_INSTALLS: dict[str, list[list[list[str]]]] = {
    "optillm": [
        [["optillm==0.4.0", "torch==2.13.0"]],
        [["--no-deps", "optillm==0.4.0"],
         ["flask", "openai", "cerebras_cloud_sdk", "networkx", "numpy", "z3-solver<=4.15.4.0",
          "sympy", "math-verify", "PyYAML", "aiohttp", "requests", "httpx"]],
    ],
    "its_hub": [[["its-hub[lm]==1.2.0"]]],
}
INSTALL_TIMEOUT = 900.0  # seconds per attempt


@dataclass(frozen=True)
class Approach:
    """One row of the comparison: ``name`` is shown; ``method`` and ``n`` are the system's
    own; ``verifier`` is ttscale's verifier spec, if any."""

    system: str
    name: str
    method: str
    n: int = 1
    verifier: str | None = None
    optional: bool = False  # expensive: run after the rest (--approaches), reported apart


# ttscale through --backend openai; `auto` at the shipped plan's medium effort (found by the
# GGUF's SHA-256, with the SPRM it was fitted for; its samples and verifications are metered
# like the rest)
TTSCALE = [
    Approach("ttscale", "greedy", "greedy", 1),
    Approach("ttscale", "majority@4", "majority", 4),
    Approach("ttscale", "majority@8", "majority", 8),
    Approach("ttscale", "wbon_sprm@4", "weighted_best_of_n", 4, "sprm"),
    Approach("ttscale", "wbon_sprm@8", "weighted_best_of_n", 8, "sprm"),
    Approach("ttscale", "adaptive_majority@8", "adaptive_majority", 8),
    Approach("ttscale", "auto:effort=medium", "auto:effort=medium", 32, "sprm"),
]
# optillm's defaults throughout (self_consistency: 5 samples; bon: 3; mcts: 2 simulations)
OPTILLM = [Approach("optillm", m, m) for m in
           ("self_consistency", "bon", "moa", "re2", "cot_reflection")]
# mcts spent 4x moa's tokens on the 135M model: left out of the default set, run it with
# --approaches mcts once the rest is done; its row counts only the questions it finished
OPTILLM.append(Approach("optillm", "mcts", "mcts", optional=True))
ITS_HUB = [
    Approach("its_hub", "self_consistency@4", "self_consistency", 4),
    Approach("its_hub", "self_consistency@8", "self_consistency", 8),
    Approach("its_hub", "best_of_n_judge@4", "best_of_n", 4),
    Approach("its_hub", "particle_filtering@4", "particle_filtering", 4),
]
ALL = TTSCALE + OPTILLM + ITS_HUB


@dataclass
class Outcome:
    text: str
    error: str | None = None
    offloaded_tokens: int = 0  # compute that did not pass through the server
    offloaded_flops: float = 0.0
    detail: dict[str, Any] | None = None


def python_of(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def install_peer(peer: str, log: IO[str]) -> tuple[str | None, str]:
    """Create the peer's venv and install it (once): (the error or None, what was done)."""
    py, done = python_of(peer), VENVS / peer / ".installed"
    if done.exists():
        return None, done.read_text()
    tried: list[str] = []
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer)],
                           check=True, stdout=log, stderr=log)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"creating the venv of {peer} failed: {e}", ""
    for attempt in PEER_INSTALLS[peer]:
        how = " && ".join("pip install " + " ".join(args) for args in attempt)
        try:
            for args in attempt:
                subprocess.run([str(py), "-m", "pip", "install", "-q", *args], check=True,
                               stdout=log, stderr=log, timeout=INSTALL_TIMEOUT)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            tried.append(f"{how}: {e}")
            continue
        done.write_text(how + ("" if not tried else " (after: " + "; ".join(tried) + ")"))
        return None, done.read_text()
    return f"installing {peer} failed: " + "; ".join(tried), ""


class Worker:
    """A peer's worker process (``worker_<peer>.py`` in the peer's venv), one job at a time."""

    def __init__(self, peer: str, args: list[str], log: IO[str]) -> None:
        self.cmd = [str(python_of(peer)), str(HERE / f"worker_{peer}.py"), *args]
        self.log = log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.log, text=True, cwd=HERE)
        return self.proc

    def ask(self, job: dict[str, Any], timeout: float) -> Outcome:
        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return Outcome("", f"timed out after {timeout:.0f} s")
        line = proc.stdout.readline()
        if not line:
            self.stop()
            return Outcome("", "the worker exited (see the run log)")
        answer = json.loads(line)
        return Outcome(answer["text"], answer["error"], detail=answer.get("detail"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class OptillmProxy:
    """optillm's own proxy (its ``optillm`` command), in front of the counting proxy."""

    def __init__(self, upstream: str, port: int, log: IO[str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, OPENAI_API_KEY="local", OPTILLM_LOG="warning")
        self.proc = subprocess.Popen(
            [str(VENVS / "optillm" / "bin" / "optillm"), "--base-url", upstream,
             "--port", str(port), "--host", "127.0.0.1"],
            stdout=log, stderr=log, env=env, cwd=VENVS)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"optillm exited with {self.proc.returncode} (see the log)")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("optillm did not answer /health within 300 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class TtscaleRunner:
    """ttscale through its OpenAI backend against the metered server. The SPRM reads the
    same GGUF in-process (that compute is counted separately, from its own accounting)."""

    def __init__(self, base_url: str, model: str, gguf: str, sha256: str, params: int) -> None:
        from ttscale.backends.openai import OpenAIBackend

        self.backend = OpenAIBackend(model=model, base_url=base_url, timeout=7200,
                                     params_count=params)
        # the SPRM finds the GGUF (and its shipped head) through these, as on llamacpp
        self.backend.model_path = gguf  # type: ignore[attr-defined]
        self.backend.sha256 = sha256  # type: ignore[attr-defined]
        self.verifiers: dict[str, MeteredVerifier] = {}

    def verifier(self, spec: str) -> MeteredVerifier:
        if spec not in self.verifiers:
            from ttscale.verifiers.spec import build_verifier

            self.verifiers[spec] = MeteredVerifier(build_verifier(spec, self.backend))
        return self.verifiers[spec]

    def preload(self, spec: str) -> None:
        """Load a verifier's model now, so that no question's wall time pays for it."""
        try:
            getattr(self.verifier(spec).inner, "features", None)
        except Exception:  # the job that needs it records the error
            self.verifiers.pop(spec, None)

    def run(self, a: Approach, question: str, max_tokens: int) -> Outcome:
        import ttscale

        ver = self.verifier(a.verifier) if a.verifier else None
        before = ver.spent() if ver else (0, 0.0)
        r = ttscale.solve(question, backend=self.backend, strategy=a.method, n=a.n,
                          verifier=ver, max_tokens=max_tokens)
        after = ver.spent() if ver else (0, 0.0)
        # the final text: a trace of the winning class, graded like every system's text
        text = ""
        for c in r.classes:
            if r.answer is not None and c.answer == r.answer and c.traces:
                text = r.traces[c.traces[0]].text
                break
        if not text and r.traces:
            text = r.traces[0].text
        return Outcome(text, None, after[0] - before[0], after[1] - before[1],
                       {"answer": r.answer, "self_reported_tokens": r.usage.total_tokens,
                        "samples": len(r.traces), "budget_limited": r.budget_limited})

    def close(self) -> None:
        self.backend.close()


class MeteredVerifier:
    """A ttscale verifier whose usage (compute outside the server) is summed here."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.tokens = 0
        self.flops = 0.0

    def spent(self) -> tuple[int, float]:
        return self.tokens, self.flops

    def score(self, question: str, traces: Any) -> Any:
        out = self.inner.score(question, traces)
        self.tokens += out.usage.total_tokens
        self.flops += out.usage.flops
        return out

    def reduce(self, steps: Any) -> float:
        return float(self.inner.reduce(steps))

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        return int(self.inner.reserve_tokens(trace_max_tokens))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
