"""Verifier specs: ``NAME[:ARG][,KEY=VALUE...]``, parsed and built in this one place.

``--verifier self_judge`` names a registered verifier; ``hf_prm:Qwen/Qwen2.5-Math-PRM-7B``
also gives it its positional argument (here the model), and ``,KEY=VALUE`` pairs its
keyword options: ``llm_judge,k=8,pessimistic=true``. A value is read as JSON when it parses
(``8``, ``true``, ``0.5``, ``"\\n\\n"``), else taken as plain text.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.registry import check_option, verifiers
from ttscale.verifiers.base import Verifier

_KEY = re.compile(r"[A-Za-z_]\w*\Z")


@dataclass(frozen=True)
class VerifierSpec:
    """A parsed verifier spec.

    Example:
        >>> VerifierSpec.parse("hf_prm:Qwen/Qwen2.5-Math-PRM-7B,batch_size=4")
        VerifierSpec(name='hf_prm', arg='Qwen/Qwen2.5-Math-PRM-7B', options=(('batch_size', 4),))
        >>> VerifierSpec.parse("llm_judge,k=8").options
        (('k', 8),)
    """

    name: str
    arg: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> VerifierSpec:
        head, *pairs = text.strip().split(",")
        name, colon, arg = head.partition(":")
        name, arg = name.strip(), arg.strip()
        if not name or (colon and not arg):
            raise ConfigError(f"bad verifier {text!r}: write NAME, NAME:ARG or "
                              "NAME:ARG,KEY=VALUE, e.g. hf_prm:Qwen/Qwen2.5-Math-PRM-7B")
        options = []
        for pair in pairs:
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not _KEY.match(key):
                raise ConfigError(f"bad verifier option {pair!r} in {text!r}: write KEY=VALUE, "
                                  "e.g. batch_size=4")
            options.append((key, _value(value.strip())))
        return cls(name, arg or None, tuple(options))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _factory_and_args(spec: VerifierSpec, backend: Any) -> tuple[Any, list[Any]]:
    factory = verifiers.get(spec.name)
    # A verifier with its own model (a PRM) takes no backend.
    args = [backend] if getattr(factory, "uses_backend", True) else []
    if spec.arg is not None:
        args.append(spec.arg)
    return factory, args


def check_verifier(text: str) -> VerifierSpec:
    """Parse ``text`` and check its name and options against the verifier, loading nothing.

    Example:
        >>> check_verifier("self_judge,reduction=min").name
        'self_judge'
        >>> check_verifier("self_judge,colour=red")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: verifier self_judge does not take colour='red': its \
options are reduction, top_logprobs
    """
    spec = VerifierSpec.parse(text)
    factory, args = _factory_and_args(spec, None)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C factory: nothing to check against
        return spec
    try:
        sig.bind(*args, **dict(spec.options))
    except TypeError as exc:
        if "missing" in str(exc) and spec.arg is None:
            raise ConfigError(f"verifier {spec.name} needs an argument: write "
                              f"{spec.name}:ARG, e.g. hf_prm:Qwen/Qwen2.5-Math-PRM-7B") from None
        given = ", ".join(([repr(spec.arg)] if spec.arg else [])
                          + [f"{k}={v!r}" for k, v in spec.options])
        names = [p.name for p in sig.parameters.values()
                 if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD
                                                 and p.default is not p.empty)]
        raise ConfigError(f"verifier {spec.name} does not take {given}: its options are "
                          f"{', '.join(names) or 'none'}") from None
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # an annotation that does not resolve: leave it to the verifier
        hints = {}
    for key, value in spec.options:
        check_option(f"verifier {spec.name}", key, value, hints.get(key),
                     lambda v: v if isinstance(v, str) else json.dumps(v))
    return spec


def build_verifier(text: str | Verifier, backend: Any) -> Verifier:
    """The verifier a spec names, built on ``backend``; an instance passes through.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> build_verifier("self_judge,reduction=min", FakeBackend()).reduction
        'min'
    """
    if not isinstance(text, str):
        return text
    spec = check_verifier(text)
    factory, args = _factory_and_args(spec, backend)
    made: Verifier = factory(*args, **dict(spec.options))
    return made


def verifier_identity(verifier: Verifier, spec: str) -> str:
    """What a run store records as the source of scores stored under the name ``spec``: the
    spec itself, unless the verifier says more (an SPRM head names its file and SHA-256,
    because ``sprm`` picks whichever head ships with the installed version).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> verifier_identity(build_verifier("self_judge", FakeBackend()), "self_judge")
        'self_judge'
    """
    found = getattr(verifier, "identity", None)
    return found if isinstance(found, str) and found else spec
