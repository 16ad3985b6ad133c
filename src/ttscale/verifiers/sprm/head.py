"""The self-supervised process reward model (SPRM, MetaStone-S1): a small head on the
policy's own hidden states.

A head of two linear layers reads the hidden state at the token that ends each step
(:mod:`ttscale.verifiers.sprm.features`) and gives a step score in (0, 1) by a sigmoid; a
trace scores the geometric mean of its step scores. It trains on final-answer correctness
``y`` alone: binary cross-entropy of every step score against ``y``, counted only on the steps
whose current prediction agrees with ``y`` (score > 0.5 iff y = 1), which leaves out the
noisy steps of partly right traces. The backbone stays frozen.

A head is a ``.sprm.safetensors`` file (weights, and the mean and spread of the features it
was trained on) with a ``.sprm.json`` beside it: the base model's SHA-256, layer, hidden size,
step delimiter, training data and metrics. A head refuses a model with another SHA-256.
Heads trained by the project ship in ``ttscale/heads/``, found by the model's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.types import Usage
from ttscale.verifiers.base import VerifierOutput
from ttscale.verifiers.reduce import reduce_scores
from ttscale.verifiers.sprm.features import (
    DTYPES,
    REUSE_TOKENS,
    chat_text,
    feature_dtype,
    import_torch,
)

SUFFIX = ".sprm.safetensors"
META_SUFFIX = ".sprm.json"
HEADS_DIR = Path(__file__).resolve().parents[2] / "heads"


def geometric_mean(scores: Sequence[float]) -> float:
    """The trace score: the geometric mean of its step scores (0.5 for no step).

    Example:
        >>> geometric_mean([0.25, 1.0]), round(geometric_mean([0.8]), 6)
        (0.5, 0.8)
    """
    return reduce_scores(scores, "geometric_mean")


def sprm_loss(logits: Any, labels: Any) -> Any:
    """The self-supervised process reward loss of step ``logits`` (before the sigmoid)
    against each step's trace label ``y`` in {0, 1}: binary cross-entropy, averaged over the
    steps whose prediction agrees with ``y`` (score > 0.5 iff y = 1); 0 when none does.

    Example:
        >>> import torch
        >>> logits = torch.tensor([2.0, -1.0, 0.5])  # scores 0.88, 0.27, 0.62
        >>> labels = torch.tensor([1.0, 1.0, 0.0])   # only the first step agrees
        >>> round(float(sprm_loss(logits, labels)), 4)  # -log(sigmoid(2))
        0.1269
    """
    torch = import_torch()
    agree = ((logits > 0) == (labels > 0.5)).to(logits.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels,
                                                               reduction="none")
    return (bce * agree).sum() / agree.sum().clamp(min=1.0)


def features_text(dtype: str) -> str:
    """What a head's features are, for its metadata: the model ran in ``dtype``.

    Example:
        >>> features_text("bfloat16").split(" from")[0]
        'transformers bfloat16'
    """
    return (f"transformers {dtype} from the GGUF: the final RMSNorm of the residual stream "
            "after `layer` decoder layers, at the token ending each step")


@dataclass(frozen=True)
class HeadMeta:
    """What a head was trained on and how well it did; written as the ``.sprm.json``."""

    base_model_sha256: str
    model: str
    layer: int
    n_layers: int
    hidden_size: int
    width: int
    step_delimiter: str = "\n\n"
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # how the features were read; at another layer or by other code they would differ
    features: str = field(default_factory=lambda: features_text("float32"))
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    created: str = ""

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__dataclass_fields__},
                          indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HeadMeta:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def build_module(hidden_size: int, width: int) -> Any:
    """The head: linear, GELU, linear to one logit (the sigmoid is applied by the caller).

    Example:
        >>> module = build_module(hidden_size=8, width=4)
        >>> [type(m).__name__ for m in module], module[0].in_features, module[2].out_features
        (['Linear', 'GELU', 'Linear'], 8, 1)
    """
    torch = import_torch()
    nn = torch.nn
    return nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))


CLIP = 8.0  # standardised features are clipped to [-CLIP, CLIP]


class SPRMHead:
    """Step scores from step-end features: standardise, two linear layers, sigmoid.

    Example:
        >>> import numpy as np
        >>> head = SPRMHead.new(HeadMeta("ab" * 32, "m", 4, 8, 3, 5), seed=0)
        >>> scores = head.step_scores(np.ones((2, 3), dtype=np.float32))
        >>> len(scores), all(0.0 < s < 1.0 for s in scores)
        (2, True)
    """

    def __init__(self, meta: HeadMeta, module: Any, mean: np.ndarray, scale: np.ndarray,
                 *, identity: str = "an unsaved SPRM head"):
        self.meta = meta
        self.module = module.eval()
        self.mean = mean.astype(np.float32)
        self.scale = scale.astype(np.float32)
        # what a run store records of the head behind its scores: two heads for one model
        # (another layer, a retrained one) must not pass for each other
        self.identity = identity

    @classmethod
    def new(cls, meta: HeadMeta, *, seed: int = 0, mean: np.ndarray | None = None,
            scale: np.ndarray | None = None) -> SPRMHead:
        """A freshly initialised head (``seed`` fixes its weights)."""
        torch = import_torch()
        torch.manual_seed(seed)
        zeros = np.zeros(meta.hidden_size, np.float32)
        return cls(meta, build_module(meta.hidden_size, meta.width),
                   zeros if mean is None else mean, zeros + 1 if scale is None else scale)

    def logits(self, features: Any) -> Any:
        """Logits of a ``(steps, hidden)`` float32 tensor (gradients flow when training)."""
        torch = import_torch()
        x = (features - torch.from_numpy(self.mean)) / torch.from_numpy(self.scale)
        # a feature almost constant in training can sit many deviations away on a new
        # trace; clipping keeps one such coordinate from deciding the score alone
        return self.module(x.clamp(-CLIP, CLIP)).squeeze(-1)

    def step_scores(self, features: np.ndarray) -> list[float]:
        """Step scores in (0, 1) of one trace's ``(steps, hidden)`` features."""
        torch = import_torch()
        if features.shape[-1] != self.meta.hidden_size:
            raise ConfigError(f"features of width {features.shape[-1]} do not fit this head "
                              f"(hidden size {self.meta.hidden_size}): extract them from "
                              f"layer {self.meta.layer} of {self.meta.model}")
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(features, dtype=np.float32))
            return [float(s) for s in torch.sigmoid(self.logits(x)).tolist()]

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.sprm.safetensors`` and its ``.sprm.json``; returns the weights' path."""
        torch = import_torch()
        from safetensors.torch import save_file

        weights = head_paths(path)[0]
        weights.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"module.{k}": v.detach().contiguous()
                   for k, v in self.module.state_dict().items()}
        tensors["mean"] = torch.from_numpy(self.mean.copy())
        tensors["scale"] = torch.from_numpy(self.scale.copy())
        save_file(tensors, str(weights), metadata={
            "base_model_sha256": self.meta.base_model_sha256, "layer": str(self.meta.layer)})
        head_paths(path)[1].write_text(self.meta.to_json(), encoding="utf-8")
        return weights

    @classmethod
    def load(cls, path: str | Path) -> SPRMHead:
        """Read a head written by ``save`` (``path``: the weights, the JSON, or their stem)."""
        from safetensors.torch import load_file

        weights, meta_path = head_paths(path)
        if not weights.is_file() or not meta_path.is_file():
            raise ConfigError(f"no SPRM head at {path}: give the path of a {SUFFIX} file "
                              f"with its {META_SUFFIX} beside it (ttscale sprm train --out)")
        meta = HeadMeta.from_json(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
        module = build_module(meta.hidden_size, meta.width)
        module.load_state_dict({k[len("module."):]: v for k, v in tensors.items()
                                if k.startswith("module.")})
        return cls(meta, module, tensors["mean"].numpy(), tensors["scale"].numpy(),
                   identity=head_identity(weights))

    def check_model(self, sha256: str | None, model: str) -> None:
        """Refuse a model other than the one the head was trained on."""
        if sha256 != self.meta.base_model_sha256:
            raise ConfigError(
                f"this SPRM head was trained on {self.meta.model} (SHA-256 "
                f"{self.meta.base_model_sha256[:12]}...), not on the loaded model {model} "
                f"(SHA-256 {(sha256 or 'unknown')[:12]}...): load {self.meta.model} or use "
                f"a head trained on {model}")


def head_identity(path: str | Path) -> str:
    """A head file named by its file name and the start of its weights' SHA-256.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "m.sprm.safetensors"
        >>> _ = f.write_bytes(b"weights")
        >>> head_identity(f)
        'SPRM head m.sprm.safetensors (SHA-256 9a129038d9a00aed...)'
    """
    weights = head_paths(path)[0]
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return f"SPRM head {weights.name} (SHA-256 {digest[:16]}...)"


def head_paths(path: str | Path) -> tuple[Path, Path]:
    """The weights and metadata paths of a head given by either file or their stem.

    Example:
        >>> [p.name for p in head_paths("heads/m.sprm.json")]
        ['m.sprm.safetensors', 'm.sprm.json']
    """
    text = str(path)
    for suffix in (SUFFIX, META_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + SUFFIX), Path(text + META_SUFFIX)


def shipped_heads(sha256: str | None, heads_dir: Path | None = None) -> dict[int, Path]:
    """The heads shipped for the model with this SHA-256, by the layer they read.

    Example:
        >>> shipped_heads("0" * 64)
        {}
    """
    folder = heads_dir or HEADS_DIR
    if sha256 is None or not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for meta_path in sorted(folder.glob(f"*{META_SUFFIX}")):
        meta = HeadMeta.from_json(meta_path.read_text(encoding="utf-8"))
        if meta.base_model_sha256 == sha256 and head_paths(meta_path)[0].is_file():
            found.setdefault(meta.layer, head_paths(meta_path)[0])
    return dict(sorted(found.items()))


def shipped_head(sha256: str | None, heads_dir: Path | None = None, *,
                 layer: int | None = None) -> Path | None:
    """The head shipped for the model with this SHA-256 that reads ``layer``, or by default
    the deepest one (the better verifier; a shallower one scores faster); ``None`` if none.

    Example:
        >>> shipped_head("0" * 64) is None
        True
    """
    heads = shipped_heads(sha256, heads_dir)
    if layer is not None:
        return heads.get(layer)
    return heads[max(heads)] if heads else None


def model_identity(backend: Any) -> tuple[str, Path, str]:
    """(name, GGUF path, SHA-256) of a llama.cpp backend's model: what SPRM features read.

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> gguf = Path(tempfile.mkdtemp()) / "smollm2-135m.gguf"
        >>> _ = gguf.write_bytes(b"weights")
        >>> name, path, sha = model_identity(SimpleNamespace(model_path=str(gguf)))
        >>> name, path.name, sha[:16]
        ('smollm2-135m', 'smollm2-135m.gguf', '9a129038d9a00aed')
    """
    from ttscale import models

    inner = getattr(backend, "backend", backend)  # a CachedBackend wraps the real one
    path = getattr(inner, "model_path", None)
    if path is None:
        raise ConfigError(f"the sprm verifier reads the policy's hidden states from its GGUF "
                          f"file, which the {getattr(inner, 'name', 'given')} backend does not "
                          "have: use the llamacpp backend")
    sha = getattr(inner, "sha256", None) or models.sha256_of(Path(path))
    return str(getattr(inner, "model_id", Path(path).stem)), Path(path), sha


class SPRMVerifier:
    """The SPRM head as a step-level verifier of the policy's own traces.

    ``head``: a head file (``sprm:PATH``); by default the head shipped for the loaded model,
    found by its SHA-256: the deepest, or the one reading ``layer`` (``sprm,layer=4``). The
    features are read by transformers from the same GGUF, loaded on the first ``score``; up to
    ``reuse_tokens`` tokens of what it ran are kept, so a branch re-scored in the next search
    round runs only its new tokens. ``dtype``: the feature model's weights (``auto``:
    bfloat16 where the CPU computes it natively, else float32). Usage: every trace's prompt
    and trace tokens are verifier prompt tokens, cached or not (as the policy's prompts are
    counted); FLOPs are 2 x parameters x tokens x (layers run / layers of the model).

    Example (a head trained on the 135M model, e.g. by ``ttscale sprm train``):
        >>> from ttscale.backends.llamacpp import LlamaCppBackend
        >>> be = LlamaCppBackend("smollm2-135m")  # doctest: +SKIP
        >>> v = SPRMVerifier(be, "smollm2.sprm.safetensors")  # doctest: +SKIP
        >>> out = v.score("1+1?", ["1+1 = 2.\\n\\nSo \\\\boxed{2}."])  # doctest: +SKIP
        >>> len(out.step_scores[0]), out.usage.completion_tokens  # doctest: +SKIP
        (2, 0)
    """

    name = "sprm"

    def __init__(self, backend: Any, head: str | None = None, *, layer: int | None = None,
                 reuse_tokens: int = REUSE_TOKENS, threads: int | None = None,
                 dtype: str = "auto") -> None:
        if not isinstance(reuse_tokens, int) or reuse_tokens < 0:
            raise ConfigError(f"reuse_tokens must be a number of tokens (0 keeps none), got "
                              f"{reuse_tokens!r}")
        if layer is not None and (not isinstance(layer, int) or layer < 1):
            raise ConfigError(f"layer must be the positive layer a shipped head reads, e.g. "
                              f"layer=4, got {layer!r}")
        if dtype not in DTYPES:
            feature_dtype(dtype)  # fails naming the choices, before any loading
        self.dtype = dtype
        model, self.gguf_path, sha = model_identity(backend)
        if head is not None and layer is not None:
            raise ConfigError("give the sprm verifier a head file or a layer of a shipped "
                              "head, not both")
        found = Path(head) if head is not None else shipped_head(sha, layer=layer)
        if found is None and layer is not None and shipped_heads(sha):
            raise ConfigError(f"no SPRM head ships for {model} at layer {layer}: the shipped "
                              f"heads read layer {', '.join(map(str, shipped_heads(sha)))}")
        if found is None:
            raise ConfigError(f"no SPRM head ships for {model} (SHA-256 {sha[:12]}...): train "
                              "one with ttscale sprm collect and ttscale sprm train, then pass "
                              "--verifier sprm:PATH")
        self.head = SPRMHead.load(found)
        self.head.check_model(sha, model)
        self.head_path = found
        self.identity = self.head.identity
        self.params_count = int(getattr(backend, "params_count", 0))
        self.reuse_tokens = reuse_tokens
        self.threads = threads
        self._features: Any = None
        # questions evaluated concurrently share one verifier: one copy of the model is
        # loaded, and its forward passes take turns (each already uses every core)
        self._lock = threading.Lock()

    @property
    def features(self) -> Any:
        """The feature extractor, loaded once (tens of seconds on a CPU)."""
        with self._lock:
            if self._features is None:
                from ttscale.verifiers.sprm.features import TorchFeatures

                self._features = TorchFeatures.load(str(self.gguf_path), self.head.meta.layer,
                                                    reuse_tokens=self.reuse_tokens,
                                                    threads=self.threads, dtype=self.dtype)
        return self._features

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        # the trace is re-read after the prompt, which best_of_n reserves on its own
        return trace_max_tokens + 1

    def reduce(self, steps: Sequence[float]) -> float:
        return geometric_mean(steps)

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        feats = self.features
        with self._lock:
            start = time.perf_counter()
            out = feats.extract(chat_text(feats.tokenizer, question), traces,
                                self.head.meta.step_delimiter, layer=self.head.meta.layer)
            scores = tuple(tuple(self.head.step_scores(o.vectors)) for o in out)
            seconds = time.perf_counter() - start
        total, per = self.usage([o.tokens for o in out], seconds)
        return VerifierOutput(scores, total, (), per)

    def usage(self, tokens: Sequence[int], seconds: float) -> tuple[Usage, tuple[Usage, ...]]:
        """The call's usage and each trace's share, for ``tokens`` read per trace."""
        fraction = self.head.meta.layer / max(self.head.meta.n_layers, 1)
        total = sum(tokens)
        calls = len(tokens)  # one forward pass per trace

        def one(n: int, secs: float, k: int) -> Usage:
            return Usage(n, 0, k, secs, 2.0 * self.params_count * n * fraction)

        per = tuple(one(n, seconds * n / max(total, 1), 0) for n in tokens)
        return one(total, seconds, calls), per
