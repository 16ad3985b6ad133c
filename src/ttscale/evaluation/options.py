"""The values an evaluation takes, checked and turned into what the harness needs: sample
counts, strategy names, problem ids and positions, dataset options, the temperature, the
model's identity. The CLI parses its flags with these; the library accepts the same text
or plain lists.

Example:
    >>> parse_ns("1,2,8"), parse_ids("0-2")
    ([1, 2, 8], (None, [0, 1, 2]))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem, load_dataset
from ttscale.evaluation.runs.records import QuestionRecord

STRATEGIES = ("majority", "best_of_n", "weighted_best_of_n", "pass@k", "adaptive_majority",
              "deepconf", "deepconf_online", "deepprune", "auto", "short")
ADAPTIVE = "adaptive_majority"  # replayed per stopping rule (rules), n = its n_max


def parse_ns(text: str | Sequence[int]) -> list[int]:
    """``--n``: positive, strictly increasing integers, as text or a list.

    Example:
        >>> parse_ns("1, 2,8"), parse_ns([1, 4])
        ([1, 2, 8], [1, 4])
        >>> parse_ns("4,2")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --n must be strictly increasing, got 4,2: list them \
from smallest to largest, e.g. 1,2,4,8
    """
    if not isinstance(text, str):
        text = ",".join(str(k) for k in text)
    try:
        ns = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"--n must be comma-separated integers, got {text!r}: write e.g. "
                          "1,2,4,8") from exc
    if not ns or any(k <= 0 for k in ns):
        raise ConfigError(f"--n must list positive sample counts, got {text!r}: write e.g. "
                          "1,2,4,8")
    if any(b <= a for a, b in pairwise(ns)):
        raise ConfigError(f"--n must be strictly increasing, got {text}: list them from "
                          "smallest to largest, e.g. 1,2,4,8")
    return ns


def parse_strategies(text: str | Sequence[str]) -> list[str]:
    """``--strategies`` of a replay: known names, comma-separated or a list.

    Example:
        >>> parse_strategies("majority, pass@k"), parse_strategies(["deepconf"])
        (['majority', 'pass@k'], ['deepconf'])
        >>> parse_strategies("deepconf:eta=0.9")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: a replay takes strategy names without options, got \
deepconf:eta=0.9: give adaptive_majority's with --rule, deepconf's with --confidence and \
deepprune's with --prune (auto is replayed at majority's cost at each --n)
    """
    if not isinstance(text, str):
        text = ",".join(text)
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    with_options = [s for s in bad if s.partition(":")[0].strip() in STRATEGIES]
    if with_options:
        raise ConfigError(f"a replay takes strategy names without options, got "
                          f"{with_options[0]}: give adaptive_majority's with --rule, "
                          "deepconf's with --confidence and deepprune's with --prune "
                          "(auto is replayed at majority's cost at each --n)")
    if not names or bad:
        raise ConfigError(f"unknown strategy {', '.join(bad) or repr(text)}: choose from "
                          f"{', '.join(STRATEGIES)}")
    return names


def parse_temperature(text: str) -> float | None:
    """``--temperature``: a number, or ``auto`` (None: chosen by TURN before the run).

    Example:
        >>> parse_temperature("0.6"), parse_temperature("auto")
        (0.6, None)
    """
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(f"--temperature must be a number or auto, got {text!r}") from exc


def ready(records: Sequence[QuestionRecord], n: int,
          scored: bool) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """The questions with at least ``n`` samples (all scored, if ``scored``), and the rest.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> t = TraceRecord(0, 0, "", "1", 0, 5)
        >>> done, rest = ready([QuestionRecord("a", "", "1", (t, t)),
        ...                     QuestionRecord("b", "", "1", (t,))], 2, False)
        >>> [r.id for r in done], [r.id for r in rest]
        (['a'], ['b'])
    """
    done: list[QuestionRecord] = []
    rest: list[QuestionRecord] = []
    for r in records:
        ok = len(r.traces) >= n and (not scored or all(t.score is not None for t in r.traces))
        (done if ok else rest).append(r)
    return done, rest


def parse_ids(text: str | Sequence[int | str] | None,
              ) -> tuple[list[str] | None, list[int] | None]:
    """``--ids``: problem ids, or positions in the split (``0-39``, ``3,5``), or both; from
    the library also a list of them.

    Example:
        >>> parse_ids("0-2,7"), parse_ids([0, "3-4"])
        ((None, [0, 1, 2, 7]), (None, [0, 3, 4]))
        >>> parse_ids("gsm8k-test-3")
        (['gsm8k-test-3'], None)
    """
    if text is None:
        return None, None
    if not isinstance(text, str):
        text = ",".join(str(part) for part in text)
    names: list[str] = []
    positions: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        if low.isdigit() and (not dash or high.isdigit()):
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                raise ConfigError(f"--ids range {part} runs backwards: write it as "
                                  f"{last}-{first}")
            positions.extend(range(first, last + 1))
        else:
            names.append(part)
    return names or None, positions or None


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs; a value that reads as JSON (a number, true) is that.

    Example:
        >>> parse_options(["seed=3", "name=chain", "exact=true"])
        {'seed': 3, 'name': 'chain', 'exact': True}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--option {item!r} is not KEY=VALUE: write e.g. --option seed=1")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def select_problems(dataset: str, split: str, limit: int | None,
                    ids: str | Sequence[int | str] | None,
                    question_field: str | None, answer_field: str | None,
                    options: dict[str, Any] | None = None) -> list[Problem]:
    """The problems an eval asks for: by id or position, then the first ``limit``.

    Example:
        >>> [p.id for p in select_problems("svamp", "test", 2, "3-9", None, None)]
        ['svamp-test-3', 'svamp-test-4']
    """
    names, positions = parse_ids(ids)
    problems = load_dataset(dataset, split, ids=names, question_field=question_field,
                            answer_field=answer_field, **(options or {}))
    if positions is not None:
        if names is not None:
            raise ConfigError("--ids mixes problem ids and positions: give one kind")
        beyond = [i for i in positions if i >= len(problems)]
        if beyond:
            raise ConfigError(f"--ids {beyond[0]} is past the end of {dataset} {split} "
                              f"({len(problems)} problems, positions 0-{len(problems) - 1})")
        problems = [problems[i] for i in positions]
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive number of problems, got {limit}")
        problems = problems[:limit]
    return problems


def model_identity(backend: str, model: str | None, base_url: str | None) -> tuple[str, str]:
    """(model name, the key its samples are cached under): a GGUF's SHA-256 for llama.cpp;
    for a server, the backend, its servers and the model name, the servers' URLs normalised
    and sorted so that another spelling or order of the same list is the same run.

    Example:
        >>> model_identity("openai", "m", "http://b:8000/v1/,http://a:8000")
        ('m', 'openai:http://a:8000/v1,http://b:8000/v1:m')
    """
    from ttscale import models

    if backend == "llamacpp":
        name = model or models.DEFAULT_MODEL
        path, spec = models.resolve(name)
        return name, spec.sha256 if spec is not None else models.sha256_of(path)
    return model or "default", f"{backend}:{_servers(base_url)}:{model or ''}"


def run_identity(out: str | Path, backend: str, model: str | None,
                 base_url: str | None) -> tuple[str, str]:
    """:func:`model_identity`, keeping the key a run already at ``out`` began with where it
    names the same servers spelled another way (:func:`kept_key`).

    Example:
        >>> run_identity("/nonexistent", "openai", "m", "http://a:8000")
        ('m', 'openai:http://a:8000/v1:m')
    """
    from ttscale.evaluation.runs.imports import stored_settings
    from ttscale.evaluation.runs.store import FILE_NAME

    name, key = model_identity(backend, model, base_url)
    if backend == "llamacpp" or not (Path(out) / FILE_NAME).is_file():
        return name, key
    try:
        stored = stored_settings(out).get("model_sha256")
    except ConfigError:
        return name, key  # not a run: the store names it when it opens
    return name, kept_key(stored if isinstance(stored, str) else None, key, model)


def _servers(base_url: str | None) -> str:
    """The servers of ``base_url`` as one string: normalised and sorted where they are URLs
    (another backend's ``base_url`` may be anything: it is kept as given)."""
    from ttscale.backends.openai_wire import base_urls

    if not base_url:
        return ""
    try:
        return ",".join(sorted(base_urls(base_url)))
    except ConfigError:
        return base_url


def kept_key(stored: str | None, key: str, model: str | None) -> str:
    """The cache key a run keeps: ``stored``, the key it began with, where it names the same
    servers as ``key`` in another spelling (runs begun before keys were normalised keep
    their samples); otherwise ``key``, which the store then compares as before.

    Example:
        >>> kept_key("openai:http://a:8000:m", "openai:http://a:8000/v1:m", "m")
        'openai:http://a:8000:m'
        >>> kept_key("openai:http://c:8000:m", "openai:http://a:8000/v1:m", "m")
        'openai:http://a:8000/v1:m'
    """
    suffix = f":{model or ''}"
    if stored is None or stored == key or ":" not in stored or not stored.endswith(suffix):
        return key
    backend, rest = stored.split(":", 1)
    servers = rest[:len(rest) - len(suffix)]
    return stored if f"{backend}:{_servers(servers)}{suffix}" == key else key
