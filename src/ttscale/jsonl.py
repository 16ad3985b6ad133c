"""Reading JSON-lines files whose every line must be an object, failing in one sentence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError


def text_lines(path: Path, *, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) per line of a UTF-8 file. A line in another encoding fails as
    "NAME line N is not UTF-8 ...", naming the byte, the likely encoding and the fix,
    instead of a decode error from somewhere in the file.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "a.jsonl")
        >>> _ = open(f, "wb").write(b'{"q": "ok"}\\n{"q": "caf\\xe9"}\\n')
        >>> list(text_lines(Path(f), name="a.jsonl"))
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: a.jsonl line 2 is not UTF-8 (byte 0xe9 at column 11, \
likely Latin-1 or Windows-1252): convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 \
a.jsonl > a.utf8.jsonl
    """
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = raw[exc.start]
                utf16 = number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff"))
                # a lone byte above 0x7f is the mark of a legacy 8-bit encoding
                source, likely = (("utf-16", "UTF-16") if utf16 else
                                  ("latin1", "Latin-1 or Windows-1252"))
                named = Path(name)
                converted = named.with_name(f"{named.stem}.utf8{named.suffix}")
                raise ConfigError(
                    f"{name} line {number} is not UTF-8 (byte 0x{byte:02x} at column "
                    f"{exc.start + 1}, likely {likely}): convert the file to UTF-8, e.g. "
                    f"iconv -f {source} -t utf-8 {name} > {converted}") from exc
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not content
            yield number, text


def json_objects(path: Path, *, name: str, fix: str,
                 shape: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line of PATH. A line that is not JSON fails as
    "NAME line N is not JSON (why): FIX"; one that is not an object, "...: SHAPE"; one
    that is not UTF-8 as :func:`text_lines` says.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "a.jsonl")
        >>> _ = open(f, "w").write('{"a": 1}\\n\\n[2]\\n')
        >>> next(json_objects(Path(f), name="a.jsonl", fix="fix it", shape="one object"))
        (1, {'a': 1})
        >>> list(json_objects(Path(f), name="a.jsonl", fix="fix it", shape="one object"))
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: a.jsonl line 3 is not a JSON object: one object
    """
    for number, text in text_lines(path, name=name):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} line {number} is not valid JSON ({exc.msg}): "
                              f"{fix}") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{name} line {number} is not a JSON object: {shape}")
        yield number, row
