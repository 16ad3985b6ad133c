"""How many different answers a search ends with, against as many independent samples.

Step-level beam search keeps the N/M best partial answers each round, so every branch it ends
with may descend from one early step the verifier liked; if that step is wrong, no vote can
recover. This reads the search trees of a ``ttscale eval`` run (beam, DVTS, MCTS, AB-MCTS,
RSA) and, per strategy and n, counts the final candidates' distinct answers and how often one of
them is right (coverage), next to the same counts over the first n independent samples of
the same questions (from ``--samples``) and majority voting over them.

    python bench/search_diversity.py runs/gsm8k-search --samples runs/gsm8k-test-0-39

Final candidates: for beam and DVTS the leaves not pruned (the branches kept to the end);
for MCTS and AB-MCTS every node, since each node there is a whole answer and all of them
are voted; for RSA the members of the last population (the first population is n independent
samples, and each aggregation round may narrow it). For RSA it also prints every round's
population: distinct answers and coverage, round by round.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ttscale.answers import equivalent, extract_answer, group_answers
from ttscale.evaluation.runs.records import QuestionRecord, load_records

WHOLE_ANSWER_NODES = ("mcts", "ab_mcts")
STEP_SEARCH = ("beam", "dvts")
POPULATIONS = ("rsa",)


def nodes(tree: dict[str, Any], path: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every node below the root with the text from the root to it (steps joined by a blank
    line, the default step delimiter; only the last step's answer is read)."""
    for child in tree.get("children", []):
        text = f"{path}\n\n{child.get('text', '')}" if path else child.get("text", "")
        yield child, text
        yield from nodes(child, text)


def final_answers(label: str, tree: dict[str, Any]) -> list[str | None]:
    """The answers of a search's final candidates (see the module's docstring).

    Example:
        >>> t = {"children": [{"text": "a \\\\boxed{1}", "pruned": True},
        ...                   {"text": "b ", "children": [{"text": "\\\\boxed{2}"}]}]}
        >>> final_answers("beam:width=2, n=2, seed=0", t)
        ['2']
        >>> final_answers("ab_mcts, n=2, seed=0", {"children": [{"text": "\\\\boxed{3}"}]})
        ['3']
        >>> box = lambda a: {"text": "\\\\boxed{%s}" % a}
        >>> rounds = [{"round": 0, "children": [box(4), box(5)]},
        ...           {"round": 1, "children": [box(5), box(5)]}]
        >>> final_answers("rsa:k=2,rounds=1, n=2, seed=0", {"children": rounds})
        ['5', '5']
    """
    name = label.split(",")[0].split(":")[0]
    if name in POPULATIONS:
        pops: list[dict[str, Any]] = tree.get("children", [])
        last = max(pops, key=lambda r: int(r.get("round", 0)), default={})
        return [extract_answer(m.get("text", "")) for m in last.get("children", [])]
    if name in WHOLE_ANSWER_NODES:
        return [extract_answer(n.get("text", "")) for n, _ in nodes(tree)]
    return [extract_answer(text) for n, text in nodes(tree)
            if not n.get("children") and not n.get("pruned")]


def covers(answers: Sequence[str | None], gold: str) -> bool:
    """Whether any of ``answers`` equals ``gold``."""
    return any(a is not None and equivalent(a, gold) for a in answers)


def majority_right(answers: Sequence[str | None], gold: str) -> float:
    """Majority voting's expected accuracy over ``answers`` (ties split evenly)."""
    groups = group_answers(answers)
    if not groups:
        return 0.0
    top = max(len(g) for g in groups)
    best = [g for g in groups if len(g) == top]
    return sum(equivalent(answers[g[0]] or "", gold) for g in best) / len(best)


def summarise(records: Sequence[QuestionRecord], samples: dict[str, QuestionRecord]
              ) -> list[dict[str, Any]]:
    """Per (strategy, n): questions, mean distinct final answers, coverage, and the same for
    the first n samples with majority voting's accuracy over them."""
    per: dict[tuple[str, int], list[tuple[int, bool, int, bool, float]]] = defaultdict(list)
    for r in records:
        s = samples.get(r.id)
        for t in r.trees:
            label = t.strategy
            name = label.split(",")[0].split(":")[0]
            if name not in WHOLE_ANSWER_NODES + STEP_SEARCH + POPULATIONS or s is None:
                continue
            n = int(label.split("n=")[1].split(",")[0])
            if len(s.traces) < n:
                continue
            got = final_answers(label, t.tree)
            drawn = [x.answer for x in s.traces[:n]]
            per[(label.split(", seed")[0], n)].append((
                len(group_answers(got)), covers(got, r.gold), len(group_answers(drawn)),
                covers(drawn, r.gold), majority_right(drawn, r.gold)))
    rows = []
    for (label, n), vals in sorted(per.items()):
        q = len(vals)
        rows.append({"strategy": label, "n": n, "questions": q,
                     "distinct": sum(v[0] for v in vals) / q, "coverage": sum(v[1] for v in vals),
                     "samples_distinct": sum(v[2] for v in vals) / q,
                     "samples_coverage": sum(v[3] for v in vals),
                     "samples_majority": sum(v[4] for v in vals)})
    return rows


def population_rounds(records: Sequence[QuestionRecord]) -> list[dict[str, Any]]:
    """Per RSA label and round: questions, mean distinct answers in that round's population,
    how often one of them is right, and how often its majority is (ties split); shows whether
    aggregation narrows the population onto the right answer or away from it.

    Example:
        >>> from ttscale.evaluation.runs.store import TreeRow
        >>> box = lambda a: {"text": "\\\\boxed{%s}" % a}
        >>> tree = {"children": [{"round": 0, "children": [box(4), box(5)]},
        ...                      {"round": 1, "children": [box(4), box(4)]}]}
        >>> r = QuestionRecord("q", "?", "5", (), trees=(TreeRow(1, "q", "rsa, n=2", tree),))
        >>> [(x["round"], x["distinct"], x["coverage"], x["majority"])
        ...  for x in population_rounds([r])]
        [(0, 2.0, 1, 0.5), (1, 1.0, 0, 0.0)]
    """
    per: dict[tuple[str, int], list[tuple[int, bool, float]]] = defaultdict(list)
    for r in records:
        for t in r.trees:
            if t.strategy.split(",")[0].split(":")[0] not in POPULATIONS:
                continue
            for pop in t.tree.get("children", []):
                got = [extract_answer(m.get("text", "")) for m in pop.get("children", [])]
                per[(t.strategy.split(", seed")[0], int(pop.get("round", 0)))].append(
                    (len(group_answers(got)), covers(got, r.gold), majority_right(got, r.gold)))
    return [{"strategy": label, "round": rnd, "questions": len(v),
             "distinct": sum(x[0] for x in v) / len(v), "coverage": sum(x[1] for x in v),
             "majority": sum(x[2] for x in v)}
            for (label, rnd), v in sorted(per.items())]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--samples", type=Path, default=None,
                    help="the run holding the independent samples (default: RUN_DIR)")
    args = ap.parse_args()
    _, records = load_records(args.run_dir)
    _, sample_records = load_records(args.samples) if args.samples else (None, records)
    rows = summarise(records, {r.id: r for r in sample_records})
    if not rows:
        print(f"{args.run_dir} has no search trees of beam, DVTS, MCTS, AB-MCTS or RSA with "
              "enough samples beside them", file=sys.stderr)
        return 2
    print(f"{'search':24} {'n':>3} {'qs':>3} {'distinct':>8} {'covered':>8} | "
          f"{'samples: distinct':>17} {'covered':>8} {'majority right':>14}")
    for r in rows:
        print(f"{r['strategy']:24} {r['n']:3} {r['questions']:3} {r['distinct']:8.1f} "
              f"{r['coverage']:8} | {r['samples_distinct']:17.1f} {r['samples_coverage']:8} "
              f"{r['samples_majority']:14.1f}")
    pops = population_rounds(records)
    if pops:
        print(f"\n{'RSA population':24} {'round':>5} {'qs':>3} {'distinct':>8} {'covered':>8} "
              f"{'majority right':>14}")
        for p in pops:
            print(f"{p['strategy']:24} {p['round']:5} {p['questions']:3} {p['distinct']:8.1f} "
                  f"{p['coverage']:8} {p['majority']:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
