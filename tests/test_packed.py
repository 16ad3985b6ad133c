"""Log-probabilities packed straight from the decoder: the same samples, the same stored
text as the unpacked path, and rows written by earlier versions still read."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttscale.backends.openai import OpenAIBackend
from ttscale.backends.openai_async import submit
from ttscale.backends.openai_decode import ShapeError, decode_answer
from ttscale.backends.packed import PackedGeneration, pack, summary_json, unpack
from ttscale.evaluation.runs.store import NewGeneration, Store
from ttscale.params import SamplingParams
from ttscale.types import Chat, Generation, TokenLogprob

STANDIN = Path(__file__).resolve().parent.parent / "bench" / "standin_server.py"


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--tokens", "50"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    yield json.loads(proc.stdout.readline())["url"]
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("top_k", [0, 3])
def test_packed_samples_equal_the_unpacked_ones_from_a_real_server(standin: str,
                                                                   top_k: int) -> None:
    params = SamplingParams(n=4, seed=7, logprobs=True, top_logprobs=top_k, max_tokens=64)
    prompt = Chat.user("2+2?")
    with OpenAIBackend(base_url=standin, concurrency=64) as be:
        plain = be.generate([prompt], params).generations[0]
        packed = submit(be, [prompt], params, packed=True).result(30).generations[0]
    assert len(plain) == len(packed) == 4
    for p, q in zip(plain, packed, strict=True):
        assert isinstance(q, PackedGeneration) and q.packed is not None and q.logprobs is None
        assert p.logprobs is not None and len(p.logprobs) == 50
        assert q.packed.unpack() == p.logprobs
        assert (q.text, q.completion_tokens, q.seed, q.hit_stop) == (
            p.text, p.completion_tokens, p.seed, p.hit_stop)
        # the store writes the same text and summary either way
        assert q.packed.text == pack(p.logprobs).text
        assert q.packed.summary() == summary_json(p.logprobs)


def test_a_packed_generation_is_stored_as_an_unpacked_one(tmp_path: Path) -> None:
    tokens = (TokenLogprob("4", -0.25, (("4", -0.25), ("5", -1.5))), TokenLogprob(".", -1.0))
    params = SamplingParams(logprobs=True, top_logprobs=2)
    plain = Generation("4.", 10, 2, "stop", tokens, 0)
    packed = PackedGeneration("4.", 10, 2, "stop", None, 1, None, pack(tokens))
    with Store.open(tmp_path, {}) as store:
        store.put_generations([NewGeneration("m", "q", params, 0, plain, "4"),
                               NewGeneration("m", "q", params, 1, packed, "4")])
        got = store.get_generations("m", "q", params, 0, 2)
    assert got[0].generation.logprobs == got[1].generation.logprobs == tokens
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        rows = db.execute("SELECT logprobs, token_logprobs FROM generations ORDER BY 1").fetchall()
    assert rows[0] == rows[1]


def test_rows_written_by_the_standard_encoder_still_read() -> None:
    # what earlier versions wrote: Python's json, -Infinity and integer logprobs included
    old = json.dumps([["a", float("-inf"), [["a", float("-inf")], ["b", 0]]], ["c", -1e-05, []]],
                     separators=(",", ":"))
    assert unpack(old) == (TokenLogprob("a", float("-inf"), (("a", float("-inf")), ("b", 0.0))),
                           TokenLogprob("c", -1e-05))
    # an infinite logprob is packed by the standard encoder, so it reads back as itself
    tokens = (TokenLogprob("x", float("-inf")),)
    assert unpack(pack(tokens).text) == tokens


def test_an_answer_outside_the_typed_shape_is_read_field_by_field() -> None:
    raw = json.dumps({"choices": [{"index": 0, "text": 5, "finish_reason": "length",
                                   "logprobs": {"tokens": ["5"], "token_logprobs": [None]}}]})
    choices, usage = decode_answer(raw.encode(), chat=False, top_k=0, packed=True)
    assert (choices[0].text, choices[0].finish_reason, choices[0].hit_stop) == ("5", "length",
                                                                                  False)
    assert choices[0].packed is not None and choices[0].packed.unpack() == (
        TokenLogprob("5", 0.0),)
    assert usage == {}
    with pytest.raises(ShapeError, match="no choices"):
        decode_answer(b'{"choices": []}', chat=True, top_k=0)
    with pytest.raises(ShapeError, match="not JSON"):
        decode_answer(b"<html>", chat=True, top_k=0)
