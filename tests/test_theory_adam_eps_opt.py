"""Adam's ε_opt(B) (Li et al. 2024): closed forms, limits, the paper's own theory behind
it, and the fits; and which law `tuner.theory.lr_laws` applies to which optimiser."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from tuner.theory import (
    LAW_OF_OPTIMIZER,
    EpsOptFit,
    eps_opt,
    eps_opt_adam,
    fit_eps_max_adam,
    fit_eps_opt_adam,
    fit_tradeoff,
    highest_plausible_eps_opt,
    law_model,
    lr_at,
    predicted_eps_opt,
    rate,
    steps_for,
)

Array = npt.NDArray[np.float64]


def test_the_peak_is_eps_max_at_b_noise() -> None:
    assert eps_opt_adam(300.0, 0.01, 300.0) == pytest.approx(0.01, rel=1e-15)
    b = np.geomspace(1.0, 1e5, 2001)
    curve = np.asarray(eps_opt_adam(b, 0.01, 300.0))
    assert b[np.argmax(curve)] == pytest.approx(300.0, rel=0.01)
    assert curve.max() <= 0.01 * (1 + 1e-15)


def test_square_root_scaling_far_below_and_inverse_square_root_far_above() -> None:
    eps_max, b_noise = 3e-3, 1e4
    for b in (1e-2, 1.0, 10.0):  # Eq. 4: 2 ε_max √(B/B_noise), to O(B/B_noise)
        limit = 2 * eps_max * math.sqrt(b / b_noise)
        assert eps_opt_adam(b, eps_max, b_noise) == pytest.approx(limit, rel=b / b_noise * 1.01)
    for b in (1e7, 1e9):
        limit = 2 * eps_max * math.sqrt(b_noise / b)
        assert eps_opt_adam(b, eps_max, b_noise) == pytest.approx(limit, rel=b_noise / b * 1.01)


def test_symmetric_in_log_b_about_b_noise() -> None:
    k = np.array([1.5, 4.0, 100.0])
    above = np.asarray(eps_opt_adam(64.0 * k, 1.0, 64.0))
    below = np.asarray(eps_opt_adam(64.0 / k, 1.0, 64.0))
    assert np.allclose(above, below, rtol=1e-14)
    # and the closed form 2√k/(1 + k)
    assert np.allclose(above, 2 * np.sqrt(k) / (1 + k), rtol=1e-14)


def test_it_falls_where_the_sgd_law_saturates() -> None:
    """Below B_noise both laws rise (linear for SGD, √B for Adam); above it SGD's levels
    off at ε_max while Adam's falls back."""
    b = np.array([4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0])
    adam, sgd = np.asarray(eps_opt_adam(b, 1.0, 256.0)), np.asarray(eps_opt(b, 1.0, 256.0))
    assert np.all(np.diff(sgd) > 0)
    assert np.all(np.diff(adam[:4]) > 0) and np.all(np.diff(adam[3:]) < 0)
    assert np.allclose(adam[1:3] / adam[:2], 2.0, rtol=0.25)  # ≈ √4 below the peak


@pytest.mark.parametrize(("b", "b_noise"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -2.0)])
def test_bad_arguments_raise(b: float, b_noise: float) -> None:
    with pytest.raises(ValueError):
        eps_opt_adam(b, 1.0, b_noise)


# --- the paper's theory behind the law (Li et al. 2024, Theorems 2-3) ------------------------


def _sign_descent_problem(rng: np.random.Generator) -> tuple[Array, Array, Array]:
    """Per-coordinate gradient means μ and noise σ with |μ|/σ small, and a positive
    definite H whose off-diagonal terms couple coordinates of the same sign."""
    n = 400  # the coupling grows as n², the diagonal as n: B_noise well inside the regime
    mu = rng.uniform(0.02, 0.03, n) * rng.choice([-1.0, 1.0], n)
    sigma = rng.uniform(0.8, 1.2, n)
    v = np.sign(mu) * rng.uniform(0.5, 1.0, n)
    h = np.diag(rng.uniform(1.0, 2.0, n)) + np.outer(v, v)
    return mu, sigma, h


def _exact_eps_opt(b: float, mu: Array, sigma: Array, h: Array) -> float:
    """Eq. 10 with 𝓔_i = erf(√(B/2)·μ_i/σ_i) (Eq. 9): the lr that minimises the expected
    one-step loss of sign descent with Gaussian per-coordinate gradient noise."""
    e = np.array([math.erf(math.sqrt(b / 2) * m / s) for m, s in zip(mu, sigma, strict=True)])
    off = h - np.diag(np.diag(h))
    denominator = np.sum((1 - e**2) * np.diag(h)) + np.sum(e**2 * np.diag(h)) + e @ off @ e
    return float(np.sum(e * mu) / denominator)


def test_the_law_is_sign_descent_s_optimum_where_the_paper_derives_it() -> None:
    """Eq. 2 with B_noise (Eq. 14) and ε_max (Eq. 16) from μ, σ and H agrees with the
    exact optimum of Eq. 10 while B ≪ πσ²/(2μ²) (Theorem 3's condition), around the peak
    included."""
    mu, sigma, h = _sign_descent_problem(np.random.default_rng(0))
    snr = mu / sigma
    off = h - np.diag(np.diag(h))
    b_noise = math.pi * np.trace(h) / (2 * (snr @ off @ snr))  # Eq. 14
    eps_max = math.sqrt(b_noise / (2 * math.pi)) * np.sum(mu**2 / sigma) / np.trace(h)  # Eq. 16
    validity = float(np.min(math.pi / (2 * snr**2)))
    assert b_noise < validity / 5  # the peak lies inside the regime the law is derived in
    assert validity / 20 > b_noise  # the peak among the batch sizes checked
    for b in np.geomspace(1.0, validity / 20, 12):
        exact = _exact_eps_opt(float(b), mu, sigma, h)
        assert eps_opt_adam(float(b), eps_max, b_noise) == pytest.approx(exact, rel=0.01), b


def test_sign_of_a_mean_of_b_gaussians_agrees_with_erf() -> None:
    """Eq. 9's 𝓔 = E[sign(mean of B draws)] = erf(√(B/2)·μ/σ), by simulation."""
    rng = np.random.default_rng(1)
    mu, sigma, draws = 0.1, 1.0, 200_000
    for b in (1, 8, 64):
        means = rng.normal(mu, sigma / math.sqrt(b), draws)  # the mean of B draws, exactly
        simulated = float(np.mean(np.sign(means)))
        expected = math.erf(math.sqrt(b / 2) * mu / sigma)
        assert simulated == pytest.approx(expected, abs=4 / math.sqrt(draws))


# --- fits -------------------------------------------------------------------------------------


def test_fit_eps_max_recovers_it_exactly_and_is_a_geometric_mean() -> None:
    b = np.array([16.0, 64.0, 256.0, 1024.0])
    lrs = np.asarray(eps_opt_adam(b, 2e-3, 200.0))
    assert fit_eps_max_adam(b, lrs, 200.0) == pytest.approx(2e-3, rel=1e-12)
    noisy = lrs * np.array([1.3, 0.8, 1.1, 0.9])
    expected = 2e-3 * float(np.prod([1.3, 0.8, 1.1, 0.9]) ** 0.25)
    assert fit_eps_max_adam(b, noisy, 200.0) == pytest.approx(expected, rel=1e-12)


def test_fitted_law_takes_b_noise_from_the_steps_to_the_target() -> None:
    """B_noise ≈ B_crit (Eq. 21) of S(B) = S_min(1 + B_crit/B), ε_max from the lrs."""
    b = np.array([8.0, 32.0, 128.0, 512.0, 2048.0])
    b_crit = 300.0
    steps = np.asarray(steps_for(b, 50.0, b_crit))
    lrs = np.asarray(eps_opt_adam(b, 1e-3, b_crit))
    fit = fit_eps_opt_adam(b, lrs, steps=steps)
    assert fit.law == "adam" and not fit.at_bound
    assert fit.b_noise == pytest.approx(fit_tradeoff(b, steps).b_crit, rel=1e-12)
    assert fit.b_noise == pytest.approx(b_crit, rel=1e-6)
    assert fit.eps_max == pytest.approx(1e-3, rel=1e-6)
    assert fit.rms_log == pytest.approx(0.0, abs=1e-6)


def test_calibrated_law_takes_the_given_b_noise() -> None:
    b = np.array([64.0])
    fit = fit_eps_opt_adam(b, np.asarray(eps_opt_adam(b, 0.5, 10.0)), b_noise=10.0)
    assert (fit.eps_max, fit.b_noise) == pytest.approx((0.5, 10.0))
    with pytest.raises(ValueError, match="steps"):
        fit_eps_opt_adam(b, [0.1])


# --- which law for which optimiser -------------------------------------------------------------


def test_each_optimiser_has_its_law_and_its_rate() -> None:
    assert LAW_OF_OPTIMIZER == {"sgd": "sgd", "adamw": "adam", "sgd_sai": "sgd_ema"}
    assert rate("sgd", 0.1, 0.9) == pytest.approx(1.0)  # ε/(1 − m)
    assert rate("adam", 0.1, 0.9) == 0.1  # β1 averages gradients: the lr itself
    assert rate("sgd_ema", 0.1, 0.9) == 0.1  # m ← μm + (1 − μ)g: m ≈ g, the lr itself
    for law in ("sgd", "adam", "sgd_ema"):
        assert lr_at(law, rate(law, 0.1, 0.9), 0.9) == pytest.approx(0.1)
    sgd = EpsOptFit(eps_max=1.0, b_noise=100.0, rms_log=0.0)
    adam = EpsOptFit(eps_max=1.0, b_noise=100.0, rms_log=0.0, law="adam")
    assert predicted_eps_opt(sgd, 400.0) == pytest.approx(0.8)
    assert predicted_eps_opt(adam, 400.0) == pytest.approx(0.8)  # 2·2/(1 + 4)
    assert predicted_eps_opt(sgd, 1e6) > 0.99 > 0.03 > predicted_eps_opt(adam, 1e6)


def test_past_adam_s_peak_the_highest_plausible_optimum_is_eps_max() -> None:
    sgd = EpsOptFit(eps_max=1.0, b_noise=100.0, rms_log=0.0)
    adam = EpsOptFit(eps_max=1.0, b_noise=100.0, rms_log=0.0, law="adam")
    for b in (10.0, 100.0, 1e4):
        assert highest_plausible_eps_opt(sgd, b) == predicted_eps_opt(sgd, b)
    assert highest_plausible_eps_opt(adam, 25.0) == predicted_eps_opt(adam, 25.0) == 0.8
    assert highest_plausible_eps_opt(adam, 1e4) == 1.0 > predicted_eps_opt(adam, 1e4)


def test_law_model_waits_for_enough_data_and_refuses_a_mode_it_lacks() -> None:
    b = [32.0, 128.0, 512.0]
    steps = np.asarray(steps_for(np.array(b), 80.0, 128.0))
    lrs = np.asarray(eps_opt_adam(np.array(b), 3e-3, 128.0))
    assert law_model("adam", "fitted", b[:1], lrs[:1], steps[:1]) is None
    fitted = law_model("adam", "fitted", b, lrs, steps)
    assert fitted is not None and fitted.law == "adam"
    assert fitted.b_noise == pytest.approx(128.0, rel=1e-6)
    assert law_model("adam", "calibrated", b, lrs, steps) is None  # nothing measured
    calibrated = law_model("adam", "calibrated", b[:1], lrs[:1], steps[:1], b_noise_measured=64.0)
    assert calibrated is not None and calibrated.b_noise == 64.0
    with pytest.raises(ValueError, match="measured"):
        law_model("adam", "measured", b, lrs, steps)
    sgd = law_model("sgd", "fitted", b, np.asarray(eps_opt(np.array(b), 1.0, 100.0)), steps)
    assert sgd is not None and sgd.law == "sgd" and sgd.b_noise == pytest.approx(100.0, rel=1e-6)


# --- SGD with EMA momentum under a constant preconditioner (SGD-SaI) ----------------------------


def test_the_ema_law_is_sgd_s_on_the_lr_and_only_fitted() -> None:
    b = [32.0, 128.0, 512.0]
    lrs = np.asarray(eps_opt(np.array(b), 0.5, 100.0))
    fit = law_model("sgd_ema", "fitted", b, lrs, [1.0, 1.0, 1.0])
    assert fit is not None and fit.law == "sgd_ema"
    assert (fit.eps_max, fit.b_noise) == pytest.approx((0.5, 100.0), rel=1e-6)
    assert predicted_eps_opt(fit, 400.0) == pytest.approx(0.4, rel=1e-6)
    assert highest_plausible_eps_opt(fit, 1e6) == predicted_eps_opt(fit, 1e6)  # never falls
    for mode in ("measured", "calibrated"):  # measured noise is the unpreconditioned gradient's
        with pytest.raises(ValueError, match="sgd_ema"):
            law_model("sgd_ema", mode, b, lrs, [1.0, 1.0, 1.0], 100.0, 0.5)


def test_a_constant_preconditioner_keeps_mccandlish_s_law() -> None:
    """On L(θ) = ½dᵀHd, d = θ − θ*, G = Hd, with E[G_est] = G and Cov(G_est) = Σ/B, the
    step θ − εP·G_est has E[L] = ½(d − εPG)ᵀH(d − εPG) + ½ε²·tr(H·PΣP)/B. Its minimum over
    ε is ε_max/(1 + B_noise/B) with ε_max = GᵀPG/GᵀPHPG and B_noise = tr(PHPΣ)/GᵀPHPG:
    McCandlish's law of SGD on the preconditioned gradient."""
    rng = np.random.default_rng(0)
    n = 6
    a = rng.normal(size=(n, n))
    h = a @ a.T + 0.1 * np.eye(n)
    c = rng.normal(size=(n, n))
    sigma = c @ c.T
    d = rng.normal(size=n)
    g = h @ d
    p = np.diag(rng.uniform(0.05, 1.0, size=n))  # per-tensor scales: a diagonal P
    php = p @ h @ p
    eps_max = g @ p @ g / (g @ php @ g)
    b_noise = np.trace(php @ sigma) / (g @ php @ g)
    grid = np.linspace(1e-4, 2.0 * eps_max, 200001)
    for batch in (1.0, 16.0, 256.0):
        moved = d[None, :] - grid[:, None] * (p @ g)[None, :]
        expected_loss = 0.5 * np.einsum("ki,ij,kj->k", moved, h, moved)
        expected_loss += 0.5 * grid**2 * np.trace(h @ p @ sigma @ p) / batch
        best = grid[np.argmin(expected_loss)]
        assert best == pytest.approx(eps_opt(batch, eps_max, b_noise), rel=1e-3)
