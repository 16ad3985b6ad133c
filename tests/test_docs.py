"""The README gets to the point and the docs site builds: the README is short and starts
with the two commands, every guide and measurement lives in docs/, and `mkdocs build
--strict` (a broken link, anchor or nav entry fails it) passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.registry import strategies

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.splitlines()
    assert len(lines) < 250
    blocks = re.findall(r"```\n(.*?)\n```", README, re.S)
    assert blocks[0].startswith("./scripts/setup.sh && .venv/bin/ttscale models install "
                                "qwen2.5-coder-1.5b && .venv/bin/ttscale solve --strategy "
                                "majority -n 8 ")
    assert blocks[1] == "./scripts/test.sh"
    assert "From Python" in README and "ttscale.solve(" in README


def test_readme_links_point_at_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_the_strategy_table_lists_each_strategy_once() -> None:
    text = (DOCS / "strategies.md").read_text(encoding="utf-8")
    first = text.split("\n\n")[2]  # the table after the title and its sentence
    rows = [line for line in first.splitlines() if line.startswith("| `")]
    named = [n for row in rows for n in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(named) == strategies.names()
    # every row belongs to a table: none stuck to the end of a paragraph
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if any(line.startswith("| ") for line in lines):
            assert all(line.startswith("|") for line in lines), block[:200]


def test_the_documented_eval_concurrency_is_the_default() -> None:
    from typer.testing import CliRunner

    from ttscale.cli.main import app

    help_text = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "300"}).output
    default = re.search(r"--concurrency\s.*?\[default: (\d+)\]", help_text)
    assert default is not None, help_text
    assert f"(default {default.group(1)};" in (DOCS / "evaluation.md").read_text("utf-8")


COMMAND = re.compile(r"(`|^|\n)(\.venv/bin/)?(nice -n 19 )?(python bench/|ttscale |"
                     r"\./scripts/)")


def test_every_measurement_section_names_its_command() -> None:
    for page in sorted((DOCS / "measurements").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        sections = re.split(r"\n## ", text)[1:] or [text]
        for section in sections:
            assert COMMAND.search(section), (page.name, section[:80])


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("material", reason="mkdocs-material comes with the dev extra")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("index.html", "strategies/index.html", "measurements/gsm8k/index.html",
                 "ARCHITECTURE/index.html", "gsm8k-test-0-39-report.html"):
        assert (tmp_path / "site" / page).exists(), page
