"""The training loop run in-process: statuses, budget, warmup, live noise scale."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from trainables import keys
from trainables.loop import TrialInputError, fetch_batch, run_trial, split_batch
from trainables.schedule import warmup_lr
from trainables.settings import Hyperparameters, TrialSettings

LINREG = {"dim": 16, "noise": 0.5, "n_train": 8192}


def settings(**overrides: Any) -> TrialSettings:
    base: dict[str, Any] = {
        "workload": "linear_regression",
        "workload_args": LINREG,
        "target_value": 0.2,
        "max_steps": 300,
        "eval_every": 10,
        "noise_every": 1,
    }
    return TrialSettings(**{**base, **overrides})


def run(s: TrialSettings, batch_size: int, lr: float, momentum: float = 0.0, warmup: int = 0):
    reports: list[dict[str, Any]] = []
    last = run_trial(s, Hyperparameters(batch_size, lr, momentum, warmup), reports.append)
    return last, reports


@pytest.mark.parametrize(
    ("step", "base", "warmup", "expected"),
    [(1, 1.0, 0, 1.0), (1, 1.0, 4, 0.25), (2, 0.8, 4, 0.4), (4, 1.0, 4, 1.0), (9, 1.0, 4, 1.0)],
)
def test_warmup_is_linear_then_constant(
    step: int, base: float, warmup: int, expected: float
) -> None:
    assert warmup_lr(step, base, warmup) == pytest.approx(expected)


def test_reached_at_an_evaluation_step_with_examples_b_times_s() -> None:
    last, reports = run(settings(), 64, 0.5)
    assert last[keys.TRIAL_STATUS] == keys.REACHED
    assert last[keys.STEPS_TO_TARGET] == last[keys.STEP]
    assert last[keys.STEP] % 10 == 0
    assert last[keys.EXAMPLES_TO_TARGET] == 64 * last[keys.STEP]
    assert last[keys.LOSS] <= 0.2 < reports[-2][keys.LOSS]
    assert [r[keys.STEP] for r in reports] == list(range(0, last[keys.STEP] + 1, 10))
    assert all(r[keys.TRIAL_STATUS] == keys.RUNNING for r in reports[:-1])


def test_exhausted_when_budget_runs_out() -> None:
    last, _ = run(settings(max_steps=25, target_value=0.0), 16, 0.01)
    assert last[keys.TRIAL_STATUS] == keys.EXHAUSTED
    assert last[keys.STEP] == 25  # the last, partial eval interval is evaluated too
    assert math.isnan(last[keys.STEPS_TO_TARGET])


def test_max_examples_budget_scales_with_batch_size() -> None:
    last, _ = run(settings(max_steps=None, max_examples=640, target_value=0.0), 64, 0.01)
    assert last[keys.TRIAL_STATUS] == keys.EXHAUSTED
    assert last[keys.EXAMPLES] == 640


@pytest.mark.parametrize("lr", [8.0, 1e6])
def test_diverging_trial_is_a_result_not_a_crash(lr: float) -> None:
    last, _ = run(settings(), 64, lr)
    assert last[keys.TRIAL_STATUS] == keys.DIVERGED
    assert "diverged" in last[keys.REASON]


def test_warmup_lowers_the_reported_lr() -> None:
    _, reports = run(settings(eval_every=5, target_value=0.0, max_steps=20), 32, 0.4, warmup=10)
    assert reports[1][keys.LR] == pytest.approx(0.2)
    assert reports[2][keys.LR] == pytest.approx(0.4)


def test_adamw_runs_with_momentum_as_beta1() -> None:
    last, _ = run(settings(optimizer="adamw", target_value=0.3), 64, 0.05, momentum=0.9)
    assert last[keys.TRIAL_STATUS] == keys.REACHED


def test_unknown_target_metric_is_named() -> None:
    with pytest.raises(TrialInputError, match="accuracy"):
        run(settings(target_metric="accuracy"), 16, 0.1)


def test_batch_must_split_evenly_over_workers() -> None:
    from trainables.loop import Trial, World

    with pytest.raises(TrialInputError, match="not divisible by 2 workers"):
        Trial(settings(), Hyperparameters(15, 0.1, 0.0, 0), torch.device("cpu"), World(0, 2))


def test_stationary_noise_scale_matches_the_exact_value() -> None:
    """With a tiny lr the weights barely move, so the true B_simple is stationary."""
    s = settings(target_value=-1.0, max_steps=400, eval_every=400, workload_args=LINREG)
    last, _ = run(s, 256, 1e-5)
    assert last[keys.B_SIMPLE] == pytest.approx(last["true_b_simple"], rel=0.15)


def test_noise_measurement_off_reports_nan() -> None:
    last, _ = run(settings(noise_every=0), 64, 0.5)
    assert math.isnan(last[keys.B_SIMPLE])


def test_split_batch_and_fetch_batch() -> None:
    data = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    batch = fetch_batch(data, torch.tensor([3, 1, 4]))
    assert batch[1].tolist() == [3, 1, 4]
    parts = split_batch(batch, 2)
    assert [size for _, size in parts] == [2, 1]
    assert parts[1][0][1].tolist() == [4]
