"""Hugging Face process reward models (PRMs) through transformers: one score per step.

Two kinds cover the common open PRMs:

- ``reward_head`` (Qwen2.5-Math-PRM): a 2-way classification head on every token. The steps
  are joined by a separator token (``<extra_0>``) that also ends the last step, inside the
  model's chat template; a step scores the softmax probability of class 1 (positive) at its
  separator, as on the Qwen2.5-Math-PRM-7B model card.
- ``step_tag`` (Math-Shepherd): a causal LM. Each step is followed by a step tag (``ки``); a
  step scores P(good) / (P(good) + P(bad)) of the next-token distribution at its tag, good
  and bad being ``+`` and ``-`` (Math-Shepherd's model card).

torch and transformers are imported only when a model loads: ``pip install torch`` (CPU:
``pip install torch==2.13.0``) and ``pip install 'ttscale[hf]'``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError, MissingExtra, ModelError, require
from ttscale.types import Usage
from ttscale.verifiers.base import VerifierOutput
from ttscale.verifiers.reduce import check_reduction, reduce_scores
from ttscale.verifiers.steps import DEFAULT_DELIMITER, check_delimiter, fill, split_steps

KINDS = ("reward_head", "step_tag")
# Qwen2.5-Math-PRM's model card puts this system prompt before the question.
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class PRMPreset:
    """How a known PRM is fed: its kind, separator (or step tag) and good / bad tokens."""

    kind: str
    separator: str
    good_token: str = "+"
    bad_token: str = "-"
    trust_remote_code: bool = False


# Qwen's PRMs ship their own model class (Qwen2ForProcessRewardModel): naming one of these
# ids runs that repository's code, as its model card does.
_QWEN = PRMPreset("reward_head", "<extra_0>", trust_remote_code=True)
PRESETS: dict[str, PRMPreset] = {
    "Qwen/Qwen2.5-Math-PRM-7B": _QWEN,
    "Qwen/Qwen2.5-Math-PRM-72B": _QWEN,
    "Qwen/Qwen2.5-Math-7B-PRM800K": _QWEN,
    "peiyi9979/math-shepherd-mistral-7b-prm": PRMPreset("step_tag", "ки"),
}
DEFAULTS = {"reward_head": PRMPreset("reward_head", "<extra_0>"),
            "step_tag": PRMPreset("step_tag", "ки")}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtra("torch is not installed: run pip install torch (the CPU build: "
                           "pip install torch==2.13.0)") from exc
    return torch


def load_prm(path: str, kind: str | None, *, trust_remote_code: bool = False,
             device: str = "cpu", dtype: str = "auto") -> tuple[str, Any, Any]:
    """``(kind, tokenizer, model)`` for a hub id or a local directory, in eval mode.

    ``kind=None`` reads it from the config: a ``...ForCausalLM`` is ``step_tag``, anything
    else ``reward_head``. A reward head with its own code (``auto_map``) loads through
    ``AutoModel`` and needs ``trust_remote_code``; others through
    ``AutoModelForTokenClassification`` with 2 labels.

    Example:
        >>> kind, tokenizer, model = load_prm("Qwen/Qwen2.5-Math-PRM-7B", None,
        ...                                   trust_remote_code=True)  # doctest: +SKIP
        >>> kind, model.training  # doctest: +SKIP
        ('reward_head', False)
    """
    _import_torch()
    tf: Any = require("transformers", "hf")
    try:
        config = tf.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the PRM {path!r} ({exc}): give a local model directory "
                         "or, online, a Hugging Face model id") from exc
    archs = list(getattr(config, "architectures", None) or [])
    if kind is None:
        kind = "step_tag" if any(a.endswith("ForCausalLM") for a in archs) else "reward_head"
    if kind == "step_tag":
        auto = tf.AutoModelForCausalLM
    elif "AutoModel" in (getattr(config, "auto_map", None) or {}):
        if not trust_remote_code:
            raise ConfigError(f"{path} ships its own model code ({', '.join(archs)}): pass "
                              "trust_remote_code=true to run it")
        auto = tf.AutoModel
    else:
        auto = tf.AutoModelForTokenClassification
    model = auto.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype)
    if kind == "reward_head" and getattr(model.config, "num_labels", 2) != 2:
        raise ConfigError(f"{path} has {model.config.num_labels} labels, not the 2 of a PRM "
                          "reward head: is it a step_tag model? pass kind=step_tag")
    tokenizer = tf.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return kind, tokenizer, model.to(device).eval()


def _one_token(tokenizer: Any, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(f"the {what} {text!r} is not one token of this model's tokenizer: "
                          f"pass {what}= a token it has (e.g. a special token it was trained on)")
    return int(ids[0])


class HFProcessRewardModel:
    """A Hugging Face PRM as a step-level verifier (no backend: it has its own model).

    ``kind`` is ``reward_head`` or ``step_tag``; ``None`` takes it from the presets of known
    ids (Qwen2.5-Math-PRM, Math-Shepherd) or the model's config. ``separator`` (the step
    tag), ``good_token``, ``bad_token`` default to the preset's. ``template`` is the text
    fed, with ``{question}`` and ``{solution}`` (the steps with their separators); by
    default the tokenizer's chat template for a reward head (system, question, solution),
    ``"{question} {solution}"`` for a step tag. Usage: prompt tokens = tokens fed, calls =
    forward passes (``batch_size`` traces each), FLOPs = 2 x parameters x tokens.

    Example (online, about 15 GB of weights; offline, give a local directory instead):
        >>> prm = HFProcessRewardModel("Qwen/Qwen2.5-Math-PRM-7B")  # doctest: +SKIP
        >>> out = prm.score("What is 2+2?", ["2+2 = 4.\\n\\nSo \\\\boxed{4}."])  # doctest: +SKIP
        >>> len(out.step_scores[0]), out.usage.calls  # doctest: +SKIP
        (2, 1)
    """

    name = "hf_prm"
    uses_backend = False

    def __init__(self, model_id_or_path: str, kind: str | None = None, *,
                 step_delimiter: str = DEFAULT_DELIMITER, reduction: str = "min",
                 device: str = "cpu", batch_size: int = 8, separator: str | None = None,
                 good_token: str | None = None, bad_token: str | None = None,
                 template: str | None = None, trust_remote_code: bool | None = None,
                 dtype: str = "auto") -> None:
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"unknown PRM kind {kind!r}: choose reward_head (a classification "
                              "head, like Qwen2.5-Math-PRM) or step_tag (a causal LM scoring a "
                              "step tag, like Math-Shepherd)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive number of traces, got {batch_size}")
        if template is not None and "{solution}" not in template:
            raise ConfigError("the PRM template must contain {solution} (and usually "
                              "{question}): e.g. template='{question} {solution}'")
        self.step_delimiter = check_delimiter(step_delimiter)
        self.reduction = check_reduction(reduction)
        self.batch_size = batch_size
        self.template = template
        self.device = device
        preset = PRESETS.get(model_id_or_path)
        trust = preset.trust_remote_code if trust_remote_code is None and preset else bool(
            trust_remote_code)
        self.kind, self.tokenizer, self.model = load_prm(
            model_id_or_path, kind or (preset.kind if preset else None),
            trust_remote_code=trust, device=device, dtype=dtype)
        defaults = preset if preset and preset.kind == self.kind else DEFAULTS[self.kind]
        self.separator = separator or defaults.separator
        self.separator_id = _one_token(self.tokenizer, self.separator, "separator")
        if self.kind == "step_tag":
            good, bad = good_token or defaults.good_token, bad_token or defaults.bad_token
            # as Math-Shepherd's card: the ids of "+ -" read together
            pair = self.tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
            if len(pair) != 2 or self.tokenizer.unk_token_id in pair:
                raise ConfigError(f"good_token {good!r} and bad_token {bad!r} must each be one "
                                  "token of this model's tokenizer")
            self.candidates = (int(pair[0]), int(pair[1]))
        self.params_count = sum(int(p.numel()) for p in self.model.parameters())
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self._overhead = len(self.tokenizer.encode(self.render("", "")[0]))

    def render(self, question: str, trace: str) -> tuple[str, int]:
        """The text fed for one trace, and its number of steps.

        A separator inside a step is removed, so separators and steps pair up one to one.
        """
        sep = self.separator
        steps = [s.replace(sep, "") for s in split_steps(trace, self.step_delimiter)]
        if self.kind == "reward_head":
            solution = sep.join(steps) + sep
        else:
            solution = f" {sep}{self.step_delimiter}".join(steps) + f" {sep}"
        if self.template is not None:
            text = fill(self.template, question=question, solution=solution)
        elif self.kind == "reward_head" and getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": QWEN_SYSTEM},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": solution}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=False)
        elif self.kind == "reward_head":
            text = f"{question}\n{solution}"
        else:
            text = f"{question} {solution}"
        return text, len(steps)

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        # A reward head swaps each delimiter for one separator; a step tag adds one tag per
        # step, and a step with its delimiter takes at least two tokens. (The PRM's tokenizer
        # is not the policy's: this bounds, it does not count.)
        tags = 0 if self.kind == "reward_head" else (trace_max_tokens + 1) // 2 * 2
        return trace_max_tokens + tags + self._overhead

    def reduce(self, steps: Sequence[float]) -> float:
        return reduce_scores(steps, self.reduction)

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        start = time.perf_counter()
        rendered = [self.render(question, t) for t in traces]
        ids = [list(self.tokenizer.encode(text)) for text, _ in rendered]
        counts = [n for _, n in rendered]
        scores: list[tuple[float, ...]] = []
        calls = 0
        for i in range(0, len(ids), self.batch_size):
            scores.extend(self._forward(ids[i:i + self.batch_size],
                                        counts[i:i + self.batch_size]))
            calls += 1
        seconds = time.perf_counter() - start
        lengths = [len(x) for x in ids]
        total = sum(lengths)
        usage = Usage.of(total, 0, self.params_count, seconds, calls=calls)
        # A trace's share: its own tokens, and the time in proportion (calls stay the batch's).
        per_trace = tuple(Usage.of(n, 0, self.params_count, seconds * n / max(total, 1), calls=0)
                          for n in lengths)
        return VerifierOutput(tuple(scores), usage, (), per_trace)

    def _forward(self, batch: list[list[int]], counts: list[int]) -> list[tuple[float, ...]]:
        """One forward pass over right-padded traces: a causal model's real positions never
        see the padding, so a trace scores the same alone or in any batch."""
        torch = _import_torch()
        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, x in enumerate(batch):
            input_ids[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[row, :len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        out = []
        with torch.inference_mode():
            if self.kind == "reward_head":
                res = self.model(input_ids=input_ids, attention_mask=mask)
                logits = res.logits if hasattr(res, "logits") else res[0]
                positive = torch.softmax(logits.float(), dim=-1)[..., 1]
            else:
                # Only two vocabulary rows are needed: apply the LM head to them alone.
                res = self.model.base_model(input_ids=input_ids, attention_mask=mask)
                hidden = res.last_hidden_state if hasattr(res, "last_hidden_state") else res[0]
                head = self.model.get_output_embeddings()
                rows = list(self.candidates)
                two = hidden @ head.weight[rows].T
                if getattr(head, "bias", None) is not None:
                    two = two + head.bias[rows]
                positive = torch.softmax(two.float(), dim=-1)[..., 0]
            for row, (x, n) in enumerate(zip(batch, counts, strict=True)):
                at = [i for i, t in enumerate(x) if t == self.separator_id]
                if len(at) < n:
                    raise ConfigError(
                        f"the separator {self.separator!r} was found {len(at)} times for {n} "
                        "steps: the tokenizer merges it with its neighbours; pass separator= a "
                        "special token")
                # the last n: a template may use the separator token before the solution
                out.append(tuple(float(p) for p in positive[row, at[-n:]].tolist()))
        return out
