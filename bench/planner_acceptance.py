"""The planner's acceptance figures, side by side, from stored runs only (no generation).

    ttscale eval restore bench/runs/gsm8k-test-0-39.jsonl --out runs/gsm8k-test-0-39
    for f in ../shared/samples/aime2024/*.jsonl; do m=$(basename $f .jsonl)
        ttscale eval import-samples $f --format boinf --out runs/aime-$m; done
    python bench/planner_acceptance.py [--orders 32] [--aime 'runs/aime-*']

GSM8K test 0-99 (default model, SPRM layer 14 priced at half a policy token, as a live solve
charges it): auto cross-fitted over 10 folds of questions against majority@n,
weighted-SPRM@n, adaptive majority (the best of a rule sweep at each cost, picked in
hindsight) and the upper envelope of the fixed-n strategies interpolated in log FLOPs, with
paired 95% intervals against both. AIME 2024 (11 models, no verifier): auto at 10% of
majority@80's tokens. Effort levels: each fold's three levels chosen from its training
questions' held-out figures (as ``ttscale plan fit`` chooses the shipped plan's), replayed
cross-fitted. Writes bench/results/planner.json
and docs/planner-gsm8k.png (curves and where auto's tokens went).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import random
from itertools import pairwise
from pathlib import Path

import numpy as np

from ttscale.aggregation.brevity import brevity_winner
from ttscale.aggregation.stopping import BayesFactorRule
from ttscale.evaluation.replay.adaptive import Outcome as ReplayOutcome
from ttscale.evaluation.replay.adaptive import orders_for, replay_order
from ttscale.evaluation.replay.auto import calibration_questions, run_costs
from ttscale.evaluation.replay.metrics import (
    Prepared,
    QuestionSamples,
    mean_ci,
    prepare,
    replay,
)
from ttscale.evaluation.runs.records import load_records, question_samples
from ttscale.planner.calibration import Costs, default_stages, trajectories
from ttscale.planner.crossfit import HeldOut, cross_fit
from ttscale.planner.plan import load_plan, shipped_plan

MULTIPLES = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0, 12.0, 16.0)


def fixed(qs: list[QuestionSamples], ns: list[int], aggregate: str, pf: float, vf: float,
          resamples: int, seed: int) -> dict[int, tuple[np.ndarray, float, float]]:
    """Per n: per-question accuracy, mean FLOPs and mean tokens per question."""
    out = {}
    rng = random.Random(seed)
    for n in ns:
        accs, flops, toks = [], [], []
        for q in qs:
            p = prepare(q.samples, q.gold)
            k = min(n, len(p.classes))
            accs.append(replay(p, k, resamples, rng, aggregate)[0])
            t = float(np.mean(p.tokens)) * k
            v = float(np.mean(p.verify_tokens)) * k if aggregate == "weighted" else 0.0
            flops.append(t * pf + v * vf)
            toks.append(t + v)
        out[n] = (np.array(accs), float(np.mean(flops)), float(np.mean(toks)))
    return out


def adaptive_rules(qs: list[QuestionSamples], pf: float, orders: int, seed: int
                   ) -> list[tuple[float, np.ndarray, str]]:
    """Adaptive majority (Bayes-factor rule) over a sweep of thresholds and n_max: per rule
    its mean FLOPs per question and per-question accuracy over ``orders`` orders."""
    out = []
    for th in (2.5, 5, 8, 10, 20, 50):
        for nmax in (2, 4, 8, 16):
            rule = BayesFactorRule(threshold=th, n_max=nmax)
            rng = random.Random(seed)
            accs, toks = [], []
            for q in qs:
                p = prepare(q.samples, q.gold)
                outs = [replay_order(p, rule, o) for o in orders_for(len(p.classes), orders,
                                                                     rng)]
                accs.append(float(np.mean([o.correct for o in outs])))
                toks.append(float(np.mean([o.tokens for o in outs])))
            out.append((float(np.mean(toks)) * pf, np.array(accs), f"bf{th}/{nmax}"))
    return out


def interpolate(curve: dict[int, tuple[np.ndarray, float, float]], x: float, axis: int
                ) -> np.ndarray | None:
    """Per-question accuracy interpolated in log cost at ``x`` (None outside the curve)."""
    pts = sorted(((c[0], float(c[axis])) for c in curve.values()), key=lambda c: c[1])
    for (a1, lo), (a2, hi) in pairwise(pts):
        if lo <= x <= hi:
            f = math.log(x / lo) / math.log(hi / lo) if hi > lo else 0.0
            return np.asarray(a1 + f * (a2 - a1))
    if pts and abs(x - pts[0][1]) < 1e-9 * x:
        return pts[0][0]
    return None


def envelope(curves: dict[str, dict[int, tuple[np.ndarray, float, float]]], x: float,
             axis: int = 1) -> tuple[str, np.ndarray] | None:
    best: tuple[str, np.ndarray] | None = None
    for name, c in curves.items():
        a = interpolate(c, x, axis)
        if a is not None and (best is None or a.mean() > best[1].mean()):
            best = (name, a)
    return best


def gsm8k(run: str, orders: int, seed: int) -> dict[str, object]:
    _, recs = load_records(run, "sprm")
    costs = run_costs(recs, verifier_fraction=0.5)
    pf, vf = costs.policy_flops, costs.verifier_flops
    qs = question_samples(recs)
    cal = calibration_questions(recs)
    worth_f = float(np.mean([np.mean(q.tokens) for q in cal])) * pf
    worth_t = worth_f / pf
    curves = {"majority": fixed(qs, [1, 2, 3, 4, 5, 6, 7, 8, 12, 16], "majority", pf, vf,
                                200, seed),
              "weighted-SPRM": fixed(qs, [1, 2, 3, 4, 5, 6, 7, 8, 12, 16], "weighted", pf,
                                     vf, 200, seed)}
    stages = default_stages(16)
    tr = trajectories(cal, stages, orders=orders, seed=seed)
    held = cross_fit(cal, costs, [m * worth_f for m in MULTIPLES], unit="flops",
                     stages=stages, folds=10, orders=orders, seed=seed, bins=3, tr=tr)
    held_tok = cross_fit(cal, costs, [m * worth_t for m in MULTIPLES], unit="tokens",
                         stages=stages, folds=10, orders=orders, seed=seed, bins=3, tr=tr)
    per_rule = adaptive_rules(qs, pf, orders, seed)
    adaptive = sorted((f, float(a.mean()), n) for f, a, n in per_rule)
    best_adaptive = [a for i, a in enumerate(adaptive)
                     if a[1] >= max(b[1] for b in adaptive[: i + 1]) - 1e-12]
    rule_acc = {n: a for _f, a, n in per_rule}
    rows = []
    print("\nGSM8K test 0-99, auto (FLOPs plan) against the fixed strategies at matched FLOPs")
    print(f"{'budget':>6} {'auto acc':>9} {'FLOPs/q (samples)':>18} {'tokens':>7} "
          f"{'envelope':>18} {'auto - env (95% CI)':>22} {'adaptive best':>14} "
          f"{'auto - adaptive (95% CI)':>26}")
    for m, h in zip(MULTIPLES, held, strict=True):
        acc = np.array(h.accuracy)
        x = h.mean("flops")
        env = envelope(curves, x)
        ada = [a for a in best_adaptive if a[0] <= x]
        ada_acc = ada[-1][1] if ada else None
        # the paired interval against the rule that is best at <= auto's cost (picked in
        # hindsight, on these questions: it favours adaptive majority)
        vs_ada = mean_ci(list(acc - rule_acc[ada[-1][2]])) if ada else None
        row: dict[str, object] = {"budget_samples": m, "accuracy": float(acc.mean()),
                                  "flops": x, "samples_worth": x / worth_f,
                                  "tokens": h.mean("tokens"), "bin_tokens": h.bin_tokens,
                                  "adaptive_best_below": ada_acc,
                                  "adaptive_rule": ada[-1][2] if ada else None,
                                  "diff_adaptive": vs_ada}
        if env is not None:
            d = mean_ci(list(acc - env[1]))
            row.update(envelope=float(env[1].mean()), envelope_of=env[0], diff=d)
            shown = f"{env[1].mean():.1%} ({env[0]})"
            diff = f"{d[0]:+.1%} ({d[1]:+.1%}, {d[2]:+.1%})"
        else:
            shown, diff = "-", "-"
        dada = "-" if vs_ada is None else \
            f"{vs_ada[0]:+.1%} ({vs_ada[1]:+.1%}, {vs_ada[2]:+.1%})"
        print(f"{m:>6g} {acc.mean():>9.1%} {x:>11.3g} ({x / worth_f:4.2f}) "
              f"{h.mean('tokens'):>7.0f} {shown:>18} {diff:>22} "
              f"{'-' if ada_acc is None else f'{ada_acc:.1%}':>14} {dada:>26}")
        rows.append(row)
    inside = [r for r in rows if 2.0 <= float(r["samples_worth"]) <= 6.0  # type: ignore[arg-type]
              and "diff" in r]
    if inside:
        low = min(inside, key=lambda r: r["diff"][0])  # type: ignore[index]
        print(f"between 2 and 6 samples' worth spent ({len(inside)} budgets): auto - envelope "
              f">= {low['diff'][0]:+.1%} (at {low['samples_worth']:.2f} samples' worth)")  # type: ignore[index]
    tok_rows = [{"budget_samples": m, "accuracy": float(np.mean(h.accuracy)),
                 "tokens": h.mean("tokens"), "flops": h.mean("flops")}
                for m, h in zip(MULTIPLES, held_tok, strict=True)]
    print("\nthe same plan fitted in tokens: "
          + ", ".join(f"{r['budget_samples']:g}: {r['accuracy']:.1%} at {r['tokens']:,.0f}"
                      for r in tok_rows))
    print("adaptive majority (bayes_factor threshold/n_max), best at each cost: "
          + ", ".join(f"{n} {a:.1%} at {f / worth_f:.2f}" for f, a, n in best_adaptive))
    for name, c in curves.items():
        print(f"{name}: " + ", ".join(f"@{n} {a.mean():.1%} at {f / worth_f:.2f}"
                                      for n, (a, f, _t) in sorted(c.items()) if n <= 8))
    # questions 0-39: 16 samples each
    first = [i for i, q in enumerate(cal) if q.n >= 16]
    top16 = {k: float(curves[k][16][0][first].mean()) for k in curves}
    best16 = max(top16, key=lambda k: top16[k])
    f16 = float(np.mean([np.mean(cal[i].tokens) * 16 * pf
                         + (np.mean(cal[i].verify_tokens) * 16 * vf
                            if best16 == "weighted-SPRM" else 0.0) for i in first]))
    reach = [(h.mean("flops"), float(np.mean([h.accuracy[i] for i in first])),
              float(np.mean([h.costs["flops"][i] for i in first]))) for h in held]
    hit = [r for r in reach if r[1] >= top16[best16] - 1e-9]
    print(f"\nquestions 0-39: majority@16 {top16['majority']:.1%}, weighted-SPRM@16 "
          f"{top16['weighted-SPRM']:.1%}; auto "
          + (f"reaches {top16[best16]:.1%} with {min(r[2] for r in hit) / f16:.0%} of its "
             "FLOPs" if hit else f"does not reach {top16[best16]:.1%}: at best "
             f"{max(r[1] for r in reach):.1%}"))
    acc1 = float(np.mean([replay(prepare(q.samples, q.gold), 1, 200, random.Random(0))[0]
                          for q in qs]))
    pass_n = float(np.mean([any(p.correct[c] for c in p.classes if c >= 0)
                            for p in (prepare(q.samples, q.gold) for q in qs)]))
    top = max(rows, key=lambda r: float(r["accuracy"]))  # type: ignore[arg-type]
    share = (float(top["accuracy"]) - acc1) / (pass_n - acc1)  # type: ignore[arg-type]
    print(f"oracle gap closed at the top budget: ({top['accuracy']:.3f} - {acc1:.3f}) / "
          f"({pass_n:.3f} - {acc1:.3f}) = {share:.1%}")
    return {"rows": rows, "tokens_rows": tok_rows, "adaptive": best_adaptive,
            "first40": {"top16": top16, "reach": reach}, "oracle_share": share,
            "curves": {k: {n: (float(a.mean()), f) for n, (a, f, _t) in c.items()}
                       for k, c in curves.items()}, "worth_flops": worth_f,
            "held": held}


def efforts(run: str, orders: int, seed: int, g: dict[str, object]) -> list[dict[str, object]]:
    _, recs = load_records(run, "sprm")
    costs = run_costs(recs, verifier_fraction=0.5)
    cal = calibration_questions(recs)
    levels = ("low", "medium", "high")
    # each fold's levels chosen from its training questions' held-out figures only
    held = cross_fit(cal, costs, list(levels), unit="flops", stages=default_stages(16),
                     folds=10, orders=orders, seed=seed, bins=3)
    maj = g["curves"]["majority"]  # type: ignore[index]
    out = []
    path = shipped_plan(json.loads(Path(str(next(iter(
        glob.glob("src/ttscale/plans/*.plan.json"))))).read_text())["model_sha256"])
    if path is not None:
        plan = load_plan(path)
        worth = float(g["worth_flops"])  # type: ignore[arg-type]
        print("\nthe shipped plan's effort budgets (samples' worth): " + ", ".join(
            f"{k} {v / worth:.2f}" for k, v in plan.efforts.items()))
    print("\neffort levels (chosen per fold from its training questions, cross-fitted):")
    for name, h in zip(levels, held, strict=True):
        x = h.mean("flops")
        pts = sorted(maj.values(), key=lambda p: p[1])
        at = None
        for (a1, f1), (a2, f2) in pairwise(pts):
            if f1 <= x <= f2:
                at = a1 + math.log(x / f1) / math.log(f2 / f1) * (a2 - a1)
        acc = float(np.mean(h.accuracy))
        worth = float(g["worth_flops"])  # type: ignore[arg-type]
        print(f"  {name}: {acc:.1%} at {h.mean('tokens'):,.0f} tokens, {x:.3g} FLOPs "
              f"({x / worth:.2f} samples' worth); "
              f"majority at the same FLOPs {'-' if at is None else f'{at:.1%}'}; "
              f"majority@8 {maj[8][0]:.1%}")
        out.append({"effort": name, "accuracy": acc, "tokens": h.mean("tokens"),
                    "flops": x, "samples_worth": x / worth, "majority_same_flops": at,
                    "majority8": maj[8][0]})
    return out


def aime(pattern: str, orders: int, seed: int) -> list[dict[str, object]]:
    out = []
    print("\nAIME 2024, auto at 10% of majority@80's tokens (allocation only, cross-fitted):")
    for d in sorted(glob.glob(pattern)):
        _, recs = load_records(d)
        cal = calibration_questions(recs)
        qs = question_samples(recs)
        maj = float(np.mean([replay(prepare(q.samples, q.gold), len(q.samples), 1,
                                    random.Random(0))[0] for q in qs]))
        full = float(np.mean([sum(q.tokens) for q in cal]))
        h: HeldOut = cross_fit(cal, Costs(), [0.1 * full], unit="tokens",
                               stages=default_stages(80), folds=10, orders=orders,
                               seed=seed, bins=1)[0]
        acc = float(np.mean(h.accuracy))
        rel = acc / maj if maj else 1.0
        out.append({"run": d, "majority80": maj, "accuracy": acc, "relative": rel,
                    "tokens_share": h.mean("tokens") / full})
        print(f"  {Path(d).name}: majority@80 {maj:.3f}, auto {acc:.3f} ({rel:.1%}) at "
              f"{h.mean('tokens') / full:.1%} of the tokens")
    if out:
        print(f"  mean: {np.mean([o['relative'] for o in out]):.2%} of majority@80's accuracy "
              f"at {np.mean([o['tokens_share'] for o in out]):.1%} of its tokens")
    return out


def aime_hindsight(pattern: str, orders: int, seed: int, share: float = 0.10
                   ) -> dict[str, object]:
    """The ceiling auto is measured against: the one adaptive-majority rule (Bayes-factor
    threshold, n_max, and whether it answers by majority or by the brevity-weighted vote)
    that does best over all the models at a mean of ``share`` of majority@80's tokens,
    picked in hindsight on these very questions. The imported runs record no prompt, so a
    sample's tokens are its length."""
    table: dict[tuple[float, int, str], list[tuple[float, float]]] = {}
    for d in sorted(glob.glob(pattern)):
        _, recs = load_records(d)
        ps = [prepare(q.samples, q.gold) for q in question_samples(recs)]
        maj = float(np.mean([replay(p, len(p.classes), 1, random.Random(0))[0] for p in ps]))
        full = float(np.mean([sum(p.tokens) for p in ps]))
        rng = random.Random(seed)
        drawn = [orders_for(len(p.classes), orders, rng) for p in ps]
        for th in (3.0, 5.0, 8.0, 12.0, 20.0, 35.0):
            for nmax in (16, 24, 32, 48, 80):
                rule = BayesFactorRule(threshold=th, n_max=nmax)
                outs = [[(replay_order(p, rule, o), o) for o in os]
                        for p, os in zip(ps, drawn, strict=True)]
                tok = float(np.mean([np.mean([o.tokens for o, _ in q]) for q in outs]))
                for vote in ("majority", "brevity"):
                    acc = float(np.mean([np.mean([_right(p, o, order, vote)
                                                  for o, order in q])
                                         for p, q in zip(ps, outs, strict=True)]))
                    table.setdefault((th, nmax, vote), []).append(
                        (acc / maj if maj else 1.0, tok / full))
    means = {k: (float(np.mean([r for r, _t in v])), float(np.mean([t for _r, t in v])))
             for k, v in table.items()}
    fits = {k: v for k, v in means.items() if v[1] <= share}
    if not fits:
        return {}
    out: dict[str, object] = {}
    for vote in ("majority", "brevity"):
        (th, nmax, _v), (rel, tok) = max(((k, v) for k, v in fits.items() if k[2] == vote),
                                         key=lambda kv: kv[1][0])
        print(f"  in hindsight, the best single rule answering by {vote} (bayes factor > "
              f"{th:g}, at most {nmax}) keeps {rel:.2%} at {tok:.1%} of the tokens")
        out[vote] = {"threshold": th, "n_max": nmax, "relative": rel, "tokens_share": tok}
    return out


def _right(p: Prepared, o: ReplayOutcome, order: list[int], vote: str) -> bool:
    """Whether the rule's stop, answered by ``vote``, is right."""
    if vote == "majority":
        return bool(o.correct)
    drawn = order[:o.drawn]
    winner = brevity_winner([p.classes[i] for i in drawn], [p.tokens[i] for i in drawn])
    return winner is not None and bool(p.correct[winner])


def plot(g: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worth = float(g["worth_flops"])  # type: ignore[arg-type]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in g["curves"].items():  # type: ignore[attr-defined]
        pts = sorted((f / worth, a) for n, (a, f) in c.items() if n <= 8)
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"{name}@n")
    ada = g["adaptive"]
    ax.plot([f / worth for f, _a, _n in ada], [a for _f, a, _n in ada], marker="s",  # type: ignore[attr-defined]
            label="adaptive majority (best rule)")
    rows = g["rows"]
    ax.plot([r["samples_worth"] for r in rows], [r["accuracy"] for r in rows],  # type: ignore[attr-defined]
            marker="*", markersize=10, label="auto (cross-fitted)")
    ax.set_xscale("log")
    ax.set_xlabel("mean FLOPs per question (samples' worth, policy + verifier)")
    ax.set_ylabel("accuracy, GSM8K test 0-99")
    ax.legend(fontsize=8)
    picks = [r for r in rows if r["budget_samples"] in (2.0, 4.0, 8.0)]  # type: ignore[attr-defined]
    width = 0.25
    for i, r in enumerate(picks):
        toks = [t or 0 for t in r["bin_tokens"]]
        bx.bar(np.arange(len(toks)) + i * width, toks, width,
               label=f"budget {r['budget_samples']:g} samples' worth")
    bx.set_xticks(np.arange(3) + width, ["hard", "medium", "easy"])
    bx.set_xlabel("predicted difficulty after the probe")
    bx.set_ylabel("mean tokens per question")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/gsm8k-test-0-39")
    ap.add_argument("--aime", default="runs/aime-*")
    ap.add_argument("--orders", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    g = gsm8k(args.run, args.orders, args.seed)
    e = efforts(args.run, args.orders, args.seed, g)
    a = aime(args.aime, args.orders, args.seed)
    ceiling = aime_hindsight(args.aime, 16, args.seed)
    plot(g, Path("docs/planner-gsm8k.png"))
    g.pop("held")
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/planner.json").write_text(json.dumps(
        {"gsm8k": g, "efforts": e, "aime": a, "aime_hindsight_rule": ceiling}, indent=1,
        default=float) + "\n")
    print("\nwrote bench/results/planner.json and docs/planner-gsm8k.png")


if __name__ == "__main__":
    main()
