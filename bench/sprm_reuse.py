"""What the SPRM verifier pays to re-score a growing partial answer, with and without reuse.

A step-level search scores every open branch once per round, and each round's partial answer
is the previous one plus a step. This replays that on stored traces of a ``ttscale eval``
run: for each of ``--questions`` questions and ``--traces`` of its traces, the partial
answers ending after step 1, 2, ... are scored in order (as one branch across rounds), once
by a feature model that keeps what it ran (``reuse_tokens``, the default) and once by one
that keeps nothing, alternating which goes first. Both are charged the same tokens (prompt +
partial answer every round); the model with reuse runs only what follows the longest prefix
it already ran. Prints tokens charged and run, and seconds, per side; features must match.

    python bench/sprm_reuse.py runs/gsm8k-test-0-39 --layer 14 --questions 4 --traces 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from ttscale.evaluation.runs.records import load_records
from ttscale.evaluation.sprm import run_model
from ttscale.verifiers.sprm.features import TorchFeatures, chat_text
from ttscale.verifiers.sprm.prefix import PrefixStore
from ttscale.verifiers.steps import DEFAULT_DELIMITER, split_steps


def rounds(text: str, delimiter: str) -> list[str]:
    """The partial answers a search would score: the first k steps, each with its delimiter
    (as a step-level generation stops at it), then the whole text."""
    steps = split_steps(text, delimiter)
    return [delimiter.join(steps[:k]) + delimiter for k in range(1, len(steps))] + [text]


def score_all(feats: TorchFeatures, work: list[tuple[str, list[str]]], delimiter: str,
              ) -> tuple[int, int, float, list[Any]]:
    """Score every round of every branch in order: tokens charged, tokens run, seconds, the
    last round's features per branch."""
    charged = evaluated = 0
    last = []
    start = time.perf_counter()
    for prompt, partials in work:
        for partial in partials:
            got = feats.extract(prompt, [partial], delimiter)[0]
            charged += got.tokens
            evaluated += got.evaluated
        last.append(got.vectors)
    return charged, evaluated, time.perf_counter() - start, last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a ttscale eval run directory with stored traces")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--traces", type=int, default=2, help="branches per question")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    settings, records = load_records(args.run)
    name, path, _sha = run_model(settings)
    feats = TorchFeatures.load(str(path), args.layer, threads=args.threads)
    delimiter = DEFAULT_DELIMITER
    work = []
    for rec in records[: args.questions]:
        prompt = chat_text(feats.tokenizer, rec.question)
        for t in rec.traces[: args.traces]:
            work.append((prompt, rounds(t.text, delimiter)))
    print(f"{name}, layer {feats.layer} of {feats.n_layers}: {len(work)} branches, "
          f"{sum(len(p) for _q, p in work)} scoring rounds")
    sides = ("reuse", "no reuse")
    charged = dict.fromkeys(sides, 0)
    run = dict.fromkeys(sides, 0)
    seconds = dict.fromkeys(sides, 0.0)
    outputs: dict[str, list[Any]] = {}
    for turn in range(2):  # alternate which side goes first
        for side in sides if turn == 0 else sides[::-1]:
            feats.prefixes = PrefixStore(16_384 if side == "reuse" else 0)
            c, r, s, outputs[side] = score_all(feats, work, delimiter)
            charged[side] += c
            run[side] += r
            seconds[side] += s
    for a, b in zip(outputs["reuse"], outputs["no reuse"], strict=True):
        np.testing.assert_allclose(a, b, atol=5e-3, rtol=1e-3)
    print("side      | tokens charged | tokens run | seconds (2 passes)")
    for side in sides:
        print(f"{side:<9} | {charged[side]:>14,} | {run[side]:>10,} | {seconds[side]:>8.1f}")
    print(f"reuse runs {run['reuse'] / charged['reuse']:.1%} of the tokens charged; its time "
          f"is {seconds['reuse'] / seconds['no reuse']:.2f} of no reuse's; last-round "
          "features agree")


if __name__ == "__main__":
    main()
