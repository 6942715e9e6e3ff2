"""How an evaluation ends a trial (trainables.parts.judge), on plain curves: no training."""

from __future__ import annotations

import math

import pytest

from trainables import keys
from trainables.parts.judge import Judge, Verdict
from trainables.settings import Target


def judge_curve(judge: Judge, curve: list[tuple[int, float]]) -> tuple[int, Verdict]:
    """Feed (step, value) evaluations until one ends; the loss is the value where the
    target is a loss (mode min), else a constant 1."""
    verdict = Verdict(keys.RUNNING)
    for step, value in curve:
        loss = value if judge.target.mode == "min" else 1.0
        verdict = judge.judge(step, loss, value)
        if verdict.status != keys.RUNNING:
            return step, verdict
    return curve[-1][0], verdict


def falling(start: float, rate: float, every: int, steps: int) -> list[tuple[int, float]]:
    return [(t, start * math.exp(-rate * t)) for t in range(0, steps + 1, every)]


@pytest.mark.parametrize(
    ("target", "curve", "status", "step", "interp"),
    [
        # min: reached between 20 (0.4) and 30 (0.2) at 0.3: interpolated 25
        (Target("loss", 0.3), [(0, 1.0), (10, 0.6), (20, 0.4), (30, 0.2)], keys.REACHED, 30, 25.0),
        # max: an accuracy rising to 0.9, crossed a quarter of the way from 10 to 20
        (
            Target("accuracy", 0.9, "max"),
            [(0, 0.1), (10, 0.8), (20, 1.2)],
            keys.REACHED,
            20,
            12.5,
        ),
        # met by the untrained model: reached at step 0, crossing 0
        (Target("accuracy", 0.1, "min"), [(0, 0.05)], keys.REACHED, 0, 0.0),
        (Target("accuracy", 0.05, "max"), [(0, 0.1)], keys.REACHED, 0, 0.0),
        # never met within the budget of 30 steps
        (
            Target("loss", 0.01),
            [(0, 1.0), (10, 0.5), (20, 0.3), (30, 0.2)],
            keys.EXHAUSTED,
            30,
            None,
        ),
        # more than 10x the initial loss, or not finite
        (Target("loss", 0.1), [(0, 1.0), (10, 11.0)], keys.DIVERGED, 10, None),
        (Target("loss", 0.1), [(0, 1.0), (10, math.nan)], keys.DIVERGED, 10, None),
    ],
)
def test_verdicts(
    target: Target, curve: list[tuple[int, float]], status: str, step: int, interp: float | None
) -> None:
    ended, verdict = judge_curve(Judge(target, max_steps=30), curve)
    assert (ended, verdict.status) == (step, status)
    if interp is None:
        assert math.isnan(verdict.steps_interp)
    else:
        assert verdict.steps_interp == pytest.approx(interp)


def test_a_loss_that_starts_at_or_below_zero_never_diverges_by_ratio() -> None:
    """A log-likelihood can start negative: 10x a negative loss is no divergence rule."""
    judge = Judge(Target("loss", -50.0), max_steps=100)
    ended, verdict = judge_curve(judge, [(0, -1.0), (10, -2.0), (20, -60.0)])
    assert (ended, verdict.status) == (20, keys.REACHED)


def test_a_net_stuck_where_it_started_stalls_after_the_patience() -> None:
    """Cross-entropy at chance (2.30) with noise below 1% of the way to the target."""
    judge = Judge(Target("loss", 0.5), max_steps=2000, patience_steps=500)
    curve = [(t, 2.3026 + 0.005 * math.sin(t)) for t in range(0, 2001, 20)]
    ended, verdict = judge_curve(judge, curve)
    assert (ended, verdict.status) == (500, keys.STALLED)
    assert "no evaluation since step 0 closed 0.01 of the distance left" in verdict.reason


def test_slow_steady_progress_does_not_stall() -> None:
    """0.5% of the way per evaluation: each record takes two evaluations, never 500 steps."""
    judge = Judge(Target("loss", 0.0), max_steps=2000, patience_steps=500)
    curve = [(t, 1.0 - 0.005 * t / 20) for t in range(0, 2001, 20)]
    ended, verdict = judge_curve(judge, curve)
    assert (ended, verdict.status) == (2000, keys.EXHAUSTED)


def test_a_plateau_after_progress_stalls_patience_steps_after_the_last_record() -> None:
    judge = Judge(Target("accuracy", 0.95, "max"), max_steps=5000, patience_steps=300)
    curve = [(t, min(0.1 + 0.002 * t, 0.5)) for t in range(0, 5001, 50)]  # flat from step 200
    ended, verdict = judge_curve(judge, curve)
    assert verdict.status == keys.STALLED and judge.record_step == 200 and ended == 500


def test_a_curve_closing_in_slowly_on_its_target_is_not_stalled() -> None:
    """L(t) = 0.25 + 2.05/(1 + 40t/T) meets 0.3 exactly at T = 2000: late in the budget
    it gains little in absolute terms, but a large share of what is left to do."""
    judge = Judge(Target("loss", 0.3), max_steps=2000, patience_steps=500)
    curve = [(t, 0.25 + 2.05 / (1 + 40 * t / 2000)) for t in range(0, 2001, 20)]
    ended, verdict = judge_curve(judge, curve)
    assert (ended, verdict.status) == (2000, keys.REACHED)


def test_a_large_first_drop_does_not_set_the_bar_for_later_records() -> None:
    """An MSE from 1e4 to 2 in 20 steps, then slowly on: the records after the drop are
    measured against what is left, not against the first distance."""
    judge = Judge(Target("loss", 0.1), max_steps=1000, patience_steps=100)
    curve = [(0, 1e4)] + [(t, 0.1 + 1.9 * math.exp(-(t - 20) / 300)) for t in range(20, 1001, 20)]
    ended, verdict = judge_curve(judge, curve)
    assert verdict.status == keys.EXHAUSTED and ended == 1000


def test_the_stall_rule_waits_for_the_warmup_and_can_be_off() -> None:
    flat = [(t, 1.0) for t in range(0, 1001, 10)]
    warm = Judge(Target("loss", 0.1), 1000, patience_steps=100, warmup_steps=400)
    ended, _ = judge_curve(warm, flat)
    assert ended == 500  # the patience counts from the end of the warmup
    ended, verdict = judge_curve(Judge(Target("loss", 0.1), 1000, patience_steps=0), flat)
    assert (ended, verdict.status) == (1000, keys.EXHAUSTED)


def test_the_state_carries_across_a_checkpoint() -> None:
    """A judge restored from `state_dict` judges the rest of the curve as one that never
    stopped (the stall clock, the initial loss, the evaluation before the crossing)."""
    curve = [(t, max(1.0 - 0.01 * t, 0.45)) for t in range(0, 301, 10)]
    whole = Judge(Target("loss", 0.3), max_steps=300, patience_steps=120)
    expected = judge_curve(whole, curve)
    first = Judge(Target("loss", 0.3), max_steps=300, patience_steps=120)
    judge_curve(first, curve[:8])
    again = Judge(Target("loss", 0.3), max_steps=300, patience_steps=120)
    again.load_state_dict(first.state_dict())
    assert judge_curve(again, curve[8:]) == expected
    assert expected[1].status == keys.STALLED


def test_target_text_and_direction() -> None:
    assert str(Target("loss", 0.3)) == "loss <= 0.3"
    assert str(Target("accuracy", 0.96, "max")) == "accuracy >= 0.96"
    with pytest.raises(ValueError, match="mode"):
        Target("loss", 0.3, "lower")


def test_the_examples_budget_exhausts_a_trial_before_its_steps() -> None:
    """A trial whose batch grew spends max_examples before max_steps: exhausted at the
    first evaluation whose examples reach it; none given, only the steps count."""
    judge = Judge(Target("loss", 0.0), max_steps=100, max_examples=1000)
    assert judge.judge(0, 1.0, 1.0, examples=0).status == keys.RUNNING
    assert judge.judge(10, 0.9, 0.9, examples=999).status == keys.RUNNING
    verdict = judge.judge(11, 0.8, 0.8, examples=1040)
    assert verdict.status == keys.EXHAUSTED and "1040 examples" in verdict.reason
    free = Judge(Target("loss", 0.0), max_steps=100)
    free.judge(0, 1.0, 1.0)
    assert free.judge(10, 0.9, 0.9, examples=10**9).status == keys.RUNNING
