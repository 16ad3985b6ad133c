"""Strategy specs: ``NAME[:KEY=VALUE[,KEY=VALUE...]]``, parsed and built in this one place.

``beam:width=4,max_steps=10`` names a registered strategy and sets fields of its dataclass;
the number of samples ``n`` comes from ``-n`` / ``--n`` / ``@N``, never from the spec. A value
is read as JSON when it parses (``4``, ``0.5``, ``true``, ``"\\n"``), else taken as text.
The options a spec may set are the strategy's own dataclass fields, so any frozen dataclass
registered as a strategy gets parsing and validation without code of its own.

In a comma-separated list (``majority,beam:width=4,max_steps=8,dvts:width=4``) a piece
holding ``=`` and no ``:`` belongs to the strategy before it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.registry import check_option, strategies

_KEY = re.compile(r"[A-Za-z_]\w*\Z")
# Fields every strategy has that a spec must not set: the sample count comes from -n, and
# the name and verifier flag describe the class itself.
RESERVED = ("n", "name", "needs_verifier")


@dataclass(frozen=True)
class StrategySpec:
    """A parsed strategy spec.

    Example:
        >>> StrategySpec.parse("beam:width=4,max_steps=10")
        StrategySpec(name='beam', options=(('width', 4), ('max_steps', 10)))
        >>> str(StrategySpec.parse(" majority "))
        'majority'
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> StrategySpec:
        name, colon, rest = text.strip().partition(":")
        name = name.strip()
        if not name or not _KEY.match(name) or (colon and not rest.strip()):
            raise ConfigError(f"bad strategy {text!r}: write NAME or NAME:KEY=VALUE[,KEY=VALUE"
                              "...], e.g. beam:width=4,max_steps=10")
        options: list[tuple[str, Any]] = []
        for pair in rest.split(",") if colon else ():
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not _KEY.match(key):
                raise ConfigError(f"bad strategy option {pair.strip()!r} in {text.strip()!r}: "
                                  "write KEY=VALUE, e.g. beam:width=4")
            if key in dict(options):
                raise ConfigError(f"strategy option {key} is given twice in {text.strip()!r}: "
                                  "keep one")
            options.append((key, _value(value.strip())))
        return cls(name, tuple(options))

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_show(v)}" for k, v in self.options)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _show(value: Any) -> str:
    """A value as a spec writes it: bare text when it reads back the same, else JSON."""
    plain = (isinstance(value, str) and value and value == value.strip() and "," not in value
             and _value(value) == value)
    return value if plain else json.dumps(value)


def split_specs(text: str, kind: str = "strategy") -> list[str]:
    """A comma-separated list of specs (of strategies, or verifiers: ``kind``); a piece with
    ``=`` and no ``:`` continues the spec before it.

    Example:
        >>> split_specs("majority,beam:width=4,max_steps=8,dvts:width=4")
        ['majority', 'beam:width=4,max_steps=8', 'dvts:width=4']
        >>> split_specs("self_judge,sprm,layer=4", "verifier")
        ['self_judge', 'sprm,layer=4']
    """
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece:
            if not out:
                example = "beam:width=4" if kind == "strategy" else "sprm,layer=4"
                raise ConfigError(f"{kind} option {piece!r} comes before any {kind}: write "
                                  f"the {kind} first, e.g. {example}")
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def option_names(factory: Any) -> list[str]:
    """The options a strategy's spec may set: its dataclass fields but ``RESERVED``.

    Example:
        >>> from ttscale.strategies.adaptive_majority import AdaptiveMajority
        >>> option_names(AdaptiveMajority)
        ['batch', 'rule']
    """
    if not dataclasses.is_dataclass(factory):
        return []
    return [f.name for f in dataclasses.fields(factory) if f.init and f.name not in RESERVED]


def _parses_own(factory: Any) -> bool:
    """A strategy whose only option is an ``options`` text parses its KEY=VALUE pairs itself
    (DeepConf, DeepPrune: their parameters live in one validated object of their own)."""
    return option_names(factory) == ["options"]


def _options_text(spec: StrategySpec) -> str:
    return str(spec).partition(":")[2]


def check_strategy(text: str) -> StrategySpec:
    """Parse ``text`` and check its name and options against the strategy, building nothing.

    Example:
        >>> check_strategy("adaptive_majority:batch=4").options
        (('batch', 4),)
        >>> check_strategy("greedy:width=4")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: strategy greedy takes no options, got width
        >>> check_strategy("adaptive_majority:colour=red")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: strategy adaptive_majority has no option colour: its \
options are batch, rule
    """
    spec = StrategySpec.parse(text)
    factory = strategies.get(spec.name)  # an unknown name fails here, listing the choices
    names = option_names(factory)
    given = [k for k, _ in spec.options]
    if "n" in given:
        raise ConfigError(f"strategy {spec.name}: set the number of samples with -n (or --n, "
                          f"or @N), not n= in the spec")
    if _parses_own(factory):
        factory(options=_options_text(spec))  # its own parser names a bad option
        return spec
    if given and not names:
        raise ConfigError(f"strategy {spec.name} takes no options, got {', '.join(given)}")
    unknown = [k for k in given if k not in names]
    if unknown:
        raise ConfigError(f"strategy {spec.name} has no option {', '.join(unknown)}: its "
                          f"options are {', '.join(names)}")
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # an annotation that does not resolve: leave it to the dataclass
        hints = {}
    for key, value in spec.options:
        check_option(f"strategy {spec.name}", key, value, hints.get(key), _show)
    return spec


@dataclass(frozen=True)
class StrategyInfo:
    """What ``ttscale strategies`` shows of one strategy, read from the strategy itself:
    the first paragraph of its docstring, its default ``n``, and its options (dataclass
    fields, or the fields of the settings object a strategy parses itself) with defaults."""

    name: str
    summary: str
    default_n: int | None
    needs_verifier: bool
    options: tuple[tuple[str, str], ...]  # (option, its default as a spec would write it)


def _summary(factory: Any) -> str:
    """The first sentence of a docstring on one line, without reST markup."""
    first = (getattr(factory, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(first.replace("``", "").split())
    return re.split(r"(?<=\.) ", text, maxsplit=1)[0]


def _defaults(cls: Any, skip: tuple[str, ...] = RESERVED) -> tuple[tuple[str, str], ...]:
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
            default = ("auto" if value is None else f"{value:g}" if isinstance(value, float)
                       else _show(value))
        elif f.default_factory is not dataclasses.MISSING:
            default = _show(f.default_factory())
        else:
            default = "required"
        out.append((f.name, default))
    return tuple(out)


def describe_strategy(name: str) -> StrategyInfo:
    """A registered strategy as ``ttscale strategies`` lists it.

    Example:
        >>> info = describe_strategy("adaptive_majority")
        >>> info.default_n, info.options
        (80, (('batch', '2'), ('rule', 'budgeted')))
        >>> describe_strategy("deepconf").options[:2]
        (('top_k', '5'), ('window', '64'))
    """
    factory = strategies.get(name)
    fields = getattr(factory, "__dataclass_fields__", {})
    default_n = getattr(fields.get("n"), "default", None)
    if not dataclasses.is_dataclass(factory):
        options: tuple[tuple[str, str], ...] = ()
    elif _parses_own(factory):
        # its options are those of the settings object it parses (DeepConf, DeepPrune)
        built: Any = strategies.get(name)(options="")
        params = getattr(built, "params", None)
        options = _defaults(type(params), ()) if dataclasses.is_dataclass(params) else ()
    else:
        options = _defaults(factory)
    needs = getattr(fields.get("needs_verifier"), "default", False)
    return StrategyInfo(name, _summary(factory),
                        default_n if isinstance(default_n, int) else None,
                        bool(needs), options)


def describe_strategies() -> list[StrategyInfo]:
    """Every registered strategy, plug-ins included, by name.

    Example:
        >>> [s.name for s in describe_strategies()][:3]
        ['ab_mcts', 'abstraction', 'adaptive_majority']
    """
    return [describe_strategy(name) for name in strategies.names()]


def takes_samples(text: str) -> bool:
    """Whether the strategy a spec names takes a sample count (``-n``).

    Example:
        >>> takes_samples("beam:width=2"), takes_samples("greedy"), takes_samples("auto")
        (True, False, False)
    """
    factory = strategies.get(check_strategy(text).name)
    return "n" in getattr(factory, "__dataclass_fields__", {})


def make_strategy(text: str, n: int) -> Any:
    """The strategy a spec names, with ``n`` samples when it takes a sample count.

    Example:
        >>> s = make_strategy("adaptive_majority:batch=4,rule=fixed", 12)
        >>> s.n, s.batch, s.rule
        (12, 4, 'fixed')
    """
    spec = check_strategy(text)
    factory = strategies.get(spec.name)
    kwargs: dict[str, Any] = ({"options": _options_text(spec)} if _parses_own(factory)
                              else dict(spec.options))
    if "n" in getattr(factory, "__dataclass_fields__", {}):
        kwargs["n"] = n
    return factory(**kwargs)
