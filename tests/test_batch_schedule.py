"""Batch-size schedules (`schedule.kind: batch_step`, Smith, Kindermans, Ying and Le 2018,
"Don't Decay the Learning Rate, Increase the Batch Size"): the closed forms of `step` and
`batch_step`, the milestones in examples, a trial whose batch size grows at them (its
batches, accumulation, DDP workers, reports, checkpoints), and Smith et al.'s claim where
the theory says it holds."""

from __future__ import annotations

import dataclasses
import math
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import run_gloo_workers, spec_trial_settings
from test_fault_tolerance import MemoryCheckpoints, comparable, resumed_reports

from trainables import keys
from trainables.loop import run_trial
from trainables.parts.schedule import (
    BatchSchedule,
    LrSchedule,
    batch_growth,
    milestone_steps,
)
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings

LINREG = {"dim": 16, "noise": 0.5, "n_train": 8192}

# --- closed forms --------------------------------------------------------------------------


def test_milestones_are_whole_b0_batches_of_examples() -> None:
    assert milestone_steps((0.5, 0.75), 110) == (55, 83)  # ⌈82.5⌉
    assert milestone_steps((0.3,), 10) == (3,)  # 0.3·10 is 3.0000000000000004 in floats
    assert milestone_steps((0.001,), 10) == (1,)
    assert (batch_growth(0.2), batch_growth(0.5), batch_growth(0.1)) == (5, 2, 10)
    for bad in (0.3, 0.6, 0.9):
        with pytest.raises(ValueError, match="whole number >= 2"):
            batch_growth(bad)


@pytest.mark.parametrize(
    ("examples", "size"),
    [(0, 16), (799, 16), (800, 80), (801, 80), (1199, 80), (1200, 400), (10**6, 400)],
)
def test_the_batch_size_at_and_around_each_milestone(examples: int, size: int) -> None:
    """B₀ 16, k 5, milestones 0.5 and 0.75 of 100 steps: 800 and 1200 examples."""
    schedule = BatchSchedule.for_trial("batch_step", 16, 0.2, (0.5, 0.75), 100)
    assert schedule.thresholds == (50, 75) and schedule.largest == 400
    assert schedule.batch_size(examples) == size


def walk(schedule: BatchSchedule, steps: int) -> list[tuple[int, int]]:
    """(batch size, examples after it) of each step, taking the steps one by one."""
    out, examples = [], 0
    for _ in range(steps):
        size = schedule.batch_size(examples)
        examples += size
        out.append((size, examples))
    return out


@pytest.mark.parametrize(
    ("base", "decay", "milestones", "horizon"),
    [
        (16, 0.2, (0.5, 0.75), 100),
        (8, 0.5, (0.3, 0.6, 0.8), 37),
        (3, 0.25, (0.5, 0.52), 100),  # the second passed within one step of the first size
        (4, 0.1, (0.01, 0.02, 0.03), 100),  # passed on consecutive steps
    ],
)
def test_the_examples_are_the_sum_of_the_batch_sizes(
    base: int, decay: float, milestones: tuple[float, ...], horizon: int
) -> None:
    schedule = BatchSchedule.for_trial("batch_step", base, decay, milestones, horizon)
    steps = walk(schedule, 2 * horizon)
    for t, (size, examples) in enumerate(steps, start=1):
        assert schedule.examples_at(t) == examples
        # a fractional step: that part of its batch
        before = steps[t - 2][1] if t > 1 else 0
        assert schedule.examples_at(t - 0.25) == pytest.approx(before + 0.75 * size)
    # A step's batch size is B₀·k^i, i the milestones whose f·horizon·B₀ examples (exact
    # rationals here) were consumed before it.
    k = round(1 / decay)
    consumed_before = [0] + [examples for _, examples in steps[:-1]]
    for (size, _), consumed in zip(steps, consumed_before, strict=True):
        passed = sum(consumed >= Fraction(str(f)) * horizon * base for f in milestones)
        assert size == base * k**passed


def test_at_a_constant_batch_size_step_and_batch_step_change_after_the_same_examples() -> None:
    """Smith et al.'s equivalence: at the examples a step-decay trial of batch size B₀
    has consumed, `step` has decayed its lr by as many milestones as `batch_step` has
    grown its batch size."""
    base, horizon, milestones = 12, 90, (0.3, 0.5, 0.77)
    lrs = LrSchedule(1.0, 0, "step", horizon=horizon, decay=0.5, milestones=milestones)
    sizes = BatchSchedule.for_trial("batch_step", base, 0.5, milestones, horizon)
    for step in range(1, 2 * horizon):
        consumed = (step - 1) * base  # before this step, at B₀ throughout
        decays = round(-math.log2(lrs.lr(step)))
        assert sizes.batch_size(consumed) == base * 2**decays


def test_a_constant_schedule_counts_examples_as_b0_times_steps_exactly() -> None:
    for kind in ("constant", "cosine", "step"):
        schedule = BatchSchedule.for_trial(kind, 48, 0.2, (0.5,), 10)
        assert not schedule.changes
        for step in (0.0, 1.0, 7.3, 12.000000001, math.nan):
            got = schedule.examples_at(step)
            assert got == step * 48 or (math.isnan(got) and math.isnan(step))


# --- the loop --------------------------------------------------------------------------------


def settings(**overrides: Any) -> TrialSettings:
    base: dict[str, Any] = {
        "workload_args": LINREG,
        "target_value": 0.0,
        "max_steps": 100,
        "eval_every": 5,
        "noise_every": 2,
        "patience_steps": 0,
    }
    return spec_trial_settings(**{**base, **overrides})  # decay 0.2 at 0.5 and 0.75


def run(
    s: TrialSettings,
    schedule: str,
    batch_size: int = 16,
    lr: float = 0.1,
    seed: int = 0,
    world: World | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    hp = Hyperparameters(batch_size, lr, 0.0, 0, seed=seed, schedule=schedule)
    run_trial(s, hp, rows.append, world=world)
    return rows


def test_a_batch_step_trial_grows_its_batch_at_the_milestones_and_counts_its_examples() -> None:
    s = settings()
    rows = run(s, "batch_step")
    by_step = {r[keys.STEP]: r for r in rows}
    sizes = {step: r[keys.BATCH_SIZE_NOW] for step, r in by_step.items()}
    # 50 steps of 16 (800 examples), then 80 until 1200 examples (5 steps), then 400.
    assert sizes[0] == sizes[50] == 16
    assert sizes[55] == 80 and sizes[60] == sizes[100] == 400
    schedule = BatchSchedule.for_trial("batch_step", 16, 0.2, (0.5, 0.75), 100)
    truth = dict(enumerate([0] + [e for _, e in walk(schedule, 100)]))
    assert all(r[keys.EXAMPLES] == truth[r[keys.STEP]] for r in rows)
    assert by_step[55][keys.EXAMPLES] == 800 + 5 * 80
    assert by_step[100][keys.EXAMPLES] == 1200 + 45 * 400
    assert all(r[keys.LR] == pytest.approx(0.1) for r in rows)  # the lr is kept
    # Measured with the grown batch as b_big: finite, and near the workload's exact value.
    assert all(math.isfinite(r[keys.B_SIMPLE]) for r in rows if r[keys.STEP] >= 55)
    assert 0.5 < rows[-1][keys.B_SIMPLE] / rows[-1]["true_b_simple"] < 2
    # Up to the first milestone the trial is `step`'s: the same batches, the same lr.
    plain = run(s, "step")
    assert [comparable(r) for r in rows[:11]] == [
        {**comparable(r), keys.SCHEDULE: "batch_step"} for r in plain[:11]
    ]
    assert plain[-1][keys.EXAMPLES] == 1600 and {r[keys.BATCH_SIZE_NOW] for r in plain} == {16}
    assert plain[-1][keys.LR] == pytest.approx(0.1 * 0.2**2)


def test_a_growing_trial_ends_when_it_has_spent_the_examples_budget() -> None:
    """budget.max_examples holds whatever the batch size: 50 steps of 16 (800 examples),
    5 of 80 (1200), then one of 400 spends 1600, at step 56, off the evaluation grid:
    the trial is evaluated there and ends exhausted, not at its 100-step budget."""
    s = settings(max_examples=1600)
    assert s.max_steps_for(16) == 100  # the step budget alone would allow 18 000 examples
    rows = run(s, "batch_step")
    last = rows[-1]
    assert (last[keys.STEP], last[keys.EXAMPLES]) == (56, 1600)
    assert last[keys.TRIAL_STATUS] == keys.EXHAUSTED and "1600 examples" in last[keys.REASON]
    assert [r[keys.STEP] for r in rows[-3:]] == [50, 55, 56]
    # At a constant batch size the step budget is the examples budget: nothing changes.
    plain = run(s, "step")
    assert plain[-1][keys.STEP] == 100 and plain[-1][keys.EXAMPLES] == 1600
    assert "100 steps" in plain[-1][keys.REASON]


def test_the_examples_to_the_target_are_the_ones_consumed() -> None:
    rows = run(settings(target_value=0.33), "batch_step")
    last = rows[-1]
    assert last[keys.TRIAL_STATUS] == keys.REACHED and last[keys.STEP] > 50  # after a change
    assert last[keys.EXAMPLES_TO_TARGET] == last[keys.EXAMPLES]
    schedule = BatchSchedule.for_trial("batch_step", 16, 0.2, (0.5, 0.75), 100)
    interp = last[keys.STEPS_TO_TARGET_INTERP]
    assert last[keys.EXAMPLES_TO_TARGET_INTERP] == schedule.examples_at(interp)
    before = rows[-2][keys.EXAMPLES]
    assert before < last[keys.EXAMPLES_TO_TARGET_INTERP] <= last[keys.EXAMPLES]


def test_accumulated_micro_batches_train_a_growing_batch_as_the_whole_does() -> None:
    """16 → 80 → 400 examples a step in micro-batches of at most 24: the same training
    (and a noise scale measured on the micro-batches) as in one pass."""
    plain = run(settings(noise_every=0), "batch_step")
    accumulated = run(settings(noise_every=0, max_micro_batch=24), "batch_step")
    measured = run(settings(noise_every=2, max_micro_batch=24), "batch_step")
    for a, b, c in zip(plain, accumulated, measured, strict=True):
        assert (b[keys.STEP], b[keys.EXAMPLES], b[keys.BATCH_SIZE_NOW]) == (
            a[keys.STEP],
            a[keys.EXAMPLES],
            a[keys.BATCH_SIZE_NOW],
        )
        assert b[keys.LOSS] == pytest.approx(a[keys.LOSS], rel=1e-5)
        assert c[keys.LOSS] == pytest.approx(a[keys.LOSS], rel=1e-5)
    grown = [r[keys.B_SIMPLE] for r in measured if r[keys.STEP] >= 55]
    assert all(math.isfinite(b) and b > 0 for b in grown)


@pytest.mark.parametrize(
    ("workload", "fields"),
    [("streaming", {}), ("computed_items", {"loader_workers": 2})],
)
def test_a_stream_and_a_loader_draw_the_grown_batches(
    workload: str, fields: dict[str, Any]
) -> None:
    """A stream reads more examples a step; a DataLoader's prefetched batches of the old
    size are drawn again at the new one: the batches of the in-process draw."""
    s = settings(workload=f"tests.user_workloads:{workload}", workload_args={}, max_steps=40)
    rows = run(dataclasses.replace(s, **fields), "batch_step", batch_size=8, lr=0.05)
    # 20 steps of 8 (160 examples), 2 of 40 (240), then 200.
    assert [r[keys.BATCH_SIZE_NOW] for r in rows] == [8] * 5 + [200] * 4
    assert rows[-1][keys.EXAMPLES] == 160 + 2 * 40 + 18 * 200
    assert rows[-1][keys.LOSS] < rows[4][keys.LOSS]
    if fields:
        in_process = run(s, "batch_step", batch_size=8, lr=0.05)
        assert [comparable(r) for r in rows] == [comparable(r) for r in in_process]


def test_a_resumed_batch_step_trial_keeps_its_batch_size_and_examples(tmp_path: Path) -> None:
    s = settings(checkpoint_every=2, curvature_every=0)  # a checkpoint every 10 steps
    hp = Hyperparameters(16, 0.1, 0.5, 0, schedule="batch_step")
    first: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(s, hp, first.append, checkpoints=store)
    uninterrupted = sorted(first + store.reports, key=lambda r: r[keys.STEP])
    start = next(state for state in store.saved if state[keys.STEP] == 60)
    assert (start["batch_size_now"], start["examples"]) == (400, 1200 + 5 * 400)
    continued = resumed_reports(s, hp, start, tmp_path / "again")
    assert continued[0][keys.STEP] == 65
    assert [comparable(r) for r in continued] == [
        comparable(r) for r in uninterrupted if r[keys.STEP] > 60
    ]
    # From a checkpoint before the first milestone the batch grows after the resume.
    early = next(state for state in store.saved if state[keys.STEP] == 40)
    assert (early["batch_size_now"], early["examples"]) == (16, 640)
    continued = resumed_reports(s, hp, early, tmp_path / "early")
    assert [comparable(r) for r in continued] == [
        comparable(r) for r in uninterrupted if r[keys.STEP] > 40
    ]


def test_a_checkpoint_from_before_batch_schedules_resumes_with_its_examples(
    tmp_path: Path,
) -> None:
    """A state without `examples` or `batch_size_now` (an older run) counts B₀ per step."""
    s = settings(checkpoint_every=2, curvature_every=0)
    hp = Hyperparameters(16, 0.1, 0.0, 0)
    first: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(s, hp, first.append, checkpoints=store)
    old = {k: v for k, v in store.saved[0].items() if k not in ("examples", "batch_size_now")}
    again: list[dict[str, Any]] = []
    (tmp_path / "again").mkdir()
    run_trial(s, hp, again.append, checkpoints=MemoryCheckpoints(tmp_path / "again", old))
    assert again[0][keys.EXAMPLES] == 16 * again[0][keys.STEP]


def _ddp_worker(rank: int, world: int, port: int, limit: int | None, queue: Any) -> None:
    import tempfile

    import torch.distributed as dist

    from trainables.parts.world import World

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-batch-schedule-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        s = settings(max_steps=40, noise_every=2, max_micro_batch=limit)
        reports = run(s, "batch_step", batch_size=16, world=World(rank, world))
        queue.put(
            (
                rank,
                [(r[keys.LOSS], r[keys.EXAMPLES], r[keys.BATCH_SIZE_NOW]) for r in reports],
                [r[keys.NOISE_METHOD] for r in reports],
            )
        )
    finally:
        dist.destroy_process_group()


def test_two_ddp_workers_grow_their_shares_as_one_process_grows_its_batch() -> None:
    """16 → 80 → 400 split over 2 workers (8 → 40 → 200 each, accumulated in micro-batches
    of 24 from 40 on, the DDP hook measuring then): the one-process losses."""
    reports = run(settings(max_steps=40), "batch_step")
    one = [(r[keys.LOSS], r[keys.EXAMPLES], r[keys.BATCH_SIZE_NOW]) for r in reports]
    out = {rank: (rows, methods) for rank, rows, methods in run_gloo_workers(_ddp_worker, 2, 24)}
    assert out[0][0] == out[1][0]  # one decision
    for (loss_a, ex_a, b_a), (loss_b, ex_b, b_b) in zip(one, out[0][0], strict=True):
        assert (ex_b, b_b) == (ex_a, b_a)
        assert loss_b == pytest.approx(loss_a, rel=1e-4)
    assert out[0][1][1] == "per_example" and out[0][1][-1] == "worker_batches"


# --- Smith et al.'s claim ----------------------------------------------------------------------


def test_increasing_the_batch_reaches_the_target_in_fewer_steps_on_as_many_examples() -> None:
    """Linear regression (σ = 1, its noise floor 0.497), B₀ = 4, lr 0.2: the lr ÷ 5 at
    half of 600 steps (`step`) or the batch × 5 (`batch_step`, B 4 → 20, well below the
    B_noise of about 100 to 200 that the workload reports late in training). The target
    0.507 lies between the two lrs' noise floors, so both reach it only after the
    milestone: by hand over 8 seeds, batch_step took 0.69–0.93 of step's steps and
    1.00–1.27 of its examples. Three seeds here, their medians."""
    s = spec_trial_settings(
        workload_args={"dim": 16, "noise": 1.0, "n_train": 8192},
        target_value=0.507,
        max_steps=600,
        eval_every=5,
        noise_every=0,
        patience_steps=0,
        decay_factor=0.2,
        milestones=(0.5,),
    )
    steps: dict[str, list[float]] = {}
    examples: dict[str, list[float]] = {}
    for kind in ("step", "batch_step"):
        lasts = [run(s, kind, batch_size=4, lr=0.2, seed=seed)[-1] for seed in range(3)]
        assert all(last[keys.TRIAL_STATUS] == keys.REACHED for last in lasts)
        steps[kind] = [last[keys.STEPS_TO_TARGET_INTERP] for last in lasts]
        examples[kind] = [last[keys.EXAMPLES_TO_TARGET_INTERP] for last in lasts]
        assert all(s_ > 300 for s_ in steps[kind])  # after the milestone
    step_ratio = statistics.median(
        b / a for a, b in zip(steps["step"], steps["batch_step"], strict=True)
    )
    example_ratio = statistics.median(
        b / a for a, b in zip(examples["step"], examples["batch_step"], strict=True)
    )
    assert step_ratio < 0.9
    assert 1 / 1.3 < example_ratio < 1.3


def test_a_sweep_compares_step_and_batch_step_on_one_front() -> None:
    """`space.schedule: [step, batch_step]` gives both kinds to the trials of a sweep."""
    spec = parse_spec(
        {
            "name": "smith",
            "workload": "linear_regression",
            "workload_args": LINREG,
            "target": {"metric": "loss", "value": 0.0},
            "budget": {"max_steps": 20},
            "space": {"batch_size": [8], "lr": [0.1], "schedule": ["step", "batch_step"]},
            "schedule": {"decay_factor": 0.5, "milestones": [0.5]},
        }
    )
    told = trial_settings(spec, Path("."))
    by_kind = {}
    for kind in spec.space.dimensions()["schedule"].points():
        config = {keys.BATCH_SIZE: 8, keys.LR: 0.1, keys.SCHEDULE: kind}
        rows: list[dict[str, Any]] = []
        hp = Hyperparameters.from_config(config, told.fixed_hyperparameters)
        run_trial(told, hp, rows.append)
        by_kind[kind] = rows[-1]
    assert by_kind["step"][keys.EXAMPLES] == 160
    assert by_kind["step"][keys.LR] == pytest.approx(0.05)
    assert by_kind["batch_step"][keys.EXAMPLES] == 80 + 10 * 16
    assert by_kind["batch_step"][keys.BATCH_SIZE_NOW] == 16
    assert np.isclose(by_kind["batch_step"][keys.LR], 0.1)


def test_the_front_takes_a_batch_step_trial_s_own_examples() -> None:
    """The front is keyed by the configured B₀; where its best trial grew its batch, its
    examples are the ones it consumed, not B₀ times its steps."""
    import pandas as pd

    from tuner.results import columns
    from tuner.results.tables import TRIAL_COLUMNS, front_table

    def row(trial_id: str, batch_size: int, kind: str, steps: float, examples: float) -> dict:
        return {
            columns.TRIAL_ID: trial_id, columns.STATUS: keys.REACHED, keys.BATCH_SIZE: batch_size,
            keys.LR: 0.1, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0, keys.SEED: 0,
            keys.STEPS_TO_TARGET: math.ceil(steps), keys.STEPS_TO_TARGET_INTERP: steps,
            keys.EXAMPLES_TO_TARGET: examples + 7, keys.EXAMPLES_TO_TARGET_INTERP: examples,
            keys.SCHEDULE: kind,
        }  # fmt: skip

    trials = pd.DataFrame(
        [
            row("a", 8, "step", 99.5, 796.0),
            row("b", 8, "batch_step", 61.5, 1010.0),
            row("c", 32, "step", 40.5, 1296.0),
        ],
        columns=TRIAL_COLUMNS,
    )
    front = front_table(trials).set_index(keys.BATCH_SIZE)
    assert front.loc[8, columns.TRIAL_ID] == "b"
    assert front.loc[8, keys.EXAMPLES] == 1017
    assert front.loc[8, columns.EXAMPLES_INTERP] == 1010.0
    assert front.loc[32, keys.EXAMPLES] == 41 * 32  # one batch size: B times the steps
    assert front.loc[32, columns.EXAMPLES_INTERP] == 40.5 * 32


def test_the_b_crit_fit_and_the_lr_law_leave_batch_step_trials_out() -> None:
    """S(B) = S_min(1 + B_crit/B) is a law of a fixed batch size: a batch_step trial is
    on the front but not in the fit, which is the constant-batch trials' own."""
    import pandas as pd

    from tuner.results import columns
    from tuner.results.tables import (
        CURVE_COLUMNS,
        GROWN_BATCH_FIT_NOTE,
        TRIAL_COLUMNS,
        front_table,
        summarize,
    )

    def row(trial_id: str, batch_size: int, kind: str, steps: float) -> dict:
        return {
            columns.TRIAL_ID: trial_id, columns.STATUS: keys.REACHED, keys.BATCH_SIZE: batch_size,
            keys.LR: 0.01 * batch_size, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0, keys.SEED: 0,
            keys.STEPS_TO_TARGET: math.ceil(steps), keys.STEPS_TO_TARGET_INTERP: steps,
            keys.EXAMPLES_TO_TARGET: math.ceil(steps) * batch_size,
            keys.EXAMPLES_TO_TARGET_INTERP: steps * batch_size, keys.EXAMPLES: steps * batch_size,
            keys.SCHEDULE: kind,
        }  # fmt: skip

    # S(B) = 100(1 + 64/B) at B = 8 … 512, and a batch_step trial at B₀ = 8 far below it.
    constant = [row(f"c{b}", b, "step", 100 * (1 + 64 / b)) for b in (8, 32, 128, 512)]
    grown = row("g8", 8, "batch_step", 200.0)
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    target = {"metric": "loss", "value": 0.1}
    with_grown = pd.DataFrame([*constant, grown], columns=TRIAL_COLUMNS)
    alone = pd.DataFrame(constant, columns=TRIAL_COLUMNS)
    mixed = summarize(with_grown, curves, front_table(with_grown), target)
    plain = summarize(alone, curves, front_table(alone), target)
    assert front_table(with_grown).set_index(keys.BATCH_SIZE).loc[8, columns.TRIAL_ID] == "g8"
    assert mixed[columns.B_CRIT] == pytest.approx(plain[columns.B_CRIT]) == pytest.approx(64)
    assert mixed[columns.S_MIN] == pytest.approx(plain[columns.S_MIN])
    assert mixed[keys.EPS_MAX] == pytest.approx(plain[keys.EPS_MAX])
    assert GROWN_BATCH_FIT_NOTE in mixed[columns.FIT_NOTE]
    assert plain[columns.FIT_NOTE] is None


def test_pruning_that_compares_batch_sizes_is_refused_with_batch_step() -> None:
    from tuner.config.spec import SpecError

    base = {
        "name": "smith",
        "workload": "linear_regression",
        "target": {"metric": "loss", "value": 0.1},
        "budget": {"max_steps": 20},
        "space": {"batch_size": [8], "lr": [0.1], "schedule": ["step", "batch_step"]},
    }
    for kind in ("front", "eps_opt"):
        with pytest.raises(SpecError, match=f"pruning.kind: {kind} compares trials"):
            parse_spec({**base, "pruning": {"kind": kind}})
    parse_spec({**base, "pruning": {"kind": "asha"}})
