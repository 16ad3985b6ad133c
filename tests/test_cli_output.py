"""What the CLI's tables look like: names are never cut at 80 columns, piped output is not
squeezed to 80 columns, and ``ttscale strategies`` describes every registered strategy."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from ttscale.cli.render import curve_table, verifiers_table
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.replay.verifiers import Comparison, Difference, VerifierFigures
from ttscale.models import CATALOG, is_installed
from ttscale.registry import strategies
from ttscale.strategies.spec import describe_strategy


def _entry_point() -> str:
    local = Path(sys.executable).parent / "ttscale"
    found = str(local) if local.exists() else shutil.which("ttscale")
    assert found is not None, "the ttscale entry point is not installed: pip install -e ."
    return found


TTSCALE = _entry_point()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment, a private model cache, and no width of its own."""
    out = dict(os.environ)
    out["TTSCALE_CACHE"] = str(tmp_path / "cache")
    for key in ("COLUMNS", "LINES", "TTSCALE_DEBUG"):
        out.pop(key, None)
    return out


def on_terminal(args: list[str], env: dict[str, str], columns: int = 80) -> str:
    """What ``ttscale ARGS`` draws on a real terminal (a pty) ``columns`` wide, as text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    try:
        proc = subprocess.Popen([TTSCALE, *args], stdin=slave, stdout=slave, stderr=slave,
                                env={**env, "TERM": "xterm-256color"})
    finally:
        os.close(slave)
    # Read while it runs: a pty holds only a few KB, and a writer whose reader waits for
    # it to exit first blocks forever once its output outgrows that.
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        proc.kill()
    assert proc.returncode == 0
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def test_models_at_80_columns_shows_every_name_in_full(env: dict[str, str],
                                                       tmp_path: Path) -> None:
    drawn = on_terminal(["models"], env)
    # the screenshot: the terminal's text and colours as an SVG, 80 columns wide
    screen = Console(record=True, width=80, file=open(os.devnull, "w"))  # noqa: SIM115
    screen.print(Text.from_ansi(drawn))
    screen.save_svg(str(tmp_path / "models-80.svg"), title="ttscale models")
    svg = (tmp_path / "models-80.svg").read_text(encoding="utf-8")
    plain = Text.from_ansi(drawn).plain
    for name in CATALOG:
        assert name in plain
        assert name.replace(".", "&#46;") in svg or name in svg
    assert "…" not in plain  # nothing cut
    assert max(len(line) for line in plain.splitlines()) <= 80
    flat = " ".join(plain.split())
    for spec in CATALOG.values():  # a missing model's install command, whole
        assert is_installed(spec) or spec.install_command in flat
    for row in plain.splitlines():  # no column left empty on every row
        assert "││" not in row and "┃┃" not in row


def test_piped_tables_are_not_squeezed_to_80_columns(env: dict[str, str]) -> None:
    proc = subprocess.run([TTSCALE, "models"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) > 80
    # one row per model: each name on the line of its whole description
    for spec in CATALOG.values():
        assert any(spec.name in line and spec.description in line for line in lines)


def test_columns_sets_the_width_of_piped_output(env: dict[str, str]) -> None:
    proc = subprocess.run([TTSCALE, "models"], capture_output=True, text=True,
                          env={**env, "COLUMNS": "80"}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    for name in CATALOG:
        assert name in proc.stdout


def _point(strategy: str, n: int) -> CurvePoint:
    return CurvePoint(strategy, n, 0.699, 0.61, 0.78, 6346.0, 100,
                      (("easy", 60, 0.9), ("medium", 25, 0.5), ("hard", 15, None)),
                      mean_flops=1.2e13, mean_seconds=120.3)


def _render(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_verifier_table_keeps_strategy_and_verifier_names(width: int) -> None:
    figures = tuple(
        VerifierFigures(name, 1120, 700, 0.767,
                        (_point("best_of_n", 8), _point("weighted_best_of_n", 8)),
                        differences=(Difference("weighted_best_of_n", 8, 0.006, -0.003, 0.014),),
                        within_auroc=0.67, within_questions=76)
        for name in ("self_judge", "sprm-layer4-head"))
    text = _render(verifiers_table(Comparison(100, 0, (_point("majority", 8),), figures)),
                   width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for name in ("self_judge", "sprm-layer4-head", "weighted", "best-of-n", "majority"):
        assert name in text


@pytest.mark.parametrize("width", [80, 120])
def test_eval_table_keeps_strategy_names(width: int) -> None:
    table = curve_table([_point("weighted_best_of_n", 16), _point("majority", 16),
                         _point("adaptive_majority [bayes_factor,threshold=10]", 16)],
                        "accuracy against compute", width=width)
    text = _render(table, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    assert "weighted_best_of_n" in text
    assert "threshold=10]" in text.replace("\n", "").replace("│", "").replace(" ", "")


def test_strategies_lists_every_strategy_with_its_options(env: dict[str, str]) -> None:
    drawn = Text.from_ansi(on_terminal(["strategies"], env)).plain
    assert max(len(line) for line in drawn.splitlines()) <= 80
    flat = " ".join(drawn.replace("│", " ").split())
    for name in strategies.names():
        info = describe_strategy(name)
        assert name in drawn
        assert info.summary.split()[0] in flat
        for option, default in info.options:
            assert f"{option}={default}" in flat


def test_strategies_json_reads_options_from_the_dataclasses(env: dict[str, str]) -> None:
    proc = subprocess.run([TTSCALE, "strategies", "--json"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = {s["name"]: s for s in json.loads(proc.stdout)}
    assert sorted(data) == strategies.names()
    assert dict(map(tuple, data["beam"]["options"]))["width"] == "2"
    assert data["beam"]["needs_verifier"] is True and data["majority"]["default_n"] == 8
    assert dict(map(tuple, data["deepconf"]["options"]))["eta"] == "0.9"
    assert all(s["summary"] for s in data.values())


def test_a_bad_strategy_points_to_the_list(env: dict[str, str]) -> None:
    proc = subprocess.run([TTSCALE, "solve", "q", "--backend", "fake", "--strategy",
                           "beam:colour=red"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "ttscale strategies" in proc.stderr and "Traceback" not in proc.stderr
    help_text = subprocess.run([TTSCALE, "solve", "--help"], capture_output=True, text=True,
                               env={**env, "COLUMNS": "200"}, timeout=120,
                               check=False).stdout
    assert "ttscale strategies" in help_text


def test_eval_on_an_80_column_terminal_and_piped_keeps_strategy_names(
        env: dict[str, str], tmp_path: Path) -> None:
    args = ["eval", "--dataset", "svamp", "--ids", "0-2", "--backend", "fake",
            "--strategies", "majority,weighted_best_of_n", "--n", "1,2", "--resamples", "5"]
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", on_terminal([*args, "--out",
                                                                str(tmp_path / "a")], env))
    table = shown[shown.rindex("3 questions"):]  # the table's title, after the summary
    assert "…" not in table and "weighted_best_of_n" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    piped = subprocess.run([TTSCALE, *args, "--out", str(tmp_path / "b")],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout and "weighted_best_of_n" in piped.stdout
    assert "FLOPs/question" in piped.stdout  # not squeezed: every column is there
