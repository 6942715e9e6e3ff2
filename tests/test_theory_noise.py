"""Noise-scale estimators against the closed forms of noisy linear regression.

x ~ N(0, S) with S = diag(1/i), y = x·w* + ξ, Var ξ = σ², d = w − w*, loss ½(x·w − y)².
Per-example gradient g = x(xᵀd − ξ); G = Sd, H = S, Σ = SddᵀS + (dᵀSd + σ²)S (Isserlis).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from tuner.theory import (
    NoiseScaleEMA,
    b_noise,
    b_simple,
    b_simple_halfwidth,
    eps_max,
    g2_estimate,
    ghg_estimate,
    pooled_noise_scale,
    pooling_weight,
    trace_h_sigma_estimate,
    trace_sigma_estimate,
)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LinReg:
    lam: Array  # eigenvalues of S (diagonal)
    d: Array  # w − w*
    sigma2: float

    @property
    def g2(self) -> float:
        return float(np.sum((self.lam * self.d) ** 2))

    @property
    def ghg(self) -> float:
        return float(np.sum(self.lam**3 * self.d**2))

    @property
    def dsd(self) -> float:
        return float(np.sum(self.lam * self.d**2))

    @property
    def trace_sigma(self) -> float:
        return self.g2 + (self.dsd + self.sigma2) * float(self.lam.sum())

    @property
    def trace_h_sigma(self) -> float:
        return self.ghg + (self.dsd + self.sigma2) * float(np.sum(self.lam**2))

    def per_example_grads(self, rng: np.random.Generator, n: int, b: int) -> Array:
        """Shape (n, b, dim): n independent batches of b per-example gradients."""
        x = rng.standard_normal((n, b, self.lam.size)) * np.sqrt(self.lam)
        xi = rng.standard_normal((n, b)) * math.sqrt(self.sigma2)
        return x * (x @ self.d - xi)[..., None]


PROBLEM = LinReg(lam=1.0 / np.arange(1, 9), d=np.ones(8), sigma2=1.0)


def test_closed_forms_of_the_problem() -> None:
    # B_simple, B_noise, ε_max as written in DESIGN §1 agree with the matrix definitions.
    p = PROBLEM
    s = np.diag(p.lam)
    sigma = s @ np.outer(p.d, p.d) @ s + (p.dsd + p.sigma2) * s
    g = s @ p.d
    assert np.trace(sigma) == pytest.approx(p.trace_sigma, rel=1e-12)
    assert np.trace(s @ sigma) == pytest.approx(p.trace_h_sigma, rel=1e-12)
    assert b_simple(p.trace_sigma, p.g2) == pytest.approx(
        1 + (p.dsd + p.sigma2) * p.lam.sum() / p.g2, rel=1e-12
    )
    assert b_noise(p.trace_h_sigma, p.ghg) == pytest.approx(
        1 + (p.dsd + p.sigma2) * np.sum(p.lam**2) / p.ghg, rel=1e-12
    )
    assert eps_max(g @ g, g @ s @ g) == pytest.approx(
        np.sum(p.lam**2 * p.d**2) / np.sum(p.lam**3 * p.d**2), rel=1e-12
    )


@pytest.mark.parametrize(
    ("small_sizes", "n_draws"),
    [
        pytest.param([1] * 8, 40_000, id="per-example-vs-8"),
        pytest.param([4] * 16, 10_000, id="16x4-vs-64"),
        pytest.param([4, 12, 16, 32], 10_000, id="unequal-micro-batches-harmonic-b_small"),
    ],
)
@pytest.mark.parametrize("inner", ["euclidean", "hessian"])
def test_two_batch_estimators_are_unbiased(
    small_sizes: list[int], n_draws: int, inner: str
) -> None:
    # Micro-batches and the big batch share the same examples (same weights, pitfall 5);
    # the mean of |G_small|² over unequal micro-batches has E = |G|² + tr(Σ)·mean(1/b_i).
    p = PROBLEM
    rng = np.random.default_rng(1234)
    b_big = sum(small_sizes)
    g = p.per_example_grads(rng, n_draws, b_big)
    bounds = np.cumsum([0, *small_sizes])
    g_small = np.stack([g[:, a:b].mean(axis=1) for a, b in itertools.pairwise(bounds)], axis=1)
    g_big = g.mean(axis=1)
    metric = p.lam if inner == "hessian" else np.ones_like(p.lam)
    sq_small = np.sum(metric * g_small**2, axis=-1).mean(axis=1)
    sq_big = np.sum(metric * g_big**2, axis=-1)
    b_small = len(small_sizes) / sum(1.0 / s for s in small_sizes)

    if inner == "hessian":
        est_g = ghg_estimate(b_small, b_big, sq_small, sq_big)
        est_t = trace_h_sigma_estimate(b_small, b_big, sq_small, sq_big)
        true_g, true_t = p.ghg, p.trace_h_sigma
    else:
        est_g = g2_estimate(b_small, b_big, sq_small, sq_big)
        est_t = trace_sigma_estimate(b_small, b_big, sq_small, sq_big)
        true_g, true_t = p.g2, p.trace_sigma

    for est, truth in ((est_g, true_g), (est_t, true_t)):
        stderr = est.std(ddof=1) / math.sqrt(n_draws)
        assert stderr < 0.03 * truth  # the check has teeth
        # 4.5 standard errors: a false failure has probability < 1e-5 per check.
        assert abs(est.mean() - truth) < 4.5 * stderr


def test_bias_trap_mean_of_ratios_vs_ratio_of_averages() -> None:
    # 16 workers × 4 examples, all-reduced batch of 64, measured for 4000 steps.
    p = PROBLEM
    truth = p.trace_sigma / p.g2
    rng = np.random.default_rng(0)
    n_steps, b_small, b_big = 4000, 4, 64
    g = p.per_example_grads(rng, n_steps, b_big)
    sq_local = np.sum(g.reshape(n_steps, 16, b_small, -1).mean(axis=2) ** 2, axis=-1)
    sq_big = np.sum(g.mean(axis=1) ** 2, axis=-1)

    # One worker's local norm per step: the per-step ratio is centred far below the truth
    # (its mean does not even exist: the |G|² estimate crosses zero).
    g2_one = g2_estimate(b_small, b_big, sq_local[:, 0], sq_big)
    tr_one = trace_sigma_estimate(b_small, b_big, sq_local[:, 0], sq_big)
    assert np.median(tr_one / g2_one) < 0.5 * truth
    assert np.any(g2_one <= 0)

    # Mean of the 16 local norms: per-step ratios are still biased upward (Jensen).
    g2_all = g2_estimate(b_small, b_big, sq_local.mean(axis=1), sq_big)
    tr_all = trace_sigma_estimate(b_small, b_big, sq_local.mean(axis=1), sq_big)
    assert np.mean(tr_all / g2_all) > 1.05 * truth

    # Separate averages, then divide: within 10 % with the default beta, 3 % as a running mean.
    for beta, tol in ((0.99, 0.10), (0.9999, 0.03)):
        ema = NoiseScaleEMA(beta=beta, horizon=1.0)
        for a, t in zip(g2_all, tr_all, strict=True):
            ema.update(float(a), float(t))
        assert ema.scale == pytest.approx(truth, rel=tol)


@pytest.mark.parametrize("beta", [0.9, 0.99])
def test_ema_is_running_mean_then_exponential(beta: float) -> None:
    rng = np.random.default_rng(7)
    n_warm = round(1 / (1 - beta))
    xs = rng.normal(3.0, 1.0, size=n_warm + 50)
    ys = rng.normal(10.0, 2.0, size=n_warm + 50)
    ema = NoiseScaleEMA(beta=beta, horizon=1.0)
    for i in range(n_warm):
        ema.update(float(xs[i]), float(ys[i]))
        assert ema.count == i + 1
        assert ema.signal == pytest.approx(xs[: i + 1].mean(), rel=1e-12)
        assert ema.noise == pytest.approx(ys[: i + 1].mean(), rel=1e-12)
    g2_ref, tr_ref = ema.signal, ema.noise
    for i in range(n_warm, xs.size):
        ema.update(float(xs[i]), float(ys[i]))
        g2_ref = beta * g2_ref + (1 - beta) * xs[i]
        tr_ref = beta * tr_ref + (1 - beta) * ys[i]
    assert ema.signal == pytest.approx(g2_ref, rel=1e-12)
    assert ema.noise == pytest.approx(tr_ref, rel=1e-12)
    assert ema.scale == pytest.approx(tr_ref / g2_ref, rel=1e-12)


def test_ema_ignores_non_finite_and_starts_nan() -> None:
    ema = NoiseScaleEMA(horizon=1.0)
    assert math.isnan(ema.scale)
    assert math.isnan(ema.signal)
    assert math.isnan(ema.noise)
    for g2, tr in ((math.nan, 1.0), (1.0, math.inf), (-math.inf, 2.0)):
        ema.update(g2, tr)
    assert ema.count == 0
    assert math.isnan(ema.scale)
    ema.update(2.0, 8.0)
    ema.update(math.nan, math.nan)
    ema.update(4.0, math.inf)
    assert ema.count == 1
    assert ema.scale == 4.0
    ema.update(-6.0, 8.0)  # mean |G|² now negative: B_simple undefined
    assert ema.signal == -2.0
    assert math.isnan(ema.scale)


@pytest.mark.parametrize("horizon", [2.0, 3.0, 4.0])
def test_ema_horizon_weights_grow_polynomially(horizon: float) -> None:
    """With beta_t = 1 − c/t, update s carries weight ∝ (s−1)(s−2)…(s−c+1) for s >= c."""
    rng = np.random.default_rng(3)
    n, c = 60, int(horizon)
    xs, ys = rng.uniform(1, 2, n), rng.uniform(1, 5, n)
    ema = NoiseScaleEMA(beta=0.999, horizon=horizon)
    for x, y in zip(xs, ys, strict=True):
        ema.update(float(x), float(y))
    s = np.arange(1, n + 1)
    weights = np.where(s >= c, np.prod([s - j for j in range(1, c)], axis=0), 0.0)
    assert ema.signal == pytest.approx(np.sum(weights * xs) / weights.sum(), rel=1e-10)
    assert ema.noise == pytest.approx(np.sum(weights * ys) / weights.sum(), rel=1e-10)


def test_ema_rejects_horizon_below_one() -> None:
    with pytest.raises(ValueError, match="horizon"):
        NoiseScaleEMA(horizon=0.5)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_ema_rejects_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        NoiseScaleEMA(beta=beta)


@pytest.mark.parametrize(
    ("b_small", "b_big", "match"),
    [(0.0, 8.0, "b_small"), (-1.0, 8.0, "b_small"), (8.0, 8.0, "b_big"), (16.0, 8.0, "b_big")],
)
def test_estimators_reject_bad_batch_sizes(b_small: float, b_big: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        g2_estimate(b_small, b_big, 1.0, 0.5)
    with pytest.raises(ValueError, match=match):
        trace_sigma_estimate(b_small, b_big, 1.0, 0.5)


def test_estimators_exact_on_noise_free_norms() -> None:
    # sq(B) = |G|² + tr(Σ)/B exactly ⇒ both estimators return the inputs; arrays broadcast.
    g2, tr = 2.0, 30.0
    b_small, b_big = np.array([1.0, 2.5, 8.0]), np.array([4.0, 10.0, 1024.0])
    sq_small, sq_big = g2 + tr / b_small, g2 + tr / b_big
    np.testing.assert_allclose(g2_estimate(b_small, b_big, sq_small, sq_big), g2, rtol=1e-12)
    np.testing.assert_allclose(
        trace_sigma_estimate(b_small, b_big, sq_small, sq_big), tr, rtol=1e-12
    )
    out = g2_estimate(2.0, 8.0, g2 + tr / 2, g2 + tr / 8)
    assert isinstance(out, float)
    assert out == pytest.approx(g2)


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [(10.0, 2.0, 5.0), (10.0, 0.0, math.nan), (10.0, -1.0, math.nan), (0.0, 3.0, 0.0)],
)
def test_ratios_nan_for_non_positive_denominator(num: float, den: float, expected: float) -> None:
    for fn in (b_simple, b_noise, eps_max):
        got = fn(num, den)
        assert isinstance(got, float)
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected)
    np.testing.assert_array_equal(b_simple([10.0, 10.0], [2.0, 0.0]), [5.0, math.nan])


@pytest.mark.parametrize(
    ("b", "b_simple_", "n", "expected"),
    [
        (100.0, 100.0, 1.0, 1.2),
        (100.0, 0.0, 4.0, 0.3),
        (10.0, 1000.0, 100.0, 0.6 * 101 / 10),
        (1000.0, 10.0, 36.0, 0.6 * 1.01 / 6),
    ],
)
def test_b_simple_halfwidth(b: float, b_simple_: float, n: float, expected: float) -> None:
    assert b_simple_halfwidth(b, b_simple_, n) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("b", "n"), [(0.0, 10.0), (-1.0, 10.0), (10.0, 0.0)])
def test_b_simple_halfwidth_rejects(b: float, n: float) -> None:
    with pytest.raises(ValueError):
        b_simple_halfwidth(b, 100.0, n)


@pytest.mark.parametrize(
    ("b", "b_simple_", "expected"),
    [(100.0, 100.0, 0.25), (1.0, 0.0, 1.0), (4.0, 12.0, 1.0 / 16)],
)
def test_pooling_weight_values(b: float, b_simple_: float, expected: float) -> None:
    assert pooling_weight(b, b_simple_) == pytest.approx(expected, rel=1e-12)


def test_pooling_weight_asymptotes() -> None:
    # ≈ (b/B_simple)² for b ≪ B_simple, → 1 for b ≫ B_simple; inverse square of halfwidth.
    assert pooling_weight(1.0, 1e4) == pytest.approx((1.0 / 1e4) ** 2, rel=1e-3)
    assert pooling_weight(1e6, 10.0) == pytest.approx(1.0, rel=1e-4)
    b = np.array([1.0, 10.0, 100.0, 1000.0])
    w = pooling_weight(b, 200.0)
    h = b_simple_halfwidth(b, 200.0, 1.0)
    np.testing.assert_allclose(w * h**2, 0.36, rtol=1e-12)
    assert math.isnan(pooling_weight(10.0, math.nan))
    with pytest.raises(ValueError):
        pooling_weight(10.0, -1.0)
    with pytest.raises(ValueError):
        pooling_weight(0.0, 1.0)


def test_pooled_noise_scale_weights_by_batch_size_and_ignores_bad_values() -> None:
    # Equal batch sizes: a plain geometric mean; nan and non-positive values are left out.
    assert pooled_noise_scale([100.0, 400.0, math.nan, -1.0], [64, 64, 64, 64]) == pytest.approx(
        200.0
    )
    # A trial at B << B_simple measures badly and barely counts.
    pooled = pooled_noise_scale([1000.0, 100.0], [4.0, 4096.0])
    assert 100.0 < pooled < 110.0
    # The reference scale sets the weights (as when pooling eps_max with the pooled B_noise).
    assert pooled_noise_scale([1.0, 4.0], [10.0, 1000.0], reference=100.0) == pytest.approx(
        math.exp((0.0083 * 0 + 0.8264 * math.log(4.0)) / (0.0083 + 0.8264)), rel=1e-2
    )
    assert math.isnan(pooled_noise_scale([math.nan], [16.0]))
