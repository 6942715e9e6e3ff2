"""tuner.theory.curve_race against closed forms and exact simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner import theory


def test_curve_noise_of_a_smooth_curve_is_zero() -> None:
    steps = np.arange(50.0)
    assert theory.curve_noise(list(3.0 - 0.02 * steps + 1e-4 * steps**2)) == pytest.approx(
        0, abs=1e-12
    )


@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_curve_noise_recovers_white_noise_around_a_falling_curve(sigma: float) -> None:
    """Δ² of white noise has variance 6σ²: the MAD estimate comes within 5% of σ over
    20,000 reports."""
    rng = np.random.default_rng(0)
    steps = np.arange(20_000.0)
    values = 1.0 / (1.0 + 1e-3 * steps) + sigma * rng.standard_normal(steps.size)
    assert theory.curve_noise(list(values)) == pytest.approx(sigma, rel=0.05)


def test_curve_noise_needs_four_finite_values() -> None:
    assert math.isnan(theory.curve_noise([1.0, math.nan, 0.5, 0.4]))


def test_step_reaching_interpolates_between_reports() -> None:
    steps, values = [0, 10, 20, 30], [1.0, 0.8, 0.4, 0.2]
    assert theory.step_reaching(steps, values, 0.6) == pytest.approx(15.0)
    assert theory.step_reaching(steps, values, 1.5) == 0.0
    assert theory.step_reaching(steps, values, 0.1) == math.inf
    assert theory.step_reaching([0, 10, 20], [1.0, math.nan, 0.5], 0.75) == pytest.approx(10.0)


def test_lag_ratio_of_a_time_rescaled_curve_is_the_rescaling() -> None:
    """Gradient flow at rate ε: L(t) = exp(−εt). A run at ε/k is at L(t/k) at step t, a
    value the leader (rate ε) reached at step t/k: the lag is k exactly."""
    leader_steps = list(np.arange(0.0, 1001.0))
    leader_values = [math.exp(-0.01 * s) for s in leader_steps]
    for k in (1.0, 2.0, 3.5):
        step = 600.0
        value = math.exp(-0.01 * step / k)
        lag = theory.lag_ratio(step, value, leader_steps, leader_values)
        assert lag == pytest.approx(k, rel=1e-3)


def test_lag_ratio_margin_and_ends() -> None:
    leader_steps, leader_values = [0.0, 100.0, 200.0], [1.0, 0.5, 0.25]
    # At 0.5 by step 200: the leader was there at 100 (lag 2); less a margin of 0.25, at
    # 0.25, it was there only at 200 (lag 1).
    assert theory.lag_ratio(200, 0.5, leader_steps, leader_values) == pytest.approx(2.0)
    assert theory.lag_ratio(200, 0.5, leader_steps, leader_values, margin=0.25) == pytest.approx(
        1.0
    )
    assert theory.lag_ratio(0, 2.0, leader_steps, leader_values) == 0.0
    assert (
        theory.lag_ratio(50, 2.0, leader_steps, leader_values) == math.inf
    )  # worse than its start
    assert theory.lag_ratio(50, 0.1, leader_steps, leader_values) == 0.0  # ahead of the leader
