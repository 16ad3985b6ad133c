"""Hidden states of the policy at the token that ends each step: the SPRM head's input.

The policy's GGUF is loaded by transformers (``gguf_file=``, dequantised to float32) and
only its first ``layer`` decoder layers are kept: a feature is the model's final RMSNorm
applied to the residual stream after that layer (for ``layer`` = all layers, exactly the
input of the LM head, which is what llama.cpp's per-token embeddings return). Sequences run
one at a time, each from the longest prefix already run (``sprm_prefix``): a question's
prompt runs once for all its traces, and a search's branch re-scored each round runs only
its new step.

Why not a second llama.cpp server on the same, mmapped file: it needs no second copy of the
weights, but xllamacpp exposes no key-value overrides, so it cannot stop before the last
layer, and it re-reads the prompt for every trace. ``bench/sprm_features.py`` measures both
side by side; the figures are in the README's SPRM section.

torch and transformers are imported only when features are extracted: ``pip install torch``
(CPU: ``pip install torch==2.13.0``) and ``pip install 'ttscale[sprm]'``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.answers import solve_prompt
from ttscale.errors import ConfigError, MissingExtra, ModelError
from ttscale.verifiers.sprm.prefix import Prefix, PrefixStore
from ttscale.verifiers.steps import check_delimiter

# What the feature model keeps of the sequences it ran, for the next ones sharing a prefix:
# at layer 14 of the default model about 35 KB a token, so 16,384 tokens is about 0.6 GB.
REUSE_TOKENS = 16_384
DTYPES = ("auto", "float32", "bfloat16")


def feature_dtype(name: str) -> str:
    """The weights' dtype for ``name``: ``auto`` is bfloat16 where the CPU computes it
    natively (AMX or AVX512-BF16: the default model's layer-14 features ran 2.0x as fast
    as in float32, step scores within 0.01 of float32's), float32 elsewhere (emulated
    bfloat16 is slower than float32).

    Example:
        >>> feature_dtype("float32"), feature_dtype("auto") in ("float32", "bfloat16")
        ('float32', True)
        >>> feature_dtype("half")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: dtype must be auto, float32 or bfloat16, got 'half'
    """
    if name not in DTYPES:
        raise ConfigError(f"dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got "
                          f"{name!r}")
    if name != "auto":
        return name
    cpu = getattr(import_torch(), "cpu", None)
    # private in torch 2.x; a torch without them gets float32, which is always right
    native = any(getattr(cpu, probe, lambda: False)()
                 for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bfloat16" if native else "float32"


def import_torch() -> Any:
    """torch, or a ``MissingExtra`` naming the install command.

    Example:
        >>> torch = import_torch()
        >>> torch.__name__, torch.ones(2).sum().item()
        ('torch', 2.0)
    """
    try:
        import torch
    except ImportError as exc:
        raise MissingExtra("torch is not installed: run pip install torch (the CPU build: "
                           "pip install torch==2.13.0)") from exc
    return torch


def _transformers() -> Any:
    import_torch()
    try:
        import accelerate  # noqa: F401  (transformers needs it to read a GGUF)
        import gguf  # noqa: F401
        import transformers
    except ImportError as exc:
        raise MissingExtra("the SPRM verifier reads the model with transformers, gguf and "
                           "accelerate: run pip install 'ttscale[sprm]'") from exc
    return transformers


@contextmanager
def quiet_loading(tf: Any) -> Iterator[None]:
    """While transformers reads a GGUF: no progress bars (its own, and the bare tqdm bar of
    its GGUF conversion, hundreds of lines in a log), no library warnings (dtype advice
    that does not hold here, deprecations of arguments ttscale does not pass). All of it
    shows with ``TTSCALE_DEBUG=1``. Every setting is restored afterwards.

    Example:
        >>> import types
        >>> with quiet_loading(types.SimpleNamespace()):  # any object: nothing to quiet
        ...     pass
    """
    logs = getattr(getattr(tf, "utils", None), "logging", None)
    if os.environ.get("TTSCALE_DEBUG") or logs is None:
        yield
        return
    verbosity, bars = logs.get_verbosity(), logs.is_progress_bar_enabled()
    try:
        gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # a transformers without GGUF support fails on its own later
        gguf_utils = None
    bare_tqdm = getattr(gguf_utils, "tqdm", None)
    logs.set_verbosity_error()
    logs.disable_progress_bar()
    if bare_tqdm is not None:
        gguf_utils.tqdm = functools.partial(bare_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logs.set_verbosity(verbosity)
        if bars:
            logs.enable_progress_bar()
        if bare_tqdm is not None:
            gguf_utils.tqdm = bare_tqdm


def step_ends(text: str, delimiter: str) -> list[int]:
    """Per step of ``split_steps(text, delimiter)``, the character offset where it ends:
    the start of the delimiter after it, or, for a last step with none, just past its last
    visible character. The steps are those ``split_steps`` gives, in number and order.

    Example:
        >>> step_ends("a b  \\n\\n\\n\\n c\\n\\nd ", "\\n\\n")
        [5, 11, 14]
        >>> step_ends("", "\\n\\n")
        [0]
    """
    check_delimiter(delimiter)
    ends = []
    at = 0
    parts = text.split(delimiter)
    for i, part in enumerate(parts):
        if part.strip():
            ends.append(at + len(part) if i < len(parts) - 1 else at + len(part.rstrip()))
        at += len(part) + len(delimiter)
    return ends or [len(text.rstrip())]


def end_tokens(offsets: Sequence[tuple[int, int]], ends: Sequence[int]) -> list[int]:
    """Per step end (a character offset), the index of the token that ends the step: the
    token holding the delimiter's first character (possibly merged with the step's last
    characters), or the step's own last token when it ends the text.

    Example:
        >>> end_tokens([(0, 1), (1, 2), (2, 4), (4, 5)], [2, 5])
        [2, 3]
    """
    out = []
    for end in ends:
        at = next((i for i, (s, e) in enumerate(offsets) if s <= end < e), None)
        if at is None:  # the step ends the text: its own last token
            at = max((i for i, (s, _e) in enumerate(offsets) if s < end), default=0)
        out.append(at)
    return out


def default_layer(n_layers: int) -> int:
    """The layer whose output feeds a new head by default: half the model's depth, which
    halves the scoring cost of the last layer (see the README's SPRM figures).

    Example:
        >>> default_layer(28), default_layer(30), default_layer(1)
        (14, 15, 1)
    """
    return max(1, n_layers // 2)


def chat_text(tokenizer: Any, question: str) -> str:
    """The solve prompt of ``question`` in the model's chat template, ready for a reply.

    Example:
        >>> class Template:  # a stand-in for a transformers tokenizer
        ...     def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        ...         return "".join(f"<{m['role']}>" for m in messages) + "<assistant>"
        >>> chat_text(Template(), "2+2?")
        '<system><user><assistant>'
    """
    messages = [{"role": m.role, "content": m.content} for m in solve_prompt(question).messages]
    return str(tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True))


@dataclass(frozen=True)
class TraceFeatures:
    """One trace's step-end hidden states ``(steps, hidden)``, their token positions in
    prompt + trace, the tokens a scorer read for it (its prompt counted whole), and those
    the model ran for it (the rest came from a cached prefix)."""

    vectors: np.ndarray
    positions: tuple[int, ...]
    tokens: int
    evaluated: int


class TorchFeatures:
    """The first ``layer`` layers of a GGUF model in transformers, for step features.

    Example (the 135M model; about 30 s to load on 2 CPU cores):
        >>> from ttscale import models
        >>> gguf = str(models.resolve("smollm2-135m")[0])  # doctest: +SKIP
        >>> f = TorchFeatures.load(gguf, layer=8)  # doctest: +SKIP
        >>> prompt = chat_text(f.tokenizer, "1+1?")  # doctest: +SKIP
        >>> f.extract(prompt, ["2.\\n\\nSo 2."], "\\n\\n")[0].vectors.shape  # doctest: +SKIP
        (2, 576)
    """

    def __init__(self, model: Any, tokenizer: Any, n_layers: int, *,
                 reuse_tokens: int = REUSE_TOKENS, seconds_to_load: float = 0.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.n_layers = n_layers  # the model's own depth
        self.layer = len(model.layers)  # the depth kept and run
        self.hidden_size = int(model.config.hidden_size)
        self.prefixes = PrefixStore(reuse_tokens)
        self.seconds_to_load = seconds_to_load
        self.dtype = "float32"  # what load() chose

    @classmethod
    def load(cls, gguf_path: str, layer: int | None = None, *, all_layers: bool = False,
             reuse_tokens: int = REUSE_TOKENS, threads: int | None = None,
             dtype: str = "float32") -> TorchFeatures:
        """Load the first ``layer`` layers of the GGUF at ``gguf_path``: by default
        ``default_layer`` of its depth, or every layer with ``all_layers``; its weights in
        ``dtype`` (one of ``DTYPES``; see ``feature_dtype``)."""
        torch = import_torch()
        chosen = feature_dtype(dtype)
        tf = _transformers()
        start = time.perf_counter()
        path = Path(gguf_path)
        if threads:
            torch.set_num_threads(threads)
        # the one line a user sees while the feature model loads (tens of seconds)
        sys.stderr.write(f"ttscale: loading the SPRM feature model from {path.name} "
                         f"({chosen}, once)\n")
        try:
            with quiet_loading(tf):
                return cls._load(tf, torch, path, layer, all_layers=all_layers,
                                 reuse_tokens=reuse_tokens, dtype=chosen, start=start)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ModelError(f"transformers could not read {path} ({exc}): SPRM features "
                             "need a GGUF of an architecture transformers supports") from exc

    @classmethod
    def _load(cls, tf: Any, torch: Any, path: Path, layer: int | None, *, all_layers: bool,
              reuse_tokens: int, dtype: str, start: float) -> TorchFeatures:
        config = tf.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        depth = int(config.num_hidden_layers)
        if layer is not None and not 1 <= layer <= depth:
            raise ConfigError(f"layer must be between 1 and the model's {depth} layers, "
                              f"got {layer}")
        if layer is None:
            layer = depth if all_layers else default_layer(depth)
        config.num_hidden_layers = layer  # deeper weights are never kept
        model = tf.AutoModel.from_pretrained(str(path.parent), gguf_file=path.name,
                                             config=config, dtype=getattr(torch, dtype))
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        feats = cls(model.eval(), tokenizer, depth, reuse_tokens=reuse_tokens,
                    seconds_to_load=time.perf_counter() - start)
        feats.dtype = dtype
        return feats

    def extract(self, prompt_text: str, traces: Sequence[str], delimiter: str, *,
                layer: int | None = None) -> list[TraceFeatures]:
        """Step-end features of each trace after ``prompt_text`` (the chat-templated prompt),
        at ``layer`` (default: every layer kept)."""
        layer = layer or self.layer
        return self.extract_layers(prompt_text, traces, delimiter, (layer,))[layer]

    def extract_layers(self, prompt_text: str, traces: Sequence[str], delimiter: str,
                       layers: Sequence[int]) -> dict[int, list[TraceFeatures]]:
        """The features of ``extract`` at each of ``layers``, from one forward pass through
        the deepest of them: reading several layers costs what the deepest costs alone."""
        torch = import_torch()
        wanted = sorted(set(layers))
        if not wanted or not all(1 <= w <= self.layer for w in wanted):
            raise ConfigError(f"layers must be between 1 and the {self.layer} layers loaded, "
                              f"got {', '.join(map(str, layers)) or 'none'}")
        deepest = wanted[-1]
        tok = self.tokenizer
        prompt_ids = tuple(tok(prompt_text, add_special_tokens=True)["input_ids"])
        encoded = [tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in traces]
        out: dict[int, list[TraceFeatures]] = {w: [] for w in wanted}
        full = self.model.layers
        self.model.layers = full[:deepest]
        self.model.config.num_hidden_layers = deepest
        try:
            with torch.inference_mode():
                for e, text in zip(encoded, traces, strict=True):
                    ids = prompt_ids + tuple(e["input_ids"])
                    states, evaluated = self._run(ids, tuple(wanted))
                    at = (end_tokens([tuple(o) for o in e["offset_mapping"]],
                                     step_ends(text, delimiter))
                          if e["input_ids"] else [-1])  # empty: the prompt's last token
                    positions = tuple(len(prompt_ids) + a for a in at)
                    for w in wanted:
                        vecs = states[w][list(positions)].float().numpy().copy()
                        out[w].append(TraceFeatures(vecs, positions, len(ids), evaluated))
        finally:
            self.model.layers = full
            self.model.config.num_hidden_layers = len(full)
        return out

    def _run(self, ids: tuple[int, ...], layers: tuple[int, ...]) -> tuple[dict[int, Any], int]:
        """Per layer, the states of every token of ``ids`` (the final RMSNorm of the
        residual stream after that layer), and how many tokens were run for them: only
        those after the longest prefix already run. One sequence at a time, so no batch is
        padded: batches of a question's 8 traces spent 41% of their tokens on padding, and
        at layer 14 on 24 stored traces, batches of 8 took 102 s against 83 s one by one."""
        torch = import_torch()
        from transformers import DynamicCache

        entry, shared = self.prefixes.longest(ids, layers)
        shared = min(shared, len(ids) - 1)  # at least one token runs, for the cache's state
        if entry is None or shared < 1:
            cache, kept = DynamicCache(), {w: None for w in layers}
            shared = 0
        else:
            cache, kept = self.prefixes.start_from(entry, shared)
        # transformers 5 renamed past_key_values to cache (the old name warns on every
        # call); 4.x knows only the old one
        name = ("cache" if "cache" in inspect.signature(self.model.forward).parameters
                else "past_key_values")
        out = self.model(input_ids=torch.tensor([ids[shared:]]), use_cache=True,
                         output_hidden_states=len(layers) > 1, **{name: cache})
        new = {w: (out.last_hidden_state if w == layers[-1]
                   else self.model.norm(out.hidden_states[w]))[0] for w in layers}
        states = {w: new[w] if kept[w] is None else torch.cat([kept[w], new[w]])
                  for w in layers}
        kept_cache = out.get(name)  # the old attribute only where the new name is unknown
        if kept_cache is None:
            kept_cache = out.past_key_values
        self.prefixes.add(Prefix(ids, kept_cache, states), layers)
        return states, len(ids) - shared
