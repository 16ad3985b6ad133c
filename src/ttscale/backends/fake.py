"""A scripted backend for logic tests: no model, deterministic, counts words as tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ttscale.backends.streaming import OnText, Watch, usage_of, watch_generations
from ttscale.cancel import current
from ttscale.errors import Cancelled, ConfigError
from ttscale.params import SamplingParams
from ttscale.types import (
    Chat,
    FinishReason,
    GenerateOutput,
    Generation,
    Prompt,
    TokenLogprob,
    Usage,
)

Script = Callable[[Prompt, int], str]
# (prompt, sample seed, token position, params) -> the token's top log-probabilities, best
# first; the first is the sampled token's own.
TokenScript = Callable[[Prompt, int, int, SamplingParams], Sequence[float]]


def _continue(text: str, prompt: Prompt, stops: Sequence[str]) -> tuple[str, bool]:
    """The part of a scripted ``text`` a server would return: after the prompt's prefill,
    before the first stop string; and whether a stop string ended it."""
    prefill = prompt.prefill if isinstance(prompt, Chat) else ""
    if prefill and text.startswith(prefill):
        text = text[len(prefill):]
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def prompt_text(prompt: Prompt) -> str:
    """The text the script sees: a plain prompt, or a chat's messages and prefill, one a line.

    Example:
        >>> from ttscale.types import Message
        >>> prompt_text("6*7?"), prompt_text(Chat((Message("user", "6*7?"),), prefill="So"))
        ('6*7?', '6*7?\\nSo')
    """
    if isinstance(prompt, str):
        return prompt
    # the prefill starts a new message: it never runs into the last word of the prompt
    return "\n".join([*(m.content for m in prompt.messages), prompt.prefill])


class FakeBackend:
    """Returns scripted texts: a list cycled over samples, or a function of (prompt, index).

    A token is a whitespace-separated word; ``max_tokens`` truncates (finish ``length``).
    A stop string ends a text before it (``hit_stop``), as on a real server; for a chat
    prompt with a ``prefill``, a scripted text that starts with the prefill is continued
    after it, so one script can serve a step-by-step search.
    ``delay`` makes every ``generate`` call take that many seconds, as a slow model would
    (for queue, timeout and streaming tests); a cancel token in scope cuts it short with
    ``Cancelled``, as a real backend stops mid-call. ``token_logprobs`` scripts each
    token's top log-probabilities (for confidence and entropy tests); ``generate_watched``
    and ``generate_streamed`` stream word by word.

    Example:
        >>> from ttscale.types import Chat, Message
        >>> fb = FakeBackend(responses=["It is 4.", "It is 5."])
        >>> out = fb.generate([Chat.user("2+2?")], SamplingParams(n=3))
        >>> [g.text for g in out.generations[0]]
        ['It is 4.', 'It is 5.', 'It is 4.']
        >>> out.usage.completion_tokens
        9
        >>> step = FakeBackend(responses=["a b\\n\\nc d"]).generate(
        ...     [Chat.user("?"), Chat((Message("user", "?"),), prefill="a b\\n\\n")],
        ...     SamplingParams(stop=("\\n\\n",)))
        >>> [(g[0].text, g[0].hit_stop) for g in step.generations]
        [('a b', True), ('c d', False)]
    """

    name = "fake"

    def __init__(
        self,
        responses: Sequence[str] | None = None,
        script: Script | None = None,
        model_id: str = "fake",
        params_count: int = 1_000_000,
        yes_logprob: float | None = None,
        delay: float = 0.0,
        token_logprobs: TokenScript | None = None,
    ) -> None:
        if delay < 0:
            raise ConfigError(f"delay must be >= 0 seconds, got {delay:g}")
        if script is None:
            texts = list(responses or ["The answer is 42."])
            script = lambda _p, i: texts[i % len(texts)]  # noqa: E731
        self.script = script
        self.model_id = model_id
        self.params_count = params_count
        self.yes_logprob = yes_logprob
        self.delay = delay
        self.token_logprobs = token_logprobs
        self.calls: list[tuple[Prompt, SamplingParams]] = []

    def close(self) -> None:
        """Nothing to release: the script holds no resources."""

    def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_text(prompt).split())

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        start = time.perf_counter()
        self.calls.extend((prompt, params) for prompt in prompts)
        self._sleep(self.delay)
        out: list[tuple[Generation, ...]] = []
        usage = Usage()
        for prompt in prompts:
            p_tokens = self.count_tokens(prompt)
            gens = []
            for i in range(params.n):
                text, hit = _continue(self.script(prompt, params.seed + i), prompt,
                                      params.stop)
                words = text.split()
                finish: FinishReason = "length" if len(words) > params.max_tokens else "stop"
                hit = hit and finish == "stop"
                words = words[: params.max_tokens]
                gens.append(
                    Generation(
                        text=" ".join(words),
                        prompt_tokens=p_tokens,
                        completion_tokens=len(words),
                        finish_reason=finish,
                        logprobs=self._logprobs(prompt, params.seed + i, words, params),
                        seed=params.seed + i,
                        hit_stop=hit,
                    )
                )
                usage = usage + Usage.of(p_tokens, len(words), self.params_count, 0.0, calls=0)
            usage = usage + Usage(calls=1)
            out.append(tuple(gens))
        seconds = time.perf_counter() - start
        return GenerateOutput(tuple(out), usage + Usage(seconds=seconds))

    def generate_watched(self, prompt: Prompt, params: SamplingParams,
                         watch: Watch) -> GenerateOutput:
        """Sample ``params.n`` completions word by word; ``watch`` sees every word and may
        abort its sample (kept words only are charged). See ``ttscale.backends.streaming``.

        Example:
            >>> fb = FakeBackend(responses=["a b c d"])
            >>> out = fb.generate_watched("q", SamplingParams(n=2), lambda i, t: i == 0)
            >>> [(g.text, g.finish_reason) for g in out.generations[0]]
            [('a', 'aborted'), ('a b c d', 'stop')]
        """
        start = time.perf_counter()
        self.calls.append((prompt, params))
        self._sleep(self.delay)
        full = self.generate([prompt], params.with_(logprobs=True)).generations[0]
        self.calls.pop()  # the call above is this one
        # the samples stream side by side, a word of each in turn, as a batched server's do
        gens = [cut if params.logprobs else replace(cut, logprobs=None)
                for cut in watch_generations(full, watch)]
        return GenerateOutput((tuple(gens),), usage_of(tuple(gens), self.params_count,
                                                      time.perf_counter() - start, params.n))

    def generate_streamed(self, prompt: Prompt, params: SamplingParams,
                          on_text: OnText) -> GenerateOutput:
        """``generate`` for one prompt, each sample's words shown to ``on_text`` one at a
        time, round-robin over the samples, ``delay`` spread over them.

        Example:
            >>> seen = []
            >>> out = FakeBackend(responses=["a b"]).generate_streamed(
            ...     "q", SamplingParams(n=2), lambda i, w: seen.append((i, w)))
            >>> seen
            [(0, 'a'), (1, 'a'), (0, ' b'), (1, ' b')]
        """
        start = time.perf_counter()
        self.calls.append((prompt, params))
        out = FakeBackend.generate(self._undelayed(), [prompt], params)
        words = [g.text.split() for g in out.generations[0]]
        total = sum(len(w) for w in words) or 1
        for pos in range(max((len(w) for w in words), default=0)):
            for i, ws in enumerate(words):
                if pos < len(ws):
                    self._sleep(self.delay / total)
                    on_text(i, ws[pos] if pos == 0 else " " + ws[pos])
        return GenerateOutput(out.generations, out.usage + Usage(
            seconds=time.perf_counter() - start - out.usage.seconds))

    def _undelayed(self) -> FakeBackend:
        return FakeBackend(script=self.script, model_id=self.model_id,
                           params_count=self.params_count, yes_logprob=self.yes_logprob,
                           token_logprobs=self.token_logprobs)

    def _sleep(self, seconds: float) -> None:
        """Sleep as a slow model would, stopping early with ``Cancelled`` when the call's
        cancel token is set."""
        token = current()
        if token is None:
            if seconds:
                time.sleep(seconds)
        elif token.wait(seconds):
            raise Cancelled(f"cancelled: {token.reason}")

    def _logprobs(
        self, prompt: Prompt, seed: int, words: list[str], params: SamplingParams
    ) -> tuple[TokenLogprob, ...] | None:
        if not params.logprobs:
            return None
        if self.token_logprobs is not None:
            scripted = []
            for pos, w in enumerate(words):
                values = list(self.token_logprobs(prompt, seed, pos, params))
                token = _token(w, pos)
                candidates = tuple((token if j == 0 else f"<alt{j}>", float(lp))
                                   for j, lp in enumerate(values[: max(params.top_logprobs, 1)]))
                scripted.append(TokenLogprob(token, float(values[0]), candidates))
            return tuple(scripted)
        lps = []
        for pos, w in enumerate(words):
            top: tuple[tuple[str, float], ...] = ()
            if self.yes_logprob is not None:
                import math

                no = math.log1p(-math.exp(self.yes_logprob)) if self.yes_logprob < 0 else -30.0
                top = (("Yes", self.yes_logprob), ("No", no))
            lps.append(TokenLogprob(_token(w, pos), -0.1, top))
        return tuple(lps)


def _token(word: str, position: int) -> str:
    # words after the first carry their space, so joined tokens give back the text
    return word if position == 0 else " " + word
