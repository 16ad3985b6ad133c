"""A plan in plain words: what it reads, what it expects, and what it does per predicted
difficulty at each budget (``ttscale plan show``)."""

from __future__ import annotations

from ttscale.planner.plan import ANSWERS, Plan, Point

WORDS = {"majority": "answer now by majority", "weighted": "answer now, weighted by the "
         "verifier", "verify": "have the verifier read the samples", "sample": "sample more",
         "brevity": "answer now by a vote weighted toward shorter samples"}
BY = {"majority": "majority", "weighted": "the verifier's weights",
      "brevity": "the brevity vote"}


def _bin_names(count: int) -> list[str]:
    if count == 1:
        return ["every question"]
    if count == 3:
        return ["hard", "medium", "easy"]
    return [f"bin {i}" + (" (hardest)" if i == 0 else " (easiest)" if i == count - 1 else "")
            for i in range(count)]


def _probe_actions(plan: Plan, point: Point) -> list[str]:
    """Per difficulty bin after the probe, the policy's first action (a single-sample probe
    sits in one agreement bin; a larger probe's actions vary with agreement: shown all)."""
    agree = len(plan.agreement_edges) + 1
    bins = len(plan.predictor("U", 0).edges) + 1
    names = _bin_names(bins)
    out = []
    for d in range(bins):
        row = point.u[0][d * agree:(d + 1) * agree]
        shown = sorted(set(row), key=row.index)
        last = max((s for s, stage in enumerate(point.u) for a in stage[d * agree:(d + 1)
                    * agree] if a == "sample"), default=-1)
        reach = plan.stages[min(last + 1, len(plan.stages) - 1)] if last >= 0 else \
            plan.stages[0]
        tables = (*point.u, *point.answer_u, *point.v, *point.answer_v)
        used = {a for stage in tables for a in stage[d * agree:(d + 1) * agree]}
        by = " or ".join(BY[a] for a in ANSWERS if a in used)
        out.append(f"{names[d]}: {' or '.join(WORDS[a] for a in shown)} (at most {reach} "
                   f"samples; answers by {by})")
    return out


def explain(plan: Plan, source: str = "the plan") -> str:
    """The plan as a few paragraphs of text.

    Example:
        >>> from ttscale.planner.plan import example_plan
        >>> print(explain(example_plan()).splitlines()[0])
        Plan for fake (SHA-256 aaaaaaaaaaaa...), no verifier (allocation of samples only).
    """
    sha = f"SHA-256 {plan.model_sha256[:12]}..." if plan.model_sha256 else "no SHA-256"
    verifier = (f"verifier {plan.verifier}" if plan.verifier
                else "no verifier (allocation of samples only)")
    lines = [f"Plan for {plan.model} ({sha}), {verifier}.",
             f"Budgets count {plan.currency}; one sample costs about "
             f"{plan.costs.get('sample_tokens', 0):,.0f} tokens"
             + (f" and verifying it about {plan.costs['verify_tokens']:,.0f}"
                if plan.verifier else "") + ".",
             f"It decides after {', '.join(map(str, plan.stages))} samples; "
             + ("the first sample is the probe" if plan.stages[0] == 1 else
                f"the first {plan.stages[0]} are the probe") + ", and every sample votes.", ""]
    u0 = plan.predictor("U", 0)
    ranked = sorted(zip(u0.names, u0.coef, strict=True), key=lambda x: -abs(x[1]))[:3]
    lines.append("Predicted difficulty after the probe: a logistic model of "
                 + ", ".join(f"{n} ({c:+.2f})" for n, c in ranked)
                 + f", cut into {len(u0.edges) + 1} bins; the vote's agreement (Bayes "
                 f"factor edges {', '.join(f'{e:g}' for e in plan.agreement_edges)}) is the "
                 "second axis of every state.")
    auroc = plan.signals.get(f"U@{plan.stages[1]}" if len(plan.stages) > 1 else "", {})
    if auroc:
        best = sorted(((k, v) for k, v in auroc.items() if v is not None),
                      key=lambda x: -x[1])[:4]
        lines.append(f"How well signals predict a right answer after {plan.stages[1]} "
                     "samples (AUROC): " + ", ".join(f"{k} {v:.2f}" for k, v in best) + ".")
    lines.append("")
    frontier = plan.calibration.get("frontier", [])
    if frontier:
        lines.append(f"Expected, cross-fitted over {plan.calibration.get('questions')} "
                     "questions (each played by a plan fitted without it):")
        for f in frontier:
            by_bin = ", ".join("-" if t is None else f"{t:,.0f}"
                               for t in f.get("tokens_by_bin", []))
            worth = "sample's" if f["budget_samples"] == 1 else "samples'"
            lines.append(f"  {f['budget_samples']:g} {worth} worth: {f['accuracy']:.1%} "
                         f"at {f['tokens']:,.0f} tokens a question ({f['samples']:.2f} "
                         f"samples); tokens by predicted difficulty, hardest first: "
                         f"{by_bin}")
        lines.append("")
    lines.append("Effort levels:")
    for effort, budget in plan.efforts.items():
        point = plan.select(budget, plan.currency)
        how = f"the agreement rule {point.rule}" if point.rule else "the fitted policy"
        if point.race:
            k, m = point.race
            lines.append(f"  {effort}: a mean budget of {budget:.4g} {plan.currency}: a race, "
                         f"{k} samples started together, the first {m} to finish vote (the "
                         f"rest are stopped); expects {point.accuracy:.1%} at "
                         f"{point.tokens:,.0f} tokens (held out).")
            continue
        lines.append(f"  {effort}: a mean budget of {budget:.4g} {plan.currency}: {how}, "
                     f"expects {point.accuracy:.1%} at {point.tokens:,.0f} tokens (held out). "
                     "After the probe:")
        lines += [f"    {a}" for a in _probe_actions(plan, point)]
    return "\n".join(lines)
