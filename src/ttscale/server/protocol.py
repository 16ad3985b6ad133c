"""The HTTP edge: pydantic models of the OpenAI requests and responses ttscale serves.

Requests accept every standard OpenAI field and, like OpenAI, refuse unknown top-level
fields (a typo such as ``temprature`` is an error, not silently ignored). The one addition
is the ``ttscale`` object, which OpenAI clients send with ``extra_body={"ttscale": {...}}``.
Standard fields ttscale cannot honour (tools, logprobs, JSON modes, audio) are refused
with a sentence saying so; fields that only tune a hosted service (``user``, ``metadata``,
penalties) are accepted and ignored.

Inside the server these models are turned into plain values at once (``service.plan``):
pydantic stays at the edge.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Effort = Literal["none", "minimal", "low", "medium", "high"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# OpenAI accepts these but ttscale cannot honour them; a non-empty value is refused.
_UNSUPPORTED = {
    "tools": "tool calls are not supported: ttscale answers with text",
    "functions": "function calls are not supported: ttscale answers with text",
    "audio": "audio output is not supported: ttscale answers with text",
    "prediction": "predicted outputs are not supported by ttscale",
    "web_search_options": "web search is not supported by ttscale",
    "suffix": "suffix is not supported by ttscale: send the prompt alone",
}


def _refuse_unsupported(data: Any) -> Any:
    if isinstance(data, dict):
        for name, why in _UNSUPPORTED.items():
            if data.get(name):
                raise ValueError(why)
        if data.get("logprobs") or data.get("top_logprobs"):
            raise ValueError("logprobs are not returned by ttscale: leave logprobs unset")
        choice = data.get("tool_choice") or data.get("function_call")
        if choice not in (None, "none", "auto"):
            raise ValueError("tool calls are not supported: ttscale answers with text")
        modalities = data.get("modalities")
        if isinstance(modalities, list) and any(m != "text" for m in modalities):
            raise ValueError("only the text modality is supported: ttscale answers with text")
        fmt = data.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
            raise ValueError("response_format must be text: ttscale does not constrain "
                             "answers to JSON")
    return data


class TtscaleOptions(BaseModel):
    """The ``ttscale`` object: the full strategy parameters, checked by ttscale itself.

    Example:
        >>> TtscaleOptions(strategy="majority@8", budget=4000).strategy
        'majority@8'
    """

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(default=None, description="A strategy, e.g. majority, or "
                                 "majority@8 with its number of samples, or with options: "
                                 "beam@8:width=4,max_steps=6.")
    n: int | None = Field(default=None, description="Samples to draw (overrides the @N).")
    verifier: str | None = Field(default=None, description="Verifier for best_of_n strategies.")
    budget: int | None = Field(default=None, description="Cap on all tokens spent on this request.")
    traces: bool = Field(default=False, description="Return every sampled trace (and a tree "
                         "search's tree) in the response.")


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts are understood."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class _Common(BaseModel):
    """Fields the chat and the completions requests share."""

    # NaN or infinity is refused in every number, also in the fields ttscale ignores
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(description="MODEL, or STRATEGY[@N]/MODEL, or STRATEGY[@N] for the "
                                   "served model, e.g. majority@8/qwen2.5-coder-1.5b.")
    max_tokens: int | None = Field(default=None, description="Completion tokens per sample.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = None
    n: int | None = Field(default=None, description="Choices to return: the top answer classes.")
    seed: int | None = Field(default=None, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ttscale: TtscaleOptions | None = None
    # accepted and ignored: they tune a hosted service or a sampler ttscale does not expose
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    store: bool | None = None
    # refused when set (see _UNSUPPORTED); declared so the error names the reason
    logprobs: bool | int | None = None
    top_logprobs: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any) -> Any:
        return _refuse_unsupported(data)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``: the question is the last user message."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, description="Same as max_tokens.")
    reasoning_effort: Effort | None = Field(
        None, description="none/minimal: greedy; low / medium / high: three budgets of "
                          "the plan fitted for the model (auto), or adaptive majority over "
                          "at most 2 / 8 / 32 samples for a model without one.")
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


class CompletionRequest(_Common):
    """``POST /v1/completions``: the prompt is the question (one prompt per request)."""

    prompt: str | list[str]
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("send one prompt per request: ttscale answers one question "
                             "at a time")
        if self.echo:
            raise ValueError("echo is not supported: the prompt is not repeated")
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported: choose a strategy instead, e.g. "
                             "model best_of_n@4/MODEL")
        return self


# -- responses ------------------------------------------------------------------------------


class UsageOut(BaseModel):
    """Every token spent on the request: all samples and all verifier calls."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ClassOut(BaseModel):
    answer: str
    votes: int
    score: float | None
    traces: list[int]


class TraceOut(BaseModel):
    text: str
    answer: str | None
    completion_tokens: int
    finish_reason: str
    score: float | None


class TtscaleOut(BaseModel):
    """What the strategy did: its name, the answer classes with votes and scores."""

    strategy: str
    n: int
    verifier: str | None
    answer: str | None
    classes: list[ClassOut]
    budget_limited: bool
    calls: int
    flops: float
    seconds: float
    notes: list[str]
    traces: list[TraceOut] | None = None
    tree: dict[str, Any] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    system_fingerprint: str
    ttscale: TtscaleOut


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: UsageOut
    system_fingerprint: str
    ttscale: TtscaleOut


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    in_flight: int
    queued: int
