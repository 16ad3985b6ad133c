"""``KEY=VALUE,...`` settings of the aggregation methods (DeepConf, DeepPrune, stopping
rules), read one way: known keys, each once, numbers finite, whole where the field is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import Field
from typing import Any

from ttscale.errors import ConfigError


def key_values(parts: Sequence[str], fields: Sequence[Field[Any]], what: str,
               example: str) -> dict[str, Any]:
    """The options of ``parts`` (``KEY=VALUE`` texts) for the dataclass ``fields``: a field
    typed ``str`` keeps its text, an ``int`` field takes a whole number, the rest a number.

    Example:
        >>> from dataclasses import dataclass, fields
        >>> @dataclass
        ... class S:
        ...     width: int = 1
        ...     share: float = 0.5
        ...     measure: str = "mean"
        >>> key_values(["width=4", " share = 0.25", "measure=tail"], fields(S), "S", "width=4")
        {'width': 4, 'share': 0.25, 'measure': 'tail'}
        >>> key_values(["width=2.5"], fields(S), "S", "width=4")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: S option width must be a whole number, got '2.5'
    """
    known = {f.name: str(f.type) for f in fields}
    options: dict[str, Any] = {}
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq:
            raise ConfigError(f"{what} option {part!r} is not KEY=VALUE: write e.g. {example}")
        if key not in known:
            raise ConfigError(f"{what} has no option {key!r}: choose from {', '.join(known)}")
        if key in options:
            raise ConfigError(f"{what} option {key} is given twice: give it once")
        kind = known[key].split("|")[0].strip()  # ``float | None``: a float when given
        if kind in ("str", "<class 'str'>"):
            options[key] = value
            continue
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{what} option {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{what} option {key} must be a finite number, got {value!r}")
        if kind in ("int", "<class 'int'>"):
            if not number.is_integer():
                raise ConfigError(f"{what} option {key} must be a whole number, got {value!r}")
            options[key] = int(number)
        else:
            options[key] = number
    return options
