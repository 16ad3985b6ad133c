"""its_hub's side of the comparison, run by its_hub's own interpreter, through its Python API.

    .venvs/its_hub/bin/python worker_its_hub.py ENDPOINT MODEL

Approaches (``n`` is its_hub's ``budget``):
- ``self_consistency``: ``SelfConsistency`` voting on the ``\\boxed{}`` content, with
  its_hub's own ``create_regex_projection_function`` (its default votes on whole texts);
- ``best_of_n``: ``BestOfN`` with its ``LLMJudge`` (the same model, through the same
  server, as the judge: the only outcome scorer it has that works offline);
- ``particle_filtering``: ``ParticleFiltering`` with ``StepGeneration`` (steps end at a
  blank line, a particle stops at ``\\boxed``, at most 10 steps; see ``strip_prefill_lm``
  for the one adaptation llama.cpp needs) and, as its process reward model, an
  offline scorer written here against its ``AbstractProcessRewardModel`` interface: the
  same model asked whether the partial solution is correct so far, P(Yes) from its
  log-probabilities. Its tokens go through the meter like everything else.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import sys
import time
import urllib.request
from typing import Any

from worker_common import Answer, Job, serve

STEP_PROMPT = (
    "Question:\n{question}\n\nPartial solution:\n{steps}\n\n"
    "Is every step of the partial solution above correct so far? Answer Yes or No."
)


def p_yes(top: list[dict[str, Any]]) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the first token's top log-probabilities; 0.5 if neither."""
    yes = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "yes")
    no = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else 0.5


def make_step_prm(api: Any, endpoint: str, model: str, question_of: dict[str, str]) -> Any:
    """An ``AbstractProcessRewardModel`` scoring partial solutions with the model itself."""

    def ask(question: str, steps: str) -> float:
        body = {"model": model, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                "top_logprobs": 10,
                "messages": [{"role": "user", "content": STEP_PROMPT.format(
                    question=question, steps=steps)}]}
        req = urllib.request.Request(endpoint.rstrip("/") + "/chat/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as resp:
            out = json.loads(resp.read())
        content = (out["choices"][0].get("logprobs") or {}).get("content") or []
        return p_yes(content[0].get("top_logprobs", [])) if content else 0.5

    class StepJudgePRM(api.AbstractProcessRewardModel):  # type: ignore[misc]
        def score(self, prompt_or_messages: Any, steps: list[str]) -> list[float]:
            return asyncio.run(self.ascore(prompt_or_messages, steps))

        async def ascore(self, prompt_or_messages: Any, steps: list[str]) -> list[float]:
            question = question_of["current"]
            return list(await asyncio.gather(
                *(asyncio.to_thread(ask, question, s) for s in steps)))

    return StepJudgePRM()


def content_of(message: Any) -> tuple[str, str]:
    if isinstance(message, dict):
        return str(message.get("role")), str(message.get("content") or "")
    return str(message.role), str(message.content or "")


def strip_prefill_lm(its_hub: Any) -> Any:
    """its_hub's OpenAI-compatible LM, less one incompatibility with llama.cpp: asked to
    continue a final assistant message (what ``StepGeneration`` does for every step after the
    first), llama.cpp's server returns that message again followed by the continuation,
    where vLLM (which its_hub expects) returns only the continuation. Unstripped, a particle
    doubles at every step. ttscale's own OpenAI backend strips the echo the same way."""

    class LM(its_hub.OpenAICompatibleLanguageModel):  # type: ignore[misc]
        async def _agenerate(self, messages_lst: list[Any], *args: Any,
                             **kwargs: Any) -> list[dict[str, Any]]:
            responses: list[dict[str, Any]] = await super()._agenerate(
                messages_lst, *args, **kwargs)
            for messages, resp in zip(messages_lst, responses, strict=False):
                role, prefill = content_of(messages[-1])
                text = resp.get("content")
                if role == "assistant" and prefill and isinstance(text, str) and \
                        text.startswith(prefill):
                    resp["content"] = text[len(prefill):]
            return responses

    return LM


def lift_client_timeout() -> None:
    """its_hub's LM posts through aiohttp with its default 5-minute total timeout and
    retries on a timeout. On a CPU server a request of a busy batch can take longer; each
    retry re-generates (the meter counts it) and adds to the load that caused it. Every
    system here waits as long as the server takes, so its_hub does too."""
    client: Any = importlib.import_module("aiohttp.client")
    client.DEFAULT_TIMEOUT = client.ClientTimeout(total=None, sock_connect=60)


def main() -> None:
    endpoint, model = sys.argv[1], sys.argv[2]
    lift_client_timeout()
    its_hub: Any = importlib.import_module("its_hub")
    sc_mod: Any = importlib.import_module("its_hub.core.algorithms.self_consistency")
    pg_mod: Any = importlib.import_module("its_hub.core.algorithms.particle_gibbs")
    question_of: dict[str, str] = {"current": ""}
    prm = make_step_prm(its_hub, endpoint, model, question_of)
    lm_class = strip_prefill_lm(its_hub)

    def lm(system: str | None, max_tokens: int, temperature: float) -> Any:
        return lm_class(
            endpoint=endpoint, api_key="local", model_name=model, system_prompt=system,
            max_completion_tokens=max_tokens, temperature=temperature, max_concurrency=8)

    def run(job: Job) -> Answer:
        approach, n, question = job["approach"], int(job["n"]), job["question"]
        question_of["current"] = question
        policy = lm(job["system"], job["max_tokens"], 0.7)
        judge = lm(None, 256, 0.0)
        start = time.perf_counter()
        if approach == "self_consistency":
            proj = sc_mod.create_regex_projection_function(r"\\boxed\{([^}]+)\}")
            algo: Any = its_hub.SelfConsistency(consistency_space_projection_func=proj)
        elif approach == "best_of_n":
            algo = its_hub.BestOfN(orm=its_hub.LLMJudge(lm=judge))
        elif approach == "particle_filtering":
            sg = its_hub.StepGeneration(max_steps=10, step_token="\n\n", stop_token="\\boxed",
                                        temperature=0.7)
            algo = pg_mod.ParticleFiltering(sg=sg, prm=prm)
        else:
            raise ValueError(f"unknown its_hub approach {approach!r}")

        async def infer() -> Any:
            try:
                return await algo.ainfer(policy, question, budget=n, return_response_only=False)
            finally:
                await policy.close()
                await judge.close()

        result = asyncio.run(infer())
        usage = getattr(result, "usage", None)
        detail: dict[str, Any] = {"client_seconds": time.perf_counter() - start}
        if usage is not None:
            detail["self_reported_usage"] = {"prompt_tokens": usage.prompt_tokens,
                                             "completion_tokens": usage.completion_tokens}
        return str(result.the_one.get("content") or ""), detail

    serve(run)


if __name__ == "__main__":
    main()
