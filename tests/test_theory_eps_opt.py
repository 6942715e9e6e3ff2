"""ε_opt(B) against the exact one-step loss of a quadratic, and the ε_opt fits."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from tuner.theory import (
    EpsOptFit,
    effective_lr,
    eps_opt,
    fit_eps_max,
    fit_eps_opt,
    lr_ratio_to_eps_opt,
)

Array = npt.NDArray[np.float64]

# Noisy linear regression (see tests/test_theory_noise.py): S = diag(1/i), d = 1, σ² = 1.
LAM = 1.0 / np.arange(1, 9)
D = np.ones(8)
SIGMA2 = 1.0
# Scalar closed forms (DESIGN §1): ε_max = dᵀS²d/dᵀS³d, B_noise = 1 + (dᵀSd+σ²)tr(S²)/dᵀS³d.
EPS_MAX = float(np.sum(LAM**2 * D**2) / np.sum(LAM**3 * D**2))
B_NOISE = float(1 + (np.sum(LAM * D**2) + SIGMA2) * np.sum(LAM**2) / np.sum(LAM**3 * D**2))


def _expected_one_step_loss(eps: Array, b: float) -> Array:
    """E L(w − ε G_B) − L(w) = −ε|G|² + ½ε²(GᵀHG + tr(HΣ)/B), McCandlish et al. eq. 2.4.

    Built from the matrices H = S and Σ = SddᵀS + (dᵀSd + σ²)S, not from the scalar forms.
    """
    s = np.diag(LAM)
    g = s @ D
    sigma = np.outer(g, g) + (D @ s @ D + SIGMA2) * s
    quad = float(g @ s @ g + np.trace(s @ sigma) / b)
    return -eps * float(g @ g) + 0.5 * eps**2 * quad


@pytest.mark.parametrize("b", [1, 4, 16, 64, 256])
def test_eps_opt_minimises_exact_one_step_loss(b: int) -> None:
    grid = np.linspace(0.0, 2.0 * EPS_MAX, 400_001)
    loss = _expected_one_step_loss(grid, b)
    best = grid[np.argmin(loss)]
    predicted = eps_opt(b, EPS_MAX, B_NOISE)
    assert best == pytest.approx(predicted, abs=2 * (grid[1] - grid[0]))
    # A step of 2ε_opt gains nothing; larger steps raise the loss.
    assert _expected_one_step_loss(np.array(2 * predicted), b) == pytest.approx(0.0, abs=1e-12)
    assert _expected_one_step_loss(np.array(2.1 * predicted), b) > 0


@pytest.mark.parametrize(("b", "n_draws"), [(4, 100_000), (64, 8_000)])
def test_eps_opt_matches_monte_carlo_one_step(b: int, n_draws: int) -> None:
    # Population loss after one SGD step from a fixed w, averaged over n_draws batches:
    # mean_j L(d − εG_j) = L − ε·mean(dᵀSG_j) + ½ε²·mean(G_jᵀSG_j) exactly; argmin on a grid.
    rng = np.random.default_rng(b)
    x = rng.standard_normal((n_draws, b, LAM.size)) * np.sqrt(LAM)
    xi = rng.standard_normal((n_draws, b)) * math.sqrt(SIGMA2)
    g_b = (x * (x @ D - xi)[..., None]).mean(axis=1)
    lin = np.mean(g_b @ (LAM * D))
    quad = np.mean(np.sum(LAM * g_b**2, axis=-1))
    grid = np.linspace(0.0, 2.0 * EPS_MAX, 100_001)
    best = grid[np.argmin(-grid * lin + 0.5 * grid**2 * quad)]
    assert best == pytest.approx(eps_opt(b, EPS_MAX, B_NOISE), rel=0.02)


@pytest.mark.parametrize(
    ("b", "eps_max_", "b_noise_", "expected"),
    [
        (100.0, 0.4, 100.0, 0.2),  # B = B_noise: half of ε_max
        (7.0, 0.4, 0.0, 0.4),  # no noise: full-batch step at any B
        (1e12, 0.4, 100.0, 0.4),  # B → ∞
        (1.0, 1.0, 99.0, 0.01),  # B ≪ B_noise: linear scaling ε ≈ ε_max·B/B_noise
    ],
)
def test_eps_opt_values(b: float, eps_max_: float, b_noise_: float, expected: float) -> None:
    got = eps_opt(b, eps_max_, b_noise_)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9)


def test_eps_opt_broadcasts_and_rejects() -> None:
    out = eps_opt(np.array([1.0, 10.0, 100.0]), 1.0, 10.0)
    np.testing.assert_allclose(out, [1 / 11, 0.5, 1 / 1.1])
    with pytest.raises(ValueError, match="batch size"):
        eps_opt(0.0, 1.0, 10.0)
    with pytest.raises(ValueError, match="b_noise"):
        eps_opt(8.0, 1.0, -1.0)


@pytest.mark.parametrize(
    ("lr", "momentum", "expected"),
    [(0.1, 0.0, 0.1), (0.1, 0.9, 1.0), (0.01, 0.99, 1.0), (0.5, 0.5, 1.0)],
)
def test_effective_lr(lr: float, momentum: float, expected: float) -> None:
    assert effective_lr(lr, momentum) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5, math.nan])
def test_effective_lr_rejects_momentum(momentum: float) -> None:
    with pytest.raises(ValueError, match="momentum"):
        effective_lr(0.1, momentum)


@pytest.mark.parametrize(
    ("lr", "momentum", "b", "expected"),
    [
        (0.2, 0.0, 100.0, 1.0),  # at the optimum (ε_opt(100) = 0.2)
        (0.08, 0.9, 100.0, 4.0),  # effective 0.8: 4× above
        (0.05, 0.0, 100.0, 0.25),  # 4× below
        (0.01, 0.5, 1.0, 2 * 0.01 / (0.4 / 101)),
    ],
)
def test_lr_ratio_to_eps_opt(lr: float, momentum: float, b: float, expected: float) -> None:
    assert lr_ratio_to_eps_opt(lr, momentum, b, 0.4, 100.0) == pytest.approx(expected, rel=1e-12)


BATCHES = 2.0 ** np.arange(3, 13)


@pytest.mark.parametrize(
    ("batch_sizes", "eps_max_", "b_noise_"),
    [
        pytest.param(BATCHES, 0.5, 100.0, id="wide-range"),
        pytest.param(BATCHES, 3e-3, 8.0, id="small-b_noise"),
        pytest.param(BATCHES, 2.0, 5000.0, id="b_noise-above-max-B"),
        pytest.param(np.array([16.0, 256.0]), 0.1, 64.0, id="two-sizes"),
        pytest.param(np.array([32.0, 32.0, 128.0, 512.0, 512.0]), 1.0, 100.0, id="repeats"),
    ],
)
def test_fit_eps_opt_recovers_exact_points(
    batch_sizes: Array, eps_max_: float, b_noise_: float
) -> None:
    fit = fit_eps_opt(batch_sizes, eps_opt(batch_sizes, eps_max_, b_noise_))
    assert isinstance(fit, EpsOptFit)
    assert fit.eps_max == pytest.approx(eps_max_, rel=1e-6)
    assert fit.b_noise == pytest.approx(b_noise_, rel=1e-6)
    assert fit.rms_log < 1e-9
    assert not fit.at_bound
    assert fit_eps_max(batch_sizes, eps_opt(batch_sizes, eps_max_, b_noise_), b_noise_) == (
        pytest.approx(eps_max_, rel=1e-12)
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fit_eps_opt_with_multiplicative_noise(seed: int) -> None:
    # 5 % log-normal noise on 10 sizes: over 200 seeds the 99th-percentile errors were
    # 7 % (ε_max) and 13 % (B_noise); tolerances are about twice that.
    rng = np.random.default_rng(seed)
    lrs = eps_opt(BATCHES, 0.5, 100.0) * np.exp(rng.normal(0.0, 0.05, BATCHES.size))
    fit = fit_eps_opt(BATCHES, lrs)
    assert fit.eps_max == pytest.approx(0.5, rel=0.15)
    assert fit.b_noise == pytest.approx(100.0, rel=0.3)
    assert 0.01 < fit.rms_log < 0.1
    assert fit_eps_max(BATCHES, lrs, 100.0) == pytest.approx(0.5, rel=0.1)


def test_fit_eps_opt_weights() -> None:
    lrs = eps_opt(BATCHES, 0.5, 100.0)
    spoiled = lrs.copy()
    spoiled[3] *= 10.0
    weights = np.ones(BATCHES.size)
    weights[3] = 0.0
    fit = fit_eps_opt(BATCHES, spoiled, weights)
    assert fit.eps_max == pytest.approx(0.5, rel=1e-6)
    assert fit.b_noise == pytest.approx(100.0, rel=1e-6)
    assert fit_eps_max(BATCHES, spoiled, 100.0, weights) == pytest.approx(0.5, rel=1e-12)
    # Weights only matter relative to each other.
    rng = np.random.default_rng(5)
    noisy = lrs * np.exp(rng.normal(0.0, 0.1, BATCHES.size))
    w = rng.uniform(0.5, 2.0, BATCHES.size)
    a, b = fit_eps_opt(BATCHES, noisy, w), fit_eps_opt(BATCHES, noisy, 7.0 * w)
    assert a.b_noise == pytest.approx(b.b_noise, rel=1e-9)
    assert a.eps_max == pytest.approx(b.eps_max, rel=1e-9)


def test_fit_eps_opt_no_saturation_hits_upper_bound() -> None:
    # lr ∝ B over the whole range: B_noise runs to the grid end max(B)·100, only the slope
    # ε_max/B_noise is identified.
    fit = fit_eps_opt(BATCHES, 1e-3 * BATCHES)
    assert fit.at_bound
    assert fit.b_noise == pytest.approx(BATCHES.max() * 100, rel=1e-3)
    assert fit.eps_max / fit.b_noise == pytest.approx(1e-3, rel=0.01)


def test_fit_eps_opt_constant_lr_hits_lower_bound() -> None:
    fit = fit_eps_opt(BATCHES, np.full(BATCHES.size, 0.1))
    assert fit.at_bound
    assert fit.b_noise == pytest.approx(BATCHES.min() / 100, rel=1e-3)
    assert fit.eps_max == pytest.approx(0.1, rel=0.01)


def test_fit_eps_opt_momentum_via_effective_lr() -> None:
    momentum = np.array([0.0, 0.9, 0.5, 0.99, 0.0, 0.9])
    b = np.array([8.0, 32.0, 64.0, 256.0, 1024.0, 2048.0])
    lrs = eps_opt(b, 0.5, 100.0) * (1 - momentum)
    fit = fit_eps_opt(b, effective_lr(lrs, momentum))
    assert fit.eps_max == pytest.approx(0.5, rel=1e-6)
    assert fit.b_noise == pytest.approx(100.0, rel=1e-6)


@pytest.mark.parametrize(
    ("batch_sizes", "lrs", "weights", "match"),
    [
        ([64.0, 64.0, 64.0], [0.1, 0.2, 0.3], None, "distinct"),
        ([64.0], [0.1], None, "distinct"),
        ([], [], None, "no points"),
        ([16.0, 64.0], [0.1], None, "equal length"),
        ([[16.0, 64.0]], [[0.1, 0.2]], None, "1-D"),
        ([16.0, 64.0], [0.1, 0.0], None, "lrs"),
        ([16.0, 64.0], [0.1, -0.2], None, "lrs"),
        ([16.0, 64.0], [0.1, math.nan], None, "lrs"),
        ([0.0, 64.0], [0.1, 0.2], None, "batch_sizes"),
        ([-16.0, 64.0], [0.1, 0.2], None, "batch_sizes"),
        ([16.0, 64.0], [0.1, 0.2], [1.0, -1.0], "weights"),
        ([16.0, 64.0], [0.1, 0.2], [0.0, 0.0], "weights"),
        ([16.0, 64.0], [0.1, 0.2], [1.0], "weights"),
        ([16.0, 64.0, 256.0], [0.1, 0.2, 0.3], [1.0, 1.0, 0.0], None),  # 2 sizes left: fine
        ([16.0, 64.0, 256.0], [0.1, 0.2, 0.3], [1.0, 0.0, 0.0], "distinct"),
    ],
)
def test_fit_eps_opt_rejects(
    batch_sizes: list[float],
    lrs: list[float],
    weights: list[float] | None,
    match: str | None,
) -> None:
    if match is None:
        fit_eps_opt(batch_sizes, lrs, weights)
        return
    with pytest.raises(ValueError, match=match):
        fit_eps_opt(batch_sizes, lrs, weights)


@pytest.mark.parametrize(
    ("batch_sizes", "lrs", "b_noise_", "match"),
    [
        ([16.0, 64.0], [0.1, 0.2], -1.0, "b_noise"),
        ([16.0, 64.0], [0.1, 0.2], math.inf, "b_noise"),
        ([16.0], [0.0], 10.0, "lrs"),
        ([], [], 10.0, "no points"),
    ],
)
def test_fit_eps_max_rejects(
    batch_sizes: list[float], lrs: list[float], b_noise_: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fit_eps_max(batch_sizes, lrs, b_noise_)


def test_fit_eps_max_single_point() -> None:
    # One batch size suffices when B_noise is known.
    assert fit_eps_max([32.0], [eps_opt(32.0, 0.7, 64.0)], 64.0) == pytest.approx(0.7)
