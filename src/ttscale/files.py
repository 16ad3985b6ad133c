"""Paths ttscale writes to on a user's behalf: a path given for output is checked, and its
folders made, before any work, so a wrong path is one sentence rather than an error after
the work is done."""

from __future__ import annotations

from pathlib import Path

from ttscale.errors import ConfigError


def output_dir(path: str | Path) -> Path:
    """``path`` as a directory to write in, made with its parents; a file in the way, or a
    folder that cannot be made, is a ``ConfigError`` that names the fix.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> output_dir(f"{d}/runs/a").is_dir()
        True
        >>> _ = Path(d, "notes.txt").write_text("")
        >>> output_dir(f"{d}/notes.txt/run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: cannot make .../notes.txt/run: .../notes.txt is a file, \
not a folder: choose another path
    """
    path = Path(path)
    _make_folder(path, f"cannot make {path}")
    return path


def _make_folder(folder: Path, failing: str) -> None:
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"{failing}: {blocking} is a file, not a folder: choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{failing} ({exc.strerror}): choose another path") from None


def output_file(path: str | Path, example: str = "out.json") -> Path:
    """``path`` as a file to write: its folder is made; a directory in its place (the fix
    names ``example`` in it), or a folder that cannot be made, is a ``ConfigError`` that
    names the fix.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> output_file(f"{d}/new/run.jsonl").parent.is_dir()
        True
        >>> output_file(d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ... is a directory: give a file name in it, e.g. .../out.json
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: give a file name in it, e.g. "
                          f"{path / example}")
    _make_folder(path.parent, f"cannot write {path}")
    return path
