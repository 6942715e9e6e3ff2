"""The adaptive batch size (`adaptive_batch`, issue 15 part 2): the spec section, the
decision against the closed forms of tuner.theory.adaptive_batch, a linear-regression
trial whose batch size follows its measured noise scale (its reports, examples,
checkpoints, DDP workers), and the results leaving such trials out of the B_crit fit."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from _helpers import run_gloo_workers, spec_problems, spec_trial_settings
from test_fault_tolerance import MemoryCheckpoints, comparable, resumed_reports

from trainables import keys
from trainables.loop import TrainingRun, run_trial
from trainables.measure.noise_capture import NormPair
from trainables.parts.adaptive_batch import AdaptiveBatch
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings
from tuner.results import columns
from tuner.results.tables import (
    ALL_GROWN_NOTE,
    CURVE_COLUMNS,
    GROWN_BATCH_FIT_NOTE,
    TRIAL_COLUMNS,
    front_table,
    grown_batch,
    summarize,
)
from tuner.theory.adaptive_batch import grown_batch_size, norm_test_expected

LINREG = {"dim": 16, "noise": 0.5, "n_train": 8192}
B0, MAX = 16, 1024

# --- the spec --------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "name": "adaptive",
    "workload": "linear_regression",
    "target": {"metric": "loss", "value": 0.2},
    "budget": {"max_steps": 100},
    "space": {"batch_size": [16, 64], "lr": [0.1]},
    "adaptive_batch": {"rule": "noise_scale", "max_batch_size": 512},
}


def spec_with(**sections: Any) -> dict[str, Any]:
    """BASE with whole top-level sections replaced (None removes one)."""
    data = copy.deepcopy(BASE)
    for name, value in sections.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def test_the_section_is_off_by_default_and_told_to_the_trials() -> None:
    off = parse_spec(spec_with(adaptive_batch=None))
    assert off.adaptive_batch.model_dump() == {
        "rule": "none",
        "eta": 0.7,
        "multiple": 1.0,
        "max_batch_size": None,
        "min_measurements": 4,
    }
    told = trial_settings(off, Path("."))
    assert (told.adaptive_rule, told.adaptive_max_batch_size) == ("none", None)
    spec = parse_spec(
        spec_with(
            adaptive_batch={
                "rule": "norm_test",
                "eta": 0.5,
                "max_batch_size": 512,
                "min_measurements": 2,
            },
            pruning={"kind": "asha"},
        )
    )
    told = trial_settings(spec, Path("."))
    assert (told.adaptive_rule, told.adaptive_eta, told.adaptive_multiple) == ("norm_test", 0.5, 1)
    assert told.adaptive_min_measurements == 2
    assert told.adaptive_max_batch_size == 512
    assert parse_spec(spec.to_yaml_dict()) == spec  # round trip
    # max_batch_size equal to the largest batch size: that one never grows, the rest may.
    parse_spec(spec_with(adaptive_batch={"rule": "noise_scale", "max_batch_size": 64}))


@pytest.mark.parametrize(
    ("sections", "field", "text"),
    [
        ({"adaptive_batch": {"rule": "noise_scale"}}, "adaptive_batch.max_batch_size", "required"),
        (
            {"adaptive_batch": {"rule": "norm_test", "max_batch_size": 32}},
            "adaptive_batch.max_batch_size",
            "32 is below the largest batch size in the space (64)",
        ),
        ({"measure": {"noise_every": 0}}, "measure.noise_every", "set it > 0"),
        ({"schedule": {"kind": "batch_step"}}, "adaptive_batch.rule", "batch_step"),
        (
            {"space": {"batch_size": [16], "lr": [0.1], "schedule": ["constant", "batch_step"]}},
            "adaptive_batch.rule",
            "use one of the two",
        ),
        ({"pruning": {"kind": "front"}}, "pruning.kind", "front compares trials"),
        ({"pruning": {"kind": "eps_opt"}}, "pruning.kind", "eps_opt compares trials"),
        (
            {"adaptive_batch": {"rule": "noise_scale", "eta": 0, "max_batch_size": 512}},
            "adaptive_batch.eta",
            "greater than 0",
        ),
        (
            {"adaptive_batch": {"rule": "noise_scale", "multiple": -1, "max_batch_size": 512}},
            "adaptive_batch.multiple",
            "greater than 0",
        ),
        (
            {"adaptive_batch": {"rule": "sqrt", "max_batch_size": 512}},
            "adaptive_batch.rule",
            "choose from none, norm_test, noise_scale",
        ),
        ({"space": {"batch_size": [1, 8], "lr": [0.1]}}, "space.batch_size", ">= 2"),
        (
            {
                "resources": {"workers_per_trial": 2, "max_micro_batch": 64},
                "measure": {"method": "per_example"},
            },
            "measure.method",
            "batch size(s) 16, 64 are accumulated",  # both grow to 512: shares of 256
        ),
    ],
)
def test_the_spec_refuses_what_an_adaptive_batch_cannot_do(
    sections: dict[str, Any], field: str, text: str
) -> None:
    lines = spec_problems(spec_with(**sections))
    hits = [line for line in lines if line.startswith(f"{field}: ")]
    assert hits and any(text in line for line in hits), lines


# --- the decision ----------------------------------------------------------------------------


def test_the_noise_scale_rule_is_a_multiple_of_b_simple_grown_rounded_and_capped() -> None:
    rule = AdaptiveBatch("noise_scale", B0, 500)
    # |G|² 1, tr Σ 100: B_simple 100, rounded up to 7·16.
    assert rule.decide(16, 1.0, 100.0) == 112 == rule.decided
    assert AdaptiveBatch("noise_scale", B0, 500, multiple=0.5).decide(16, 1.0, 100.0) == 64
    assert rule.decide(128, 1.0, 100.0) == 128  # never shrinks
    assert rule.decide(16, 1.0, 1e6) == 496  # the cap on the granularity B₀
    for g2, trace in ((math.nan, math.nan), (0.0, 5.0), (-1.0, 5.0)):  # nothing, or no B_simple
        assert rule.decide(32, g2, trace) == 32


def test_the_norm_test_is_its_closed_form_and_settles_at_b_simple_times_one_over_eta2_minus_1() -> (
    None
):
    rule = AdaptiveBatch("norm_test", B0, MAX, eta=0.5)
    # tr Σ/(η²(|G|² + tr Σ/B)) = B_simple·B/(η²(B + B_simple)) = 55.2 at B 16, B_simple 100.
    assert rule.proposal(16, 1.0, 100.0) == pytest.approx(norm_test_expected(100.0, 16, 0.5))
    assert rule.decide(16, 1.0, 100.0) == 64
    # Estimates held fixed, the test grows B until B ≥ B_simple(1/η² − 1) = 300: 304 = 19·16.
    sizes = [16]
    while (grown := rule.decide(sizes[-1], 1.0, 100.0)) != sizes[-1]:
        sizes.append(grown)
    assert sizes == [16, 64, 160, 256, 288, 304]
    # A negative |G|² estimate with a positive ‖g_B‖² = |G|² + tr Σ/B still asks for more.
    assert rule.decide(16, -2.0, 100.0) == 96  # 100/(0.25·4.25) = 94.1
    # With η = 1 the test asks for B_simple·B/(B + B_simple) < B: it never grows in
    # expectation (only where the estimates are noisy).
    plain = AdaptiveBatch("norm_test", B0, MAX, eta=1.0)
    assert all(plain.decide(b, 1.0, trace) == b for b in (16, 64) for trace in (1.0, 1e3, 1e9))


def test_the_norm_test_s_denominator_is_the_measured_batch_norm() -> None:
    """|G|² + tr Σ/B from the two-batch estimates at b_big = B is |g_B|² itself."""
    pair = NormPair(b_small=1.0, b_big=48.0, sq_small=7.5, sq_big=0.9)
    assert pair.g2() + pair.trace_sigma() / 48.0 == pytest.approx(0.9, rel=1e-12)


def test_the_rule_checks_its_arguments_and_keeps_its_decision() -> None:
    assert AdaptiveBatch.for_trial("none", B0, None, 1.0, 1.0) is None
    with pytest.raises(ValueError, match="max_batch_size"):
        AdaptiveBatch.for_trial("norm_test", B0, None, 1.0, 1.0)
    bad: dict[str, Any]
    for bad in ({"rule": "sqrt"}, {"maximum": 8}, {"eta": 0.0}, {"multiple": -1.0}):
        args: dict[str, Any] = {"rule": "noise_scale", "base": B0, "maximum": MAX, **bad}
        with pytest.raises(ValueError):
            AdaptiveBatch(**args)
    rule = AdaptiveBatch("noise_scale", B0, MAX)
    rule.decide(16, 1.0, 40.0)
    again = AdaptiveBatch("noise_scale", B0, MAX)
    again.load_state_dict(rule.state_dict())
    assert again.decided == rule.decided == 48


# --- the loop ---------------------------------------------------------------------------------


def settings(**overrides: Any) -> TrialSettings:
    """Linear regression, 200 steps, an evaluation and a measurement every 5 steps: every
    decision is taken at an evaluation, from the B_simple its report shows, and applies
    to the 5 steps up to the next one."""
    base: dict[str, Any] = {
        "workload_args": LINREG,
        "target_value": 0.0,
        "max_steps": 200,
        "eval_every": 5,
        "noise_every": 5,
        "patience_steps": 0,
        "adaptive_rule": "noise_scale",
        "adaptive_max_batch_size": MAX,
        "adaptive_min_measurements": 0,  # the rule from the first measured step on
    }
    return spec_trial_settings(**{**base, **overrides})


def run(s: TrialSettings, seed: int = 0, world: World | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(B0, 0.1, 0.0, 0, seed=seed), rows.append, world=world)
    return rows


def check_sizes(rows: list[dict[str, Any]]) -> None:
    sizes = [r[keys.BATCH_SIZE_NOW] for r in rows]
    assert all(B0 <= b <= MAX and b % B0 == 0 for b in sizes)
    assert sizes == sorted(sizes)  # never shrinks
    for a, b in itertools.pairwise(rows):  # B only changes at evaluations here
        assert b[keys.EXAMPLES] == a[keys.EXAMPLES] + 5 * b[keys.BATCH_SIZE_NOW]


def test_the_noise_scale_rule_s_batch_size_follows_the_measured_b_simple() -> None:
    """By hand (seeds 0–4, B₀ 16, lr 0.1): the exact B_simple grows from 30 to about 340 as
    the loss falls to its noise floor, B from 16 to 144–176. Over the second half of
    training B is 1.00–2.67 times the measured B_simple it was decided from (it never
    shrinks after a high estimate), and 0.45–1.9 times the exact one: the moving average
    lags a B_simple that grows tenfold. Seed 0: 1.01–1.41, 0.52–1.13."""
    rows = run(settings())
    check_sizes(rows)
    for a, b in itertools.pairwise(rows[1:]):
        # Decided after a's step, from the smoothed B_simple a reports: c·B_simple grown.
        assert b[keys.BATCH_SIZE_NOW] == grown_batch_size(
            a[keys.BATCH_SIZE_NOW], a[keys.B_SIMPLE], MAX, B0
        )
    sizes = [r[keys.BATCH_SIZE_NOW] for r in rows]
    assert sizes[1] == B0 and sizes[-1] >= 8 * B0  # it rises
    assert rows[-1]["true_b_simple"] > 5 * rows[0]["true_b_simple"]  # as B_simple does
    late = [(a, b) for a, b in itertools.pairwise(rows) if a[keys.STEP] >= 100]
    for a, b in late:
        assert 1.0 <= b[keys.BATCH_SIZE_NOW] / a[keys.B_SIMPLE] < 2.0
        assert 0.4 < b[keys.BATCH_SIZE_NOW] / a["true_b_simple"] < 2.5


def test_the_norm_test_s_batch_size_is_its_closed_form_on_the_measured_b_simple() -> None:
    """η = 0.5: B_next = B·B̂_simple/(η²(B + B̂_simple)) grown, which settles at
    B̂_simple(1/η² − 1) = 3 B̂_simple. By hand (seeds 0–4): B 16 → 350–460 in 200 steps,
    2.96–3.63 times the measured B_simple over the second half (seed 0)."""
    rows = run(settings(adaptive_rule="norm_test", adaptive_eta=0.5))
    check_sizes(rows)
    for a, b in itertools.pairwise(rows[1:]):
        proposed = norm_test_expected(a[keys.B_SIMPLE], a[keys.BATCH_SIZE_NOW], 0.5)
        # the same number as tr Σ/(η²(|G|² + tr Σ/B)) but for rounding: either side of it
        allowed = {
            grown_batch_size(a[keys.BATCH_SIZE_NOW], proposed * (1 + d), MAX, B0)
            for d in (-1e-9, 1e-9)
        }
        assert b[keys.BATCH_SIZE_NOW] in allowed
    assert rows[-1][keys.BATCH_SIZE_NOW] >= 16 * B0
    for a, b in itertools.pairwise(rows):
        if a[keys.STEP] >= 100:
            assert 2.5 < b[keys.BATCH_SIZE_NOW] / a[keys.B_SIMPLE] < 4.0


def test_the_examples_are_the_sum_of_the_steps_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured every 2 steps, evaluated every 5: the batch size changes between
    evaluations; the examples and the examples at the interpolated crossing are the sum of
    the sizes of the steps taken."""
    sizes: list[int] = []
    step = TrainingRun.train_step

    def recorded(self: TrainingRun, n: int) -> None:
        step(self, n)
        sizes.append(self.batch_size)

    monkeypatch.setattr(TrainingRun, "train_step", recorded)
    rows = run(settings(noise_every=2, target_value=0.2))
    consumed = [0]
    for size in sizes:
        consumed.append(consumed[-1] + size)
    assert all(r[keys.EXAMPLES] == consumed[r[keys.STEP]] for r in rows)
    assert len({r[keys.BATCH_SIZE_NOW] for r in rows}) >= 3
    changed = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
    assert any(i % 5 for i in changed)  # a step not after an evaluation
    last = rows[-1]
    assert last[keys.TRIAL_STATUS] == keys.REACHED
    s = last[keys.STEPS_TO_TARGET_INTERP]
    whole = math.floor(s)
    assert rows[-2][keys.STEP] <= s <= last[keys.STEP]
    assert last[keys.EXAMPLES_TO_TARGET_INTERP] == pytest.approx(
        consumed[whole] + (s - whole) * (sizes[whole] if whole < len(sizes) else 0)
    )


def test_a_resumed_trial_keeps_its_batch_size_and_its_decision(tmp_path: Path) -> None:
    """A checkpoint at every evaluation, taken after a measured step: the size decided
    there is in it, and the resumed trial continues as the uninterrupted one."""
    s = settings(checkpoint_every=1, max_steps=60)
    hp = Hyperparameters(B0, 0.1, 0.0, 0)
    first: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(s, hp, first.append, checkpoints=store)
    uninterrupted = sorted(first + store.reports, key=lambda r: r[keys.STEP])
    by_step = {r[keys.STEP]: r for r in uninterrupted}
    # A checkpoint whose step decided a larger batch size than it took.
    start = next(
        state
        for state in store.saved
        if state["adaptive_batch"]["decided"] > state["batch_size_now"]
    )
    step = int(start[keys.STEP])
    assert start["batch_size_now"] == by_step[step][keys.BATCH_SIZE_NOW]
    assert start["adaptive_batch"]["decided"] == by_step[step + 5][keys.BATCH_SIZE_NOW]
    continued = resumed_reports(s, hp, start, tmp_path / "again")
    assert [comparable(r) for r in continued] == [
        comparable(r) for r in uninterrupted if r[keys.STEP] > step
    ]
    # Without the decision (a checkpoint from before adaptive batches) the trial keeps
    # the checkpoint's size until its next measured step: not the same trial.
    old = {k: v for k, v in copy.deepcopy(start).items() if k != "adaptive_batch"}
    later = resumed_reports(s, hp, old, tmp_path / "old")
    assert later[0][keys.STEP] == step + 5
    assert later[0][keys.BATCH_SIZE_NOW] == start["batch_size_now"]


def _ddp_worker(rank: int, world: int, port: int, queue: Any) -> None:
    import tempfile

    import torch.distributed as dist

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-adaptive-batch-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        reports = run(ddp_settings(), world=World(rank, world))
        queue.put((rank, [sizes_of(r) for r in reports], [r[keys.LOSS] for r in reports]))
    finally:
        dist.destroy_process_group()


def ddp_settings() -> TrialSettings:
    # Every example's norm measured on both (one process: the first 32 by default).
    return settings(max_steps=60, per_example_rows=10**6)


def sizes_of(report: dict[str, Any]) -> tuple[Any, ...]:
    return (report[keys.STEP], report[keys.EXAMPLES], report[keys.BATCH_SIZE_NOW])


def test_two_ddp_workers_decide_as_one_process() -> None:
    """Each worker folds its own share's norms into its own averages; they are made one
    before every decision, so both workers decide alike, and as one process measuring
    the same examples' norms (the two-batch estimates are linear in them)."""
    one = run(ddp_settings())
    out = {rank: (rows, losses) for rank, rows, losses in run_gloo_workers(_ddp_worker, 2)}
    assert out[0] == out[1]  # one decision on both workers, at every step
    assert out[0][0] == [sizes_of(r) for r in one]
    assert len({size for _, _, size in out[0][0]}) >= 3  # it grew, twice at least
    assert out[0][1] == pytest.approx([r[keys.LOSS] for r in one], rel=1e-4)


# --- the results ----------------------------------------------------------------------------


def trial_row(trial_id: str, batch_size: int, steps: float, examples: float | None = None) -> dict:
    examples = steps * batch_size if examples is None else examples
    return {
        columns.TRIAL_ID: trial_id, columns.STATUS: keys.REACHED, keys.BATCH_SIZE: batch_size,
        keys.LR: 0.01 * batch_size, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0, keys.SEED: 0,
        keys.STEPS_TO_TARGET: steps, keys.STEPS_TO_TARGET_INTERP: steps,
        keys.EXAMPLES_TO_TARGET: examples, keys.EXAMPLES_TO_TARGET_INTERP: examples,
        columns.STEPS: steps, keys.EXAMPLES: examples, keys.SCHEDULE: "constant",
    }  # fmt: skip


def test_summarize_leaves_trials_whose_batch_grew_out_of_the_fit() -> None:
    """S(B) = 100(1 + 64/B) at fixed B = 8 … 512, and an adaptive trial at B₀ 8 that grew
    (more examples than its steps at 8): on the front with its own examples, out of the
    fit; a sweep of adaptive trials that all grew has no fit, and says why."""
    constant = [trial_row(f"c{b}", b, 100 * (1 + 64 / b)) for b in (8, 32, 128, 512)]
    grown = trial_row("a8", 8, 200.0, examples=9000.0)
    never = trial_row("n8", 16, 500.0)  # adaptive but never grew: one batch size
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    target = {"metric": "loss", "value": 0.1}
    mixed_trials = pd.DataFrame([*constant, grown], columns=TRIAL_COLUMNS)
    assert grown_batch(mixed_trials).tolist() == [False] * 4 + [True]
    assert not grown_batch(pd.DataFrame([never], columns=TRIAL_COLUMNS)).any()
    front = front_table(mixed_trials).set_index(keys.BATCH_SIZE)
    assert front.loc[8, columns.TRIAL_ID] == "a8" and front.loc[8, keys.EXAMPLES] == 9000
    mixed = summarize(mixed_trials, curves, front_table(mixed_trials), target)
    alone = pd.DataFrame(constant, columns=TRIAL_COLUMNS)
    plain = summarize(alone, curves, front_table(alone), target)
    assert mixed[columns.B_CRIT] == pytest.approx(plain[columns.B_CRIT]) == pytest.approx(64)
    assert mixed[keys.EPS_MAX] == pytest.approx(plain[keys.EPS_MAX])
    assert mixed[columns.FIT_NOTE] == GROWN_BATCH_FIT_NOTE and plain[columns.FIT_NOTE] is None
    adaptive = pd.DataFrame(
        [trial_row(f"a{b}", b, 50.0, examples=60.0 * b) for b in (8, 32, 128)],
        columns=TRIAL_COLUMNS,
    )
    alone_grown = summarize(adaptive, curves, front_table(adaptive), target)
    assert alone_grown[columns.B_CRIT] is None and alone_grown[columns.FIT_POINTS] == 0
    assert alone_grown[columns.FIT_NOTE] == ALL_GROWN_NOTE
    assert alone_grown[columns.B_CRIT_NOTE] == ALL_GROWN_NOTE
    assert alone_grown[keys.EPS_MAX] is None  # no lr law either


def test_no_decision_before_min_measurements_then_the_rule() -> None:
    """With min_measurements 4 (the default) and a measurement every 5 steps, the batch
    size stays B₀ until the 4th measured step (20) is in the estimates: the steps up to
    20 take B₀ whatever the first three estimates said, and from then on the rule holds
    as without the warm-up."""
    rows = run(settings(adaptive_min_measurements=4))
    by_step = {r[keys.STEP]: r for r in rows}
    assert all(by_step[s][keys.BATCH_SIZE_NOW] == B0 for s in (5, 10, 15, 20))
    assert grown_batch_size(B0, by_step[5][keys.B_SIMPLE], MAX, B0) > B0  # it would have grown
    for a, b in itertools.pairwise(rows[4:]):
        assert b[keys.BATCH_SIZE_NOW] == grown_batch_size(
            a[keys.BATCH_SIZE_NOW], a[keys.B_SIMPLE], MAX, B0
        )
    rule = AdaptiveBatch("noise_scale", B0, MAX, min_measurements=4)
    assert rule.decide(B0, 1.0, 100.0, measurements=3) == B0
    assert rule.decide(B0, 1.0, 100.0, measurements=4) == 112
