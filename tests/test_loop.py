"""The training loop run in-process: statuses, budget, warmup, live noise scale."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import pytest
import torch
from _helpers import spec_trial_settings
from torch.utils.data import TensorDataset

from trainables import keys
from trainables.errors import TrialInputError
from trainables.loop import run_trial
from trainables.parts.batches import fetch_batch, split_batch
from trainables.parts.optimizers import make_optimizer
from trainables.parts.schedule import LrSchedule, decay_factor, warmup_lr
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
    return spec_trial_settings(**{**base, **overrides})


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


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("constant", 60, 1.0),
        ("cosine", 10, 1.0),  # the decay starts where the warmup ends
        ("cosine", 60, 0.1 + 0.9 * 0.5),  # halfway: ½(1 + cos π/2)
        ("cosine", 35, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("cosine", 110, 0.1),  # at the horizon: the final fraction
        ("cosine", 500, 0.1),  # and held after it
        ("linear", 60, 0.1 + 0.9 * 0.5),
        ("linear", 85, 0.1 + 0.9 * 0.25),
        ("linear", 5, 0.5),  # still warming up
        # step, at 0.5 and 0.75 of the horizon: steps 55 and ⌈82.5⌉ = 83 are the last at
        # the old lr (the lr changes after the examples of 55 and 83 steps).
        ("step", 5, 0.5),
        ("step", 55, 1.0),
        ("step", 56, 0.2),
        ("step", 83, 0.2),
        ("step", 84, 0.2**2),
        ("step", 500, 0.2**2),  # held after the horizon
        ("batch_step", 5, 0.5),  # warmup, then the lr kept: the batch size grows instead
        ("batch_step", 500, 1.0),
    ],
)
def test_schedules_against_their_closed_forms(kind: str, step: int, expected: float) -> None:
    schedule = LrSchedule(2.0, 10, kind, final_fraction=0.1, horizon=110)
    assert schedule.lr(step) == pytest.approx(2.0 * expected, rel=1e-12)


def test_a_decay_is_monotone_and_a_bad_schedule_fails_before_training() -> None:
    lrs = [LrSchedule(1.0, 0, "cosine", 0.0, 50).lr(t) for t in range(1, 60)]
    assert all(a >= b for a, b in itertools.pairwise(lrs)) and lrs[-1] == 0.0
    assert decay_factor("linear", 2.0) == 0.0  # clipped past the end
    with pytest.raises(ValueError, match="unknown schedule kind 'exponential'"):
        LrSchedule(1.0, 0, "exponential")
    with pytest.raises(ValueError, match="final_fraction"):
        LrSchedule(1.0, 0, "cosine", final_fraction=1.5)


def test_a_cosine_trial_decays_over_its_budget_and_reports_it() -> None:
    """Without a horizon the decay spans the trial's step budget at its batch size."""
    s = settings(eval_every=10, target_value=0.0, max_steps=100, final_lr_fraction=0.2)
    reports: list[dict[str, Any]] = []
    hp = Hyperparameters(32, 0.4, 0.0, 0, schedule="cosine")
    run_trial(s, hp, reports.append)
    by_step = {r[keys.STEP]: r[keys.LR] for r in reports}
    assert by_step[50] == pytest.approx(0.4 * (0.2 + 0.8 * 0.5))
    assert by_step[100] == pytest.approx(0.4 * 0.2)
    with_horizon = dataclasses.replace(s, horizon_steps=40)
    reports.clear()
    run_trial(with_horizon, hp, reports.append)
    assert {r[keys.STEP]: r[keys.LR] for r in reports}[50] == pytest.approx(0.4 * 0.2)


@pytest.mark.parametrize("name", ["sgd", "adamw", "sgd_sai"])
def test_the_optimiser_takes_every_value_from_the_hyperparameters(name: str) -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    hp = Hyperparameters(16, 0.1, 0.8, 0, weight_decay=0.05, beta2=0.95)
    group = make_optimizer(name, params, hp).param_groups[0]
    assert group["weight_decay"] == 0.05
    if name == "adamw":
        assert group["betas"] == (0.8, 0.95)
    else:
        assert group["momentum"] == 0.8
    plain = make_optimizer(name, params, Hyperparameters(16, 0.1, 0.9, 0)).param_groups[0]
    assert plain["weight_decay"] == 0.0  # AdamW's own default (0.01) is not applied


def test_adamw_runs_with_momentum_as_beta1() -> None:
    last, _ = run(settings(optimizer="adamw", target_value=0.3), 64, 0.05, momentum=0.9)
    assert last[keys.TRIAL_STATUS] == keys.REACHED


def test_unknown_target_metric_is_named() -> None:
    with pytest.raises(TrialInputError, match="accuracy"):
        run(settings(target_metric="accuracy"), 16, 0.1)


def test_batch_must_split_evenly_over_workers() -> None:
    from trainables.loop import TrainingRun
    from trainables.parts.world import World

    with pytest.raises(TrialInputError, match="not divisible by 2 workers"):
        TrainingRun(settings(), Hyperparameters(15, 0.1, 0.0, 0), torch.device("cpu"), World(0, 2))


@pytest.mark.parametrize(("method", "rel"), [("per_example", 0.10), ("micro_batch", 0.15)])
def test_stationary_noise_scale_matches_the_exact_value(method: str, rel: float) -> None:
    """With a tiny lr the weights barely move, so the true B_simple is stationary."""
    s = settings(
        target_value=-1.0,
        max_steps=400,
        eval_every=400,
        workload_args=LINREG,
        noise_method=method,
    )
    last, _ = run(s, 256, 1e-5)
    assert last[keys.NOISE_METHOD] == method
    assert last[keys.B_SIMPLE] == pytest.approx(last["true_b_simple"], rel=rel)


@pytest.mark.parametrize("method", ["per_example", "micro_batch"])
def test_a_growing_noise_scale_is_followed_within_a_factor_of_two(method: str) -> None:
    """Training moves the weights, and the true B_simple grows about fivefold over the
    run (linear regression's exact value at the current weights): the moving averages
    lag it, but stay within 2× of it from the second evaluation on."""
    s = settings(
        target_value=-1.0,
        max_steps=400,
        eval_every=50,
        workload_args={"dim": 100, "noise": 1.0},
        noise_method=method,
        patience_steps=0,
    )
    _, reports = run(s, 256, 0.1)
    ratios = [r[keys.B_SIMPLE] / r["true_b_simple"] for r in reports[2:]]
    assert reports[-1]["true_b_simple"] > 4 * reports[1]["true_b_simple"]
    assert all(0.5 < ratio < 2.0 for ratio in ratios), ratios


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


# --- a workload without eval_data -----------------------------------------------------------


def test_without_eval_data_step_0_reports_the_initial_training_loss() -> None:
    """No report carries a made-up 0: the step-0 loss is the training loss at the initial
    weights (the model starts at zero, so over a training set of at most 1024 examples
    it is the mean of y² over all of them), and the divergence rule compares with it."""
    from user_workloads import no_eval

    args = {"n_train": 1000}
    s = settings(workload="tests.user_workloads:no_eval", workload_args=args, target_value=0.3)
    last, reports = run(s, 32, 0.1)
    _, y = no_eval(args).train_data.tensors
    assert reports[0][keys.STEP] == 0
    assert reports[0][keys.LOSS] == pytest.approx(float((y**2).mean()), rel=1e-5)
    assert all(r[keys.LOSS] > 0 for r in reports)
    assert last[keys.TRIAL_STATUS] == keys.REACHED, last[keys.REASON]


def test_without_eval_data_the_initial_loss_is_one_sample_for_every_batch_size() -> None:
    s = settings(
        workload="tests.user_workloads:no_eval",
        workload_args={"n_train": 20000},
        target_value=0.3,
        max_steps=10,
    )
    firsts = {b: run(s, b, 0.1)[1][0][keys.LOSS] for b in (1, 16, 256)}
    assert len(set(firsts.values())) == 1
    reports: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(16, 0.1, 0.0, 0, seed=1), reports.append)
    assert reports[0][keys.LOSS] != firsts[1]  # another seed, another sample


# --- workloads unlike the built-ins ---------------------------------------------------------


def user_settings(name: str, **overrides: Any) -> TrialSettings:
    return settings(workload=f"tests.user_workloads:{name}", workload_args={}, **overrides)


def test_an_accuracy_target_is_reached_rising_to_it() -> None:
    s = user_settings("classifier", target_metric="accuracy", target_value=0.9, target_mode="max")
    last, reports = run(s, 64, 0.5)
    assert reports[0][keys.TARGET_VALUE] < 0.9  # not met by the untrained model
    assert last[keys.TRIAL_STATUS] == keys.REACHED and last[keys.TARGET_VALUE] >= 0.9
    previous = reports[-2][keys.STEP]
    assert previous < last[keys.STEPS_TO_TARGET_INTERP] <= last[keys.STEPS_TO_TARGET]
    assert "accuracy" in last[keys.REASON] and ">= 0.9" in last[keys.REASON]


def test_a_net_stuck_at_chance_stalls_instead_of_spending_its_budget() -> None:
    s = user_settings("dead_net", target_value=1.0, max_steps=400, patience_steps=100)
    last, reports = run(s, 32, 0.5)
    assert last[keys.TRIAL_STATUS] == keys.STALLED, last[keys.REASON]
    assert last[keys.STEP] == 100 and reports[0][keys.LOSS] == pytest.approx(math.log(10))


def test_by_default_the_stall_patience_is_a_quarter_of_the_budget() -> None:
    last, _ = run(user_settings("dead_net", target_value=1.0, max_steps=400), 32, 0.5)
    assert (last[keys.TRIAL_STATUS], last[keys.STEP]) == (keys.STALLED, 100)


def test_a_metric_named_like_a_report_key_is_refused() -> None:
    with pytest.raises(TrialInputError, match="'step' would overwrite"):
        run(user_settings("reserved_metric"), 16, 0.1)


def test_a_trial_draws_the_same_randomness_whatever_ran_before_it() -> None:
    """Under actor reuse one process runs trial after trial: dropout must depend on the
    trial (its seed and batch size), not on what the process ran before."""
    s = user_settings("classifier", target_metric="accuracy", target_value=2.0, max_steps=30)
    first = run(s, 16, 0.3)[1]
    run(s, 64, 0.1)  # another trial in between, drawing dropout masks
    torch.rand(1000)
    again = run(s, 16, 0.3)[1]
    assert [r[keys.LOSS] for r in first] == [r[keys.LOSS] for r in again]


def test_the_training_seed_changes_the_batches_and_the_initialisation() -> None:
    s = user_settings("classifier", target_metric="accuracy", target_value=2.0, max_steps=20)
    by_seed = {}
    for seed in (0, 1):
        reports: list[dict[str, Any]] = []
        run_trial(s, Hyperparameters(16, 0.3, 0.0, 0, seed=seed), reports.append)
        by_seed[seed] = [r[keys.LOSS] for r in reports]
    assert by_seed[0][0] != by_seed[1][0]  # another initial model (torch's default init)
    again: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(16, 0.3, 0.0, 0, seed=1), again.append)
    assert [r[keys.LOSS] for r in again] == by_seed[1]


def _no_eval_worker(rank: int, world: int, port: int, queue: Any) -> None:
    """One of two DDP workers training the no-eval workload (FileStore: no listener)."""
    import tempfile as _tempfile

    import torch.distributed as dist

    from trainables.parts.world import World

    torch.set_num_threads(1)
    store = f"file://{_tempfile.gettempdir()}/noisetune-test-no-eval-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        s = user_settings("no_eval", target_value=0.3, max_steps=60)
        reports: list[dict[str, Any]] = []
        run_trial(s, Hyperparameters(32, 0.1, 0.0, 0), reports.append, world=World(rank, world))
        queue.put((rank, [(r[keys.STEP], r[keys.LOSS], r[keys.TRIAL_STATUS]) for r in reports]))
    finally:
        dist.destroy_process_group()


def test_without_eval_data_two_ddp_workers_start_from_the_one_worker_loss() -> None:
    from _helpers import run_gloo_workers

    outputs = dict(run_gloo_workers(_no_eval_worker, 2))
    single = run(user_settings("no_eval", target_value=0.3, max_steps=60), 32, 0.1)[1]
    assert outputs[0] == outputs[1]  # the workers report the same
    (step, loss, _), *rest = outputs[0]
    assert step == 0 and loss == pytest.approx(single[0][keys.LOSS], rel=1e-6)
    assert all(s != keys.DIVERGED for _, _, s in rest) and rest[-1][2] == keys.REACHED
