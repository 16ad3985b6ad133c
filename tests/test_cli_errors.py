"""Bad input to the evaluation commands ends in one sentence that names the problem: a
JSONL file in another encoding (its line and the encoding), a run directory that is not
there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _ttscale() -> str:
    local = Path(sys.executable).parent / "ttscale"
    found = str(local) if local.exists() else shutil.which("ttscale")
    assert found is not None, "the ttscale entry point is not installed: pip install -e ."
    return found


def one_sentence(*args: str, code: int = 2) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TTSCALE_DEBUG"}
    proc = subprocess.run([_ttscale(), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    """A boinf sample file whose third line was saved in Latin-1 ("café")."""
    path = tmp_path / "answers.jsonl"
    good = '{"problem_num": %d, "gold_answer": "7", "all_answers": [["7", 10]]}\n'
    path.write_bytes((good % 0 + good % 1).encode()
                     + '{"problem_num": 2, "gold_answer": "café", "all_answers": []}\n'
                     .encode("latin-1"))
    return path


def test_import_samples_names_the_line_and_the_encoding(latin1: Path, tmp_path: Path) -> None:
    line = one_sentence("eval", "import-samples", str(latin1), "--format", "boinf", "--out",
                        str(tmp_path / "run"))
    assert f"{latin1} line 3 is not UTF-8" in line
    assert "Latin-1" in line and "iconv -f latin1 -t utf-8" in line


def test_a_local_dataset_names_the_line_and_the_encoding(tmp_path: Path) -> None:
    data = tmp_path / "questions.jsonl"
    data.write_bytes(b'{"question": "What is 6*7?", "answer": "42"}\n'
                     + '{"question": "Où est 6*7 ?", "answer": "42"}\n'.encode("cp1252"))
    line = one_sentence("eval", "--dataset", str(data), "--backend", "fake", "--n", "1",
                        "--out", str(tmp_path / "run"))
    assert "questions.jsonl line 2 is not UTF-8" in line


def test_restore_names_the_line_and_the_encoding(tmp_path: Path) -> None:
    export = tmp_path / "run.jsonl"
    header = Path(__file__).parent.parent / "bench" / "runs" / "sprm-train.jsonl"
    with header.open("rb") as f:
        first = f.readline()
    export.write_bytes(first + '{"table": "questions", "question": "Où?"}\n'.encode("cp1252"))
    line = one_sentence("eval", "restore", str(export), "--out", str(tmp_path / "run"))
    assert "run.jsonl line 2 is not UTF-8 (byte 0xf9 at column " in line


def test_report_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    line = one_sentence("report", str(tmp_path / "nowhere"))
    assert line == (f"error: run directory {tmp_path / 'nowhere'} does not exist: give the "
                    "--out directory of a ttscale eval or eval import-samples run")
    assert "import-samples" not in line.split(":")[1]  # no advice to import anything
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert "is not a directory" in one_sentence("report", str(tmp_path / "file"))


@pytest.mark.parametrize(("flags", "said"), [
    (["--ray-verifiers", "1", "--verifier", "self_judge"],
     "error: --ray-verifiers runs the verifier on Ray actors: add --ray"),
    (["--ray", "--ray-verifiers", "1"],
     "error: --ray-verifiers needs a verifier to run: add --verifier (e.g. self_judge) or a "
     "strategy that scores its samples"),
    (["--ray", "--ray-verifier-gpus", "0.5", "--verifier", "self_judge"],
     "error: --ray-verifier-gpus is for the verifier actors: add --ray-verifiers N"),
])
def test_a_verifier_pool_the_run_cannot_have_is_one_sentence(
        tmp_path: Path, flags: list[str], said: str) -> None:
    """Refused before a Ray cluster starts or a model loads."""
    line = one_sentence("eval", "--dataset", "gsm8k", "--limit", "1", "--n", "1",
                        "--backend", "fake", *flags, "--out", str(tmp_path / "run"))
    assert line == said


@pytest.mark.parametrize(("args", "message"), [
    (["solve", "2+2?", "--backend", "fake", "--strategy", "auto:budget=abc"],
     "strategy auto option budget must be a number, got abc"),
    (["solve", "2+2?", "--backend", "fake", "--temperature", "nan"],
     "temperature must be a finite number, got nan"),
    (["serve", "--backend", "fake", "--timeout", "nan"],
     "timeout must be a positive number, got nan"),
])
def test_numbers_that_are_no_numbers_are_one_sentence(args: list[str], message: str) -> None:
    """NaN passes every comparison, and an option that may be None skipped the type check:
    both once reached the code as an unexpected error."""
    assert message in one_sentence(*args)


def test_a_hub_dataset_out_of_reach_is_one_sentence_without_the_librarys_warnings(
        tmp_path: Path) -> None:
    """Offline (or with a name the hub does not have), the hub libraries log warnings of
    their own before they fail; the user sees only ttscale's sentence."""
    line = one_sentence("eval", "--dataset", "hf:ttscale-no-such-owner/no-such-set",
                        "--backend", "fake", "--out", str(tmp_path / "run"))
    assert "could not load ttscale-no-such-owner/no-such-set split 'test'" in line


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import ttscale

    out = tmp_path_factory.mktemp("small") / "run"
    ttscale.evaluate("svamp", out, ids="0-3", ns=[2], backend="fake", report_files=False)
    return out


@pytest.mark.parametrize(("args", "says"), [
    (["eval", "export", "{run}", "{tmp}"],
     "{tmp} is a directory: give a file name in it, e.g. {tmp}/run.jsonl"),
    (["eval", "export", "{run}", "{tmp}/notes.txt/run.jsonl"],
     "cannot write {tmp}/notes.txt/run.jsonl: {tmp}/notes.txt is a file, not a folder"),
    (["plan", "fit", "{run}", "--out", "{tmp}/notes.txt/plan.json"],
     "cannot write {tmp}/notes.txt/plan.json: {tmp}/notes.txt is a file, not a folder"),
    (["sprm", "train", "{run}", "--out", "{tmp}/notes.txt/head"],
     "cannot write {tmp}/notes.txt/head.sprm.safetensors: {tmp}/notes.txt is a file"),
    (["eval", "--dataset", "svamp", "--backend", "fake", "--ids", "0", "--out",
      "{tmp}/notes.txt/run"], "cannot make {tmp}/notes.txt/run: {tmp}/notes.txt is a file"),
])
def test_an_output_path_that_cannot_be_written_is_one_sentence(
        small_run: Path, tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    given = [a.format(run=small_run, tmp=tmp_path) for a in args]
    assert says.format(tmp=tmp_path) in one_sentence(*given)


def test_an_output_file_in_a_new_folder_is_written(small_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "exports" / "2026" / "run.jsonl"
    proc = subprocess.run([_ttscale(), "eval", "export", str(small_run), str(target)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text().count("\n") > 4


@pytest.mark.parametrize(("raised", "says", "code"), [
    (PermissionError(13, "Permission denied", "/srv/runs/x.jsonl"),
     "error: cannot use /srv/runs/x.jsonl (Permission denied): check that the path exists "
     "and this user may write there", 1),
    (RuntimeError("boom"), "error: unexpected RuntimeError: boom (a bug in ttscale", 1),
])
def test_reported_turns_a_refused_path_into_a_sentence_and_a_bug_into_a_report(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        raised: Exception, says: str, code: int) -> None:
    import typer

    from ttscale.cli.common import reported

    monkeypatch.delenv("TTSCALE_DEBUG", raising=False)
    with pytest.raises(typer.Exit) as done, reported():
        raise raised
    assert done.value.exit_code == code
    assert capsys.readouterr().err.startswith(says)
