from __future__ import annotations

import pytest

from ttscale.budget import Accountant, Budget
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.types import Usage


def test_usage_sums_every_field() -> None:
    u = Usage.of(10, 5, params_count=100, seconds=1.0) + Usage.of(2, 3, 100, 0.5)
    assert (u.prompt_tokens, u.completion_tokens, u.calls, u.total_tokens) == (12, 8, 2, 20)
    assert u.flops == 2 * 100 * 20
    assert u.seconds == pytest.approx(1.5)


def test_affordable_samples_counts_worst_case() -> None:
    acc = Accountant(Budget(max_tokens=1000))
    assert acc.affordable_samples(prompt_tokens=50, max_tokens=200, want=8, params_count=0) == 4
    acc.charge(Usage(prompt_tokens=600, completion_tokens=0, calls=1))
    assert acc.affordable_samples(prompt_tokens=50, max_tokens=200, want=8, params_count=0) == 1


def test_flops_and_calls_caps() -> None:
    acc = Accountant(Budget(max_flops=2 * 10 * 300 * 3))
    assert acc.affordable_samples(prompt_tokens=100, max_tokens=200, want=8, params_count=10) == 3
    acc2 = Accountant(Budget(max_calls=1))
    acc2.charge(Usage(calls=1))
    assert acc2.affordable_samples(prompt_tokens=1, max_tokens=1, want=8, params_count=0) == 0


def test_seconds_cap_refuses_once_spent() -> None:
    acc = Accountant(Budget(max_seconds=0.001))
    acc.started -= 1.0
    assert acc.affordable_samples(prompt_tokens=1, max_tokens=1, want=3, params_count=0) == 0


@pytest.mark.parametrize("field", ["max_tokens", "max_flops", "max_calls", "max_seconds"])
@pytest.mark.parametrize("value", [0, -1.5, float("nan"), "100", True])
def test_budget_rejects_what_is_not_a_positive_number(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"budget {field} must be a positive number, got"):
        Budget(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": 0}, "n must be a positive"), ({"temperature": -1}, "temperature must be >= 0, got -1"),
     ({"max_tokens": 0}, "max_tokens"), ({"top_p": 0}, "top_p"), ({"seed": -2}, "seed"),
     ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
     ({"n": 2.5}, "n must be a whole number, got 2.5"), ({"seed": None}, "seed must be a whole"),
     ({"temperature": "0.7"}, "temperature must be a number, got '0.7'"),
     ({"top_p": float("nan")}, "top_p")],
)
def test_sampling_params_validate(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**kwargs)  # type: ignore[arg-type]
