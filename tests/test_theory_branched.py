"""Branched critical batch size (tuner.theory.branched) against McCandlish's model."""

from __future__ import annotations

import math

import pytest

from tuner.theory.branched import (
    BranchedBCrit,
    branched_b_crit,
    lr_multiplier,
    recommended_schedule,
)


def model_loss_after(b: float, b_noise: float, examples: float, start: float, rate: float) -> float:
    """McCandlish et al.'s model at the optimal lr: a step at batch b gains
    ΔL_max/(1 + B_noise/b), so Δ examples (Δ/b steps) gain rate·Δ/(b + B_noise)."""
    return start - rate * examples / (b + b_noise)


def test_the_branches_keep_up_below_the_closed_form_threshold_and_not_above() -> None:
    """keeps_up(k) ⇔ L0 − cΔ/(kB + Bn) ≤ (1 + tol)(L0 − cΔ/(B + Bn)), solved for k."""
    base, b_noise, delta, start, rate, tol = 16.0, 400.0, 1e4, 3.0, 0.01, 0.02
    base_loss = model_loss_after(base, b_noise, delta, start, rate)
    ks = [2.0**i for i in range(1, 9)]
    branches = {k: model_loss_after(k * base, b_noise, delta, start, rate) for k in ks}
    found = branched_b_crit(base, 0.3, base_loss, branches, tol)
    # Largest k with rate·Δ/(kB + Bn) ≥ L0 − (1 + tol)·base_loss:
    gain_needed = start - (1 + tol) * base_loss
    k_star = (rate * delta / gain_needed - b_noise) / base
    assert max(k for k in ks if k <= k_star) * base == found.b_crit
    assert found.interval == (found.b_crit, 2 * found.b_crit)
    assert not found.capped
    assert found.progress == 0.3


def test_a_diverged_branch_and_every_larger_one_do_not_keep_up() -> None:
    found = branched_b_crit(32, 1.0, 2.0, {2: 2.01, 4: math.nan, 8: 1.9}, tolerance=0.01)
    assert found.b_crit == 64 and found.interval == (64, 128)


def test_no_branch_keeping_up_gives_the_base_and_all_keeping_up_is_a_bound() -> None:
    assert branched_b_crit(32, 1.0, 2.0, {2: 2.5, 4: 2.6}, 0.01).b_crit == 32
    capped = branched_b_crit(32, 1.0, 2.0, {2: 2.0, 4: 2.0}, 0.01)
    assert capped.capped and capped.b_crit == 128 and math.isinf(capped.interval[1])
    with pytest.raises(ValueError, match="k > 1"):
        branched_b_crit(32, 1.0, 2.0, {1: 2.0}, 0.01)


def test_lr_multiplier_follows_the_optimisers_law() -> None:
    assert lr_multiplier("sgd", 4) == 4
    assert lr_multiplier("sgd_ema", 4) == 4
    assert lr_multiplier("adam", 4) == 2
    with pytest.raises(ValueError, match="unknown law"):
        lr_multiplier("lion", 4)


def test_the_recommended_schedule_never_shrinks_and_starts_at_the_base() -> None:
    points = [
        BranchedBCrit(0.1, 32, (32, 64), False),
        BranchedBCrit(0.5, 128, (128, 256), False),
        BranchedBCrit(0.3, 64, (64, 128), False),
        BranchedBCrit(0.7, 64, (64, 128), False),  # a dip is not followed
    ]
    assert recommended_schedule(points, 32) == [(0.1, 32), (0.3, 64), (0.5, 128)]
