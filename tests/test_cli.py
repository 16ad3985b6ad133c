"""The installed ``ttscale`` command, run as a user runs it: a subprocess.

Logic runs on the fake backend (always "The answer is 42."), so each call takes well under
a second of work; one slow test goes through llama.cpp with the 135M model.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ttscale.cli.render import format_flops, format_params, format_size
from ttscale.models import CATALOG
from ttscale.registry import strategies


def _entry_point() -> str:
    # The script next to this interpreter is the one of this environment's install.
    local = Path(sys.executable).parent / "ttscale"
    if local.exists():
        return str(local)
    found = shutil.which("ttscale")
    assert found is not None, "the ttscale entry point is not installed: pip install -e ."
    return found


TTSCALE = _entry_point()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment with a private model cache and a fixed width."""
    out = dict(os.environ)
    out["TTSCALE_CACHE"] = str(tmp_path / "cache")
    out["COLUMNS"] = "120"  # rich reads it when output is not a terminal
    out.pop("TTSCALE_DEBUG", None)
    return out


def ttscale(*args: str, env: dict[str, str],
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TTSCALE, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """One ``error:`` sentence on stderr, nothing on stdout, no traceback; the sentence."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    # "unexpected" marks an exception that is not a TtscaleError: a bug, not a user error.
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


# -- success -------------------------------------------------------------------------------


def test_solve_prints_answer_votes_and_usage(env: dict[str, str]) -> None:
    proc = ttscale("solve", "What is 6*7?", "--backend", "fake", "-n", "4", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "42" in out
    assert "answer classes" in out and "votes" in out and "share" in out and "100%" in out
    assert "prompt" in out and "completion" in out and "total" in out
    assert "calls" in out and "FLOPs" in out and "time" in out
    assert "Traceback" not in proc.stderr
    assert proc.stderr == ""  # the spinner draws only on a terminal


def test_solve_json_is_the_only_output(env: dict[str, str]) -> None:
    proc = ttscale("solve", "What is 6*7?", "--backend", "fake", "-n", "3", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert data["answer"] == "42"
    assert data["strategy"] == "majority"
    assert len(data["traces"]) == 3
    assert data["classes"][0]["votes"] == 3
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0
    assert data["total_tokens"] == (data["usage"]["prompt_tokens"]
                                    + data["usage"]["completion_tokens"])
    assert proc.stderr == ""


@pytest.mark.parametrize(("strategy", "groups"), [("rsa", 4), ("revision", 2),
                                                   ("abstraction", 2), ("budget_forcing", 2)])
def test_solve_json_carries_the_sequential_tree(strategy: str, groups: int,
                                                env: dict[str, str]) -> None:
    proc = ttscale("solve", "What is 6*7?", "--backend", "fake", "-n", "2", "--strategy",
                   strategy, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "42" and data["tree"]["strategy"] == strategy
    # rsa: the population and 3 rounds; revision: 2 chains; abstraction: 2 hints;
    # budget forcing: 2 traces
    assert len(data["tree"]["children"]) == groups


def test_solve_with_verifier_shows_scores(env: dict[str, str]) -> None:
    proc = ttscale("solve", "What is 6*7?", "--backend", "fake", "-n", "2", "--strategy",
                   "weighted_best_of_n", "--verifier", "self_judge", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout and "score" in proc.stdout
    # The fake backend gives the judge no Yes/No log-probabilities: the result says so.
    assert "note:" in proc.stdout


def test_progress_on_a_terminal_keeps_json_stdout_clean(env: dict[str, str]) -> None:
    """With stderr on a terminal the spinner draws there; stdout still holds only JSON."""
    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:  # a full pty buffer would block the child
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [TTSCALE, "solve", "What is 6*7?", "--backend", "fake", "-n", "2", "--json"],
            stdout=subprocess.PIPE, stderr=slave, text=True, env=env, timeout=120, check=False)
    finally:
        os.close(slave)
        reader.join(timeout=5)
        os.close(master)
    assert proc.returncode == 0, b"".join(drawn)
    assert json.loads(proc.stdout)["answer"] == "42"
    assert b"Traceback" not in b"".join(drawn)


def test_models_lists_the_catalogue(env: dict[str, str]) -> None:
    proc = ttscale("models", env=env)
    assert proc.returncode == 0, proc.stderr
    for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"):
        assert name in proc.stdout
    assert "1.54B" in proc.stdout and "1.1 GB" in proc.stdout
    assert "installed" in proc.stdout


def test_models_json(env: dict[str, str]) -> None:
    proc = ttscale("models", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [m["name"] for m in data] == list(CATALOG)
    for m in data:
        assert isinstance(m["installed"], bool)
        assert m["install_command"] == f"ttscale models install {m['name']}"
        assert m["params_count"] > 0 and m["size_bytes"] > 0
    assert sum(m["default"] for m in data) == 1


# -- bad input: one sentence, the right exit code, nothing on stdout ------------------------

USAGE_ERRORS = [
    pytest.param(["", "--backend", "fake"], "the question is empty", id="empty-question"),
    pytest.param(["   ", "--backend", "fake"], "the question is empty", id="blank-question"),
    pytest.param(["q", "--backend", "llamacpp", "--model", "nope"],
                 "unknown model 'nope': choose one of qwen2.5-coder-0.5b", id="unknown-model"),
    pytest.param(["q", "--backend", "nope"],
                 "unknown backend 'nope': choose one of fake, llamacpp, openai",
                 id="unknown-backend"),
    pytest.param(["q", "--backend", "fake", "--strategy", "foo"],
                 "unknown strategy 'foo': choose one of " + ", ".join(strategies.names()),
                 id="unknown-strategy"),
    pytest.param(["q", "--backend", "fake", "--strategy", "best_of_n", "--verifier", "nah"],
                 "unknown verifier 'nah'", id="unknown-verifier"),
    pytest.param(["q", "--backend", "fake", "-n", "0"], "n must be a positive", id="n-zero"),
    pytest.param(["q", "--backend", "fake", "--strategy", "greedy", "-n", "4"],
                 "greedy draws one sample: drop -n", id="greedy-with-n"),
    pytest.param(["q", "--backend", "fake", "--strategy", "auto", "-n", "16"],
                 "strategy auto chooses its own number of samples: drop -n, or cap them with "
                 "auto:n_max=N", id="auto-with-n"),
    pytest.param(["q", "--backend", "fake", "--temperature", "-1"],
                 "temperature must be >= 0", id="negative-temperature"),
    pytest.param(["q", "--backend", "fake", "--max-tokens", "0"], "max_tokens must be positive",
                 id="max-tokens-zero"),
    pytest.param(["q", "--backend", "fake", "--budget", "1"],
                 "the budget cannot pay for one sample", id="budget-too-small"),
    pytest.param(["q", "--backend", "fake", "--budget", "0"], "must be a positive number",
                 id="budget-zero"),
    pytest.param(["q", "--backend", "fake", "--strategy", "best_of_n"],
                 "needs a verifier: pass --verifier self_judge", id="verifier-missing"),
    pytest.param(["q", "--backend", "fake", "--strategy", "weighted_best_of_n"],
                 "needs a verifier", id="weighted-verifier-missing"),
    pytest.param(["q", "--threads", "0"], "threads must be a positive", id="threads-zero"),
    pytest.param(["q", "--backend", "fake", "--strategy", "budget_forcing", "--max-tokens", "8"],
                 "below one thinking step", id="thinking-budget-too-small"),
    pytest.param(["q", "--base-url", "http://127.0.0.1:9/v1"], "add --backend openai",
                 id="base-url-without-openai"),
    # Options are checked before any model loads: "nope" would fail only when loading.
    pytest.param(["q", "--backend", "llamacpp", "--model", "nope", "-n", "0"],
                 "n must be a positive", id="n-checked-before-model"),
    pytest.param(["q", "--backend", "llamacpp", "--model", "nope", "--strategy", "foo"],
                 "unknown strategy 'foo'", id="strategy-checked-before-model"),
    pytest.param(["q", "--backend", "llamacpp", "--model", "nope", "--strategy", "best_of_n"],
                 "needs a verifier", id="verifier-checked-before-model"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_bad_options_fail_with_one_sentence(args: list[str], message: str,
                                            env: dict[str, str]) -> None:
    line = assert_clean_failure(ttscale("solve", *args, env=env), 2)
    assert message in line


def test_unknown_model_install_fails_cleanly(env: dict[str, str]) -> None:
    line = assert_clean_failure(ttscale("models", "install", "nope", env=env), 2)
    assert "unknown model 'nope'" in line and "smollm2-135m" in line


def test_corrupt_model_file_names_the_fix(env: dict[str, str]) -> None:
    models_dir = Path(env["TTSCALE_CACHE"]) / "models"
    models_dir.mkdir(parents=True)
    (models_dir / "qwen2.5-coder-0.5b.gguf").write_bytes(b"GGUF" + b"\0" * 1024)
    proc = ttscale("solve", "q", "--model", "qwen2.5-coder-0.5b", env=env)
    line = assert_clean_failure(proc, 1)
    assert "corrupt" in line
    assert "ttscale models install qwen2.5-coder-0.5b" in line


def test_unreachable_server_fails_cleanly(env: dict[str, str]) -> None:
    # Port 9 (discard) has no listener on a test machine: the connection is refused.
    proc = ttscale("solve", "q", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                   env=env)
    line = assert_clean_failure(proc, 1)
    assert "127.0.0.1:9" in line


class _NotOpenAI(BaseHTTPRequestHandler):
    """A web server, but not an OpenAI API: every path is an HTML page."""

    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self._page()

    def _page(self) -> None:
        body = b"<html><body>hello</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_non_openai_server_fails_cleanly(html_server: str, env: dict[str, str]) -> None:
    proc = ttscale("solve", "q", "--backend", "openai", "--base-url", html_server, env=env)
    assert_clean_failure(proc, 1)


def test_interrupt_exits_130_without_traceback(env: dict[str, str]) -> None:
    """Ctrl-C while waiting on a server that never answers: "interrupted", exit 130."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    connected = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)  # keep it open and silent: the client waits
        connected.set()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    # A shell without job control starts background commands with SIGINT ignored, and an
    # ignored signal stays ignored across exec: give the child the default, as a terminal's
    # foreground process has, whatever launched the test run.
    proc = subprocess.Popen([TTSCALE, "solve", "q", "--backend", "openai", "--base-url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Interrupt only once the request is out: the command is past start-up by then.
        assert connected.wait(60), "the CLI never connected to the server"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for conn in held:
            conn.close()
        listener.close()
    assert proc.returncode == 130, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.strip() == "interrupted"


# -- formatting ----------------------------------------------------------------------------


def test_human_readable_numbers() -> None:
    assert format_flops(1.234e12) == "1.2e12"
    assert format_flops(9.96e9) == "1.0e10"
    assert format_flops(0.0) == "0"
    assert format_params(1_543_714_304) == "1.54B"
    assert format_params(134_515_008) == "135M"
    assert format_size(1_117_320_768) == "1.1 GB"
    assert format_size(491_400_064) == "491 MB"


# -- the real path -------------------------------------------------------------------------


@pytest.mark.slow
def test_solve_with_a_real_model(env: dict[str, str]) -> None:
    proc = ttscale("solve", "What is 2+3?", "--model", "smollm2-135m", "-n", "2",
                   "--max-tokens", "48", "--threads", "2", "--json", env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)  # llama.cpp printed nothing into stdout
    assert len(data["traces"]) == 2
    assert data["usage"]["calls"] >= 1
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0
    assert data["usage"]["flops"] > 0
    assert all(t["completion_tokens"] <= 48 for t in data["traces"])
