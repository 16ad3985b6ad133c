"""A plan: what the ``auto`` strategy does after each probe state, fitted for one model and
verifier, kept as a small JSON file a person can read (no pickles).

Contents: the model's SHA-256 (a plan refuses another model), the verifier it was fitted with
(``None``: allocation of samples only), the budget currency it was fitted in (``flops``,
``tokens`` or ``seconds``), the stages (sample counts at which the policy decides), the
signals and one logistic predictor per track and stage (standardisation, coefficients, and the
edges that cut its predicted probability into difficulty bins), and the policy: one
*operating point* per price of compute ``lambda``, each a table ``[stage][bin] -> action``
for the unverified track ``U`` and the verified track ``V``, with its expected accuracy and
cost on the calibration questions. Actions: ``majority`` / ``weighted`` / ``brevity`` (answer
now, by votes, by summed verifier scores, or by votes weighted toward shorter samples:
:mod:`ttscale.aggregation.brevity`), ``verify`` (score the samples drawn so far: from ``U`` to
``V``), ``sample`` (draw up to the next stage). ``answer_u`` / ``answer_v`` say how to answer
when sampling cannot go on (the budget or the most samples reached). A point may instead be
a *race* (``race: [k, m]``): ``k`` samples start together and the first ``m`` to finish vote
(:mod:`ttscale.strategies.short`); its tables are unused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.files import output_file

PLAN_FORMAT = "ttscale-plan"
# version 2 added the ``brevity`` answer, version 3 races; older plans read unchanged, and a
# plan is written in the oldest version that holds it (Plan.format_version)
PLAN_VERSION = 3
ACTIONS = ("majority", "weighted", "verify", "sample", "brevity")
ANSWERS = ("majority", "weighted", "brevity")
CURRENCIES = ("flops", "tokens", "seconds")
PLANS_DIR = Path(__file__).resolve().parents[1] / "plans"
# Bayes-factor edges of the agreement axis: how settled the vote is. One axis is not
# enough: a question whose samples agree on a wrong answer and one whose samples scatter
# both predict "probably wrong", but only the second gains from more samples.
AGREEMENT_EDGES = (3.0, 6.0, 12.0, 24.0)
# How many standard errors (of a point's mean cost over calibration questions) a budget is
# checked above the mean: at 1, a third of AIME's 10% budget went unspent (27 training
# questions make the error large); at 0, GSM8K's held-out spend came out above its budget
# at one budget of nine. Half keeps the spend within the budget and spends most of it.
BUDGET_SE = 0.5
_FLAT = re.compile(r"\[\s*\n([^\[\]{}]*?)\n\s*\]")


def agreement_bin(bayes: float, edges: Sequence[float] = AGREEMENT_EDGES) -> int:
    """The agreement bin of a vote's Bayes factor (0: scattered).

    Example:
        >>> agreement_bin(2.05), agreement_bin(9.23), agreement_bin(100.0)
        (0, 2, 4)
    """
    return sum(bayes > e for e in edges)


@dataclass(frozen=True)
class Predictor:
    """A logistic model of ``P(the answer now is right)`` at one track and stage, and the
    edges cutting that probability into difficulty bins (bin 0 the hardest).

    Example:
        >>> p = Predictor("U", 0, ("a",), (0.0,), (1.0,), (2.0,), 0.0, (0.5,))
        >>> round(p.prob((1.0,)), 3), p.bin((1.0,)), p.bin((-1.0,))
        (0.881, 1, 0)
    """

    track: str
    stage: int
    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    edges: tuple[float, ...]

    def prob(self, x: Sequence[float]) -> float:
        z = self.intercept + sum(c * (v - m) / s for c, v, m, s in
                                 zip(self.coef, x, self.mean, self.scale, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def bin(self, x: Sequence[float]) -> int:
        p = self.prob(x)
        return sum(p > e for e in self.edges)


@dataclass(frozen=True)
class Point:
    """One operating point: the policy at price ``lam`` (accuracy per sample's worth of
    compute), or the agreement ``rule`` it writes as a table, and what it is expected to cost
    and win per question, measured on calibration questions it was not fitted on."""

    lam: float
    accuracy: float
    tokens: float
    flops: float
    seconds: float
    samples: float
    u: tuple[tuple[str, ...], ...]
    answer_u: tuple[tuple[str, ...], ...]
    v: tuple[tuple[str, ...], ...] = ()
    answer_v: tuple[tuple[str, ...], ...] = ()
    rule: str = ""  # an agreement rule (adaptive majority as a table); "" for a fitted policy
    # the standard error of the mean cost over calibration questions, relative to it: a
    # budget is checked against the cost BUDGET_SE standard errors up
    cost_rse: float = 0.0
    race: tuple[int, ...] = ()  # (k, m): k samples race, the first m to finish vote

    def cost(self, unit: str) -> float:
        return float(getattr(self, unit))

    def upper(self, unit: str) -> float:
        return self.cost(unit) * (1.0 + BUDGET_SE * self.cost_rse)


@dataclass(frozen=True)
class Plan:
    """A fitted plan; see the module docstring. Build with ``fit.fit_plan``, read with
    :func:`load_plan`."""

    model: str
    model_sha256: str | None
    verifier: str | None
    currency: str
    stages: tuple[int, ...]
    confidence: bool
    predictors: tuple[Predictor, ...]
    points: tuple[Point, ...]
    efforts: dict[str, float]
    costs: dict[str, float]
    signals: dict[str, Any] = field(default_factory=dict, hash=False)
    calibration: dict[str, Any] = field(default_factory=dict, hash=False)
    agreement_edges: tuple[float, ...] = AGREEMENT_EDGES
    version: int = PLAN_VERSION

    def cell(self, track: str, stage: int, x: Sequence[float], bayes: float) -> int:
        """The policy's cell of a probe: predicted-difficulty bin x agreement bin."""
        d = self.predictor(track, stage).bin(x)
        return d * (len(self.agreement_edges) + 1) + agreement_bin(bayes, self.agreement_edges)

    def predictor(self, track: str, stage: int) -> Predictor:
        for p in self.predictors:
            if p.track == track and p.stage == stage:
                return p
        raise ConfigError(f"the plan has no {track} predictor at stage {stage}: refit it")

    @property
    def probe_cost(self) -> dict[str, float]:
        """Mean cost of the probe (the first stage's samples) per currency."""
        k = self.stages[0]
        return {u: k * self.costs[f"sample_{u}"] for u in CURRENCIES}

    def select(self, budget: float, unit: str) -> Point:
        """The most accurate operating point whose expected mean cost in ``unit``
        (``BUDGET_SE`` standard errors up) is within ``budget``; a budget below the probe's
        cost is refused.

        Example:
            >>> plan = example_plan()
            >>> plan.select(250, "tokens").lam, plan.select(10_000, "tokens").lam
            (10.0, 0.01)
            >>> plan.select(50, "tokens")
            Traceback (most recent call last):
            ...
            ttscale.errors.ConfigError: a budget of 50 tokens is below the probe's cost (about \
200 tokens for 1 sample): ask for at least 200
        """
        if unit not in CURRENCIES:
            raise ConfigError(f"unknown budget unit {unit!r}: choose one of "
                              f"{', '.join(CURRENCIES)}")
        probe = self.probe_cost[unit]
        if budget < probe:
            raise ConfigError(
                f"a budget of {budget:.4g} {unit} is below the probe's cost (about {probe:.4g} "
                f"{unit} for {self.stages[0]} sample{'s' if self.stages[0] > 1 else ''}): ask "
                f"for at least {probe:.4g}")
        fits = [p for p in self.points if p.upper(unit) <= budget]
        if not fits:  # cheaper than every point: the cheapest answers after the probe
            return min(self.points, key=lambda p: p.cost(unit))
        return max(fits, key=lambda p: (p.accuracy, -p.cost(unit)))

    def effort_budget(self, effort: str) -> float:
        if effort not in self.efforts:
            raise ConfigError(f"unknown effort {effort!r}: choose one of "
                              f"{', '.join(self.efforts)}")
        return self.efforts[effort]

    def format_version(self) -> int:
        """The oldest plan format that holds this plan: 3 with a race point, else 2. A
        plan without races stays readable by a ttscale that knows no races (format 2,
        whose reader ignores the empty ``race`` fields).

        Example:
            >>> from dataclasses import replace
            >>> plan = example_plan()
            >>> plan.format_version()
            2
            >>> replace(plan, points=(replace(plan.points[0], race=(4, 2)),)).format_version()
            3
        """
        return 3 if any(p.race for p in self.points) else 2

    def to_json(self) -> str:
        out = asdict(self)
        out = {"format": PLAN_FORMAT, **out, "version": self.format_version()}
        text = json.dumps(out, indent=1, sort_keys=False)
        # a flat array (a policy table's row, a predictor's coefficients) on one line: the
        # file stays readable and a tenth of the size
        return _FLAT.sub(lambda m: "[" + " ".join(x.strip() for x in m[1].splitlines()) + "]",
                         text) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (through a temporary file, so a kill leaves the old one)."""
        path = output_file(path, "plan.json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path


def _tuples(rows: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(a) for a in row) for row in rows)


def plan_from_dict(data: Any, source: str = "the plan") -> Plan:
    """A plan from its JSON object, checked: a file that is not a plan, or one written by a
    newer ttscale, is refused with one sentence.

    Example:
        >>> plan_from_dict({"format": "something"}, "x.json")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: x.json is not a ttscale plan: fit one with ttscale plan fit
        >>> plan_from_dict({"format": "ttscale-plan", "version": 99}, "x.json")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: x.json is a plan of format version 99, newer than this \
ttscale reads (3): upgrade ttscale or refit the plan
    """
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{source} is not a ttscale plan: fit one with ttscale plan fit")
    version = data.get("version")
    if not isinstance(version, int) or version > PLAN_VERSION:
        raise ConfigError(f"{source} is a plan of format version {version}, newer than this "
                          f"ttscale reads ({PLAN_VERSION}): upgrade ttscale or refit the plan")
    try:
        preds = tuple(Predictor(p["track"], int(p["stage"]), tuple(p["names"]),
                                tuple(p["mean"]), tuple(p["scale"]), tuple(p["coef"]),
                                float(p["intercept"]), tuple(p["edges"]))
                      for p in data["predictors"])
        points = tuple(Point(float(p["lam"]), float(p["accuracy"]), float(p["tokens"]),
                             float(p["flops"]), float(p["seconds"]), float(p["samples"]),
                             _tuples(p["u"]), _tuples(p["answer_u"]), _tuples(p.get("v", ())),
                             _tuples(p.get("answer_v", ())), str(p.get("rule", "")),
                             float(p.get("cost_rse", 0.0)),
                             tuple(int(x) for x in p.get("race", ())))
                       for p in data["points"])
        plan = Plan(str(data["model"]), data.get("model_sha256"), data.get("verifier"),
                    str(data["currency"]), tuple(int(s) for s in data["stages"]),
                    bool(data.get("confidence", False)), preds, points,
                    {str(k): float(v) for k, v in data["efforts"].items()},
                    {str(k): float(v) for k, v in data["costs"].items()},
                    dict(data.get("signals", {})), dict(data.get("calibration", {})),
                    tuple(float(e) for e in data.get("agreement_edges", AGREEMENT_EDGES)),
                    version)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source} is not a valid ttscale plan ({exc!s}): refit it with "
                          "ttscale plan fit") from None
    for point in plan.points:
        if point.race and not (len(point.race) == 2 and 1 <= point.race[1] <= point.race[0]):
            raise ConfigError(f"{source} has a race {list(point.race)} that is not [k, m] "
                              "with 1 <= m <= k: refit it with ttscale plan fit")
        for table in (point.u, point.answer_u, point.v, point.answer_v):
            bad = {a for row in table for a in row if a not in ACTIONS}
            if bad:
                raise ConfigError(f"{source} names unknown actions {sorted(bad)}: refit it "
                                  "with ttscale plan fit")
    if not plan.points or not plan.stages:
        raise ConfigError(f"{source} has no policy: refit it with ttscale plan fit")
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file.

    Example:
        >>> load_plan("/nonexistent/plan.json")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: no plan file at /nonexistent/plan.json: fit one with \
ttscale plan fit
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no plan file at {path}: fit one with ttscale plan fit")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path} is not a ttscale plan: fit one with ttscale plan fit") \
            from None
    return plan_from_dict(data, str(path))


def check_model(plan: Plan, sha256: str | None, model: str, source: str = "the plan") -> None:
    """Refuse a plan fitted for another model, naming both SHA-256 prefixes.

    Example:
        >>> check_model(example_plan(), "b" * 64, "other")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: the plan was fitted for fake (SHA-256 aaaaaaaaaaaa...), \
not for other (SHA-256 bbbbbbbbbbbb...): fit a plan for other with ttscale plan fit
    """
    if plan.model_sha256 and sha256 and plan.model_sha256 != sha256:
        raise ConfigError(f"{source} was fitted for {plan.model} (SHA-256 "
                          f"{plan.model_sha256[:12]}...), not for {model} (SHA-256 "
                          f"{sha256[:12]}...): fit a plan for {model} with ttscale plan fit")


def shipped_plan(sha256: str | None, plans_dir: Path | None = None) -> Path | None:
    """The plan shipped with ttscale for the model with this SHA-256, or ``None``.

    Example:
        >>> shipped_plan("0" * 64) is None
        True
    """
    folder = plans_dir or PLANS_DIR
    if sha256 is None or not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.plan.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("model_sha256") == sha256:
            return path
    return None


def example_plan() -> Plan:
    """A tiny hand-made plan for examples and tests: a probe of one sample, then a second
    unless the probe was cut at ``max_tokens`` (one difficulty bin, five agreement bins).

    Example:
        >>> example_plan().stages
        (1, 2)
    """
    from ttscale.planner.signals import U_SIGNALS

    d = len(U_SIGNALS)
    pred = tuple(Predictor("U", s, U_SIGNALS, (0.0,) * d, (1.0,) * d, (0.0,) * d, 0.0, ())
                 for s in (0, 1))
    stop = (("majority",) * 5,) * 2
    go = (("sample",) * 5, ("majority",) * 5)
    return Plan("fake", "a" * 64, None, "tokens", (1, 2), False, pred, (
        Point(10.0, 0.5, 200.0, 2e8, 0.0, 1.0, stop, stop),
        Point(0.01, 0.6, 400.0, 4e8, 0.0, 2.0, go, stop)),
        {"low": 200.0, "medium": 400.0, "high": 400.0},
        {"sample_tokens": 200.0, "sample_flops": 2e8, "sample_seconds": 0.0,
         "verify_tokens": 0.0, "verify_flops": 0.0, "verify_seconds": 0.0})
