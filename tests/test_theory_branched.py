"""Branched critical batch size (tuner.theory.branched) against McCandlish's model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.theory.branched import (
    BranchedBCrit,
    best_lr_factor,
    branched_b_crit,
    lr_multiplier,
    paired_gap,
    recommended_schedule,
    seed_mean,
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


def gain_at_lr(lr: float, b: float, g2: float, ghg: float, b_noise: float) -> float:
    """McCandlish et al.'s one-step gain at lr ε and batch b (their eq. 2.5 with their
    B_noise): ε|G|² − ½ε²·GᵀHG·(1 + B_noise/b), largest at ε_opt = ε_max/(1 + B_noise/b)
    with ε_max = |G|²/GᵀHG (eq. 2.6-2.7)."""
    return lr * g2 - 0.5 * lr**2 * ghg * (1 + b_noise / b)


def test_the_best_lr_factor_is_the_grid_point_nearest_the_optimal_lr() -> None:
    """Δ/k steps at k·B with lr η·k·f: the gain is a concave quadratic in f, symmetric
    about f* = ε_opt(kB)/(η·k), so the best factor of a grid is the one nearest f*; the
    law's linear scaling (f = 1) overshoots ε_max once η·k > ε_opt(kB)."""
    base, b_noise, g2, ghg, eta, steps = 16.0, 400.0, 1.0, 1.0, 0.1, 256
    factors = [0.125, 0.25, 0.5, 1.0]
    start = 10.0
    for k in (1, 2, 4, 8, 16, 32):
        losses = {
            f: start - steps / k * gain_at_lr(eta * k * f, k * base, g2, ghg, b_noise)
            for f in factors
        }
        f_star = g2 / ghg / (1 + b_noise / (k * base)) / (eta * k)
        nearest = min(factors, key=lambda f: abs(f - f_star))
        assert best_lr_factor(losses) == (nearest, losses[nearest])
    # At k = 32: ε_opt(512) = 1/(1 + 400/512) ≈ 0.56 < η·k = 3.2: f* ≈ 0.18.
    assert best_lr_factor(losses)[0] == 0.125


def test_the_lr_search_lifts_b_crit_where_the_law_overshoots() -> None:
    """The same model with η = ε_opt(B) = 1/26 (B = 16, B_noise = 400, ε_max = 1) and Δ = 520
    base steps: over Δ examples a branch gains 20·[f − f²(k + 25)/52], the base 10 (f = 1);
    at the best f, 26/(k + 25), it gains 260/(k + 25). With L0 = 30 (reference 20) and
    tol = 0.3, keeping up needs a gain ≥ 1.3·10 − 0.3·30 = 4: at f = 1 that is
    20(27 − k)/52 ≥ 4, k ≤ 16.6 (B_crit 256); on the grid {⅛, ¼, ½, 1}, k = 32 gains 4.52
    at f = ½ and k = 64 gains at most 2.86 (f = ¼) (B_crit 512)."""
    base, b_noise, eta, steps, start, tol = 16.0, 400.0, 1 / 26, 520, 30.0, 0.3
    factors = [0.125, 0.25, 0.5, 1.0]
    ks = [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]

    def loss(k: float, f: float) -> float:
        return start - steps / k * gain_at_lr(eta * k * f, k * base, 1.0, 1.0, b_noise)

    assert best_lr_factor({f: loss(1, f) for f in factors}) == (1.0, pytest.approx(20.0))
    reference = loss(1, 1.0)
    law_only = branched_b_crit(base, 0.5, reference, {k: loss(k, 1.0) for k in ks}, tol)
    best = {k: best_lr_factor({f: loss(k, f) for f in factors}) for k in ks}
    searched = branched_b_crit(base, 0.5, reference, {k: v[1] for k, v in best.items()}, tol)
    assert law_only.b_crit == 256 and law_only.interval == (256, 512)
    assert searched.b_crit == 512 and searched.interval == (512, 1024)
    assert best[32.0] == (0.5, pytest.approx(30 - 4.5192, abs=1e-4))
    assert best[64.0][0] == 0.25 and start - best[64.0][1] == pytest.approx(2.8606, abs=1e-4)


def test_ties_go_to_the_laws_own_lr_and_nothing_finite_gives_nan() -> None:
    assert best_lr_factor({0.5: 1.0, 1.0: 1.0, 2.0: 1.0}) == (1.0, 1.0)
    assert best_lr_factor({0.5: 1.0, 2.0: 1.0}) == (0.5, 1.0)
    assert best_lr_factor({0.5: 2.0, 1.0: math.nan}) == (0.5, 2.0)
    assert all(math.isnan(v) for v in best_lr_factor({0.5: math.nan, 1.0: math.inf}))


def test_seed_means_and_the_paired_gap() -> None:
    assert seed_mean([1.0, 2.0, 3.0]) == 2.0
    assert math.isnan(seed_mean([1.0, math.nan]))  # one diverged seed: not kept up
    mean, se = paired_gap([1.1, 1.2], [1.0, 1.0])  # gaps 0.1, 0.2: sd 0.0707, se sd/√2
    assert mean == pytest.approx(0.15) and se == pytest.approx(0.05)
    one = paired_gap([1.1], [1.0])
    assert one[0] == pytest.approx(0.1) and math.isnan(one[1])
    assert all(math.isnan(v) for v in paired_gap([math.inf, 1.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="one branch loss per reference"):
        paired_gap([1.0], [1.0, 1.0])


def test_the_paired_gap_s_standard_error_is_the_spread_of_its_mean_over_seeds() -> None:
    """The standard error is what it says: over many draws of S paired seeds (branch and
    reference sharing each seed's stream noise, the branch with its own on top), the
    mean of se² equals the variance of the mean gap, and mean ± t(0.975, S−1)·se covers
    the true mean gap 95% of the time."""
    rng = np.random.default_rng(0)
    draws, seeds, true_gap = 4000, 3, 0.02
    shared = rng.normal(0.0, 0.05, size=(draws, seeds))  # the stream, common to both
    reference = 1.0 + shared
    branch = (1.0 + true_gap) * reference + rng.normal(0.0, 0.01, size=(draws, seeds))
    results = np.array([paired_gap(b, r) for b, r in zip(branch, reference, strict=True)])
    means, ses = results[:, 0], results[:, 1]
    assert np.mean(ses**2) == pytest.approx(np.var(means), rel=0.08)
    t_975_2dof = 4.302653
    covered = np.abs(means - true_gap) <= t_975_2dof * ses
    assert covered.mean() == pytest.approx(0.95, abs=0.015)
