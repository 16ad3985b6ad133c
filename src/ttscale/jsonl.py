"""Reading JSON-lines files whose every line must be an object, failing in one sentence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError


def json_objects(path: Path, *, name: str, fix: str,
                 shape: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line of PATH. A line that is not JSON fails as
    "NAME line N is not JSON (why): FIX"; one that is not an object, "...: SHAPE".

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
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
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
