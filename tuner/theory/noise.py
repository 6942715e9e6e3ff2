"""Gradient noise scale estimators (McCandlish, Kaplan, Amodei 2018, App. A.1).

The batch gradient G_B of B examples satisfies E|G_B|² = |G|² + tr(Σ)/B, so squared norms
measured at two batch sizes on the same weights give unbiased estimates of |G|² and tr(Σ).
With the H-inner product (|v|²_H = vᵀHv, from Hessian-vector products) the same formulas
give GᵀHG and tr(HΣ). Scalars in, scalars out; numpy arrays are broadcast elementwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "NoiseScaleEMA",
    "b_noise",
    "b_simple",
    "b_simple_halfwidth",
    "eps_max",
    "g2_estimate",
    "ghg_estimate",
    "pooled_noise_scale",
    "pooling_weight",
    "trace_h_sigma_estimate",
    "trace_sigma_estimate",
]

FloatArray = npt.NDArray[np.float64]


def _as_array(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _finish(x: FloatArray) -> float | FloatArray:
    """Return a Python float for 0-d results, the array otherwise."""
    return float(x) if x.ndim == 0 else x


def _check_batch_pair(b_small: FloatArray, b_big: FloatArray) -> None:
    if np.any(~(b_small > 0)):
        raise ValueError(f"b_small must be > 0, got {b_small}")
    if np.any(~(b_big > b_small)):
        raise ValueError(f"b_big must be > b_small, got b_small={b_small}, b_big={b_big}")


def _ratio_positive_den(num: FloatArray, den: FloatArray) -> FloatArray:
    """num/den where den > 0, nan elsewhere (noisy estimates of a positive den can be <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, np.nan)


@overload
def g2_estimate(b_small: float, b_big: float, sq_small: float, sq_big: float) -> float: ...
@overload
def g2_estimate(
    b_small: npt.ArrayLike, b_big: npt.ArrayLike, sq_small: npt.ArrayLike, sq_big: npt.ArrayLike
) -> FloatArray: ...
def g2_estimate(
    b_small: npt.ArrayLike, b_big: npt.ArrayLike, sq_small: npt.ArrayLike, sq_big: npt.ArrayLike
) -> float | FloatArray:
    """Unbiased |G|² = (b_big·|G_big|² − b_small·|G_small|²)/(b_big − b_small).

    McCandlish et al. 2018, App. A.1. ``sq_small`` may be the mean of |G_small|² over several
    micro-batches; if they have unequal sizes, pass their harmonic-mean size as ``b_small``.
    With H-norms (GᵀHG of each batch gradient) it estimates GᵀHG instead.
    """
    bs, bb = _as_array(b_small), _as_array(b_big)
    _check_batch_pair(bs, bb)
    return _finish((bb * _as_array(sq_big) - bs * _as_array(sq_small)) / (bb - bs))


@overload
def trace_sigma_estimate(b_small: float, b_big: float, sq_small: float, sq_big: float) -> float: ...
@overload
def trace_sigma_estimate(
    b_small: npt.ArrayLike, b_big: npt.ArrayLike, sq_small: npt.ArrayLike, sq_big: npt.ArrayLike
) -> FloatArray: ...
def trace_sigma_estimate(
    b_small: npt.ArrayLike, b_big: npt.ArrayLike, sq_small: npt.ArrayLike, sq_big: npt.ArrayLike
) -> float | FloatArray:
    """Unbiased tr(Σ) = (|G_small|² − |G_big|²)/(1/b_small − 1/b_big).

    McCandlish et al. 2018, App. A.1. Same conventions as :func:`g2_estimate`; with H-norms
    it estimates tr(HΣ).
    """
    bs, bb = _as_array(b_small), _as_array(b_big)
    _check_batch_pair(bs, bb)
    return _finish((_as_array(sq_small) - _as_array(sq_big)) / (1.0 / bs - 1.0 / bb))


ghg_estimate = g2_estimate
"""GᵀHG from H-norms of the two batch gradients (same formula as :func:`g2_estimate`)."""

trace_h_sigma_estimate = trace_sigma_estimate
"""tr(HΣ) from H-norms of the two batch gradients (same formula as
:func:`trace_sigma_estimate`)."""


@dataclass
class NoiseScaleEMA:
    """Separate moving averages of a signal and a noise term; their ratio is a noise scale.

    Fed (|G|², tr(Σ)) pairs it gives B_simple = tr(Σ)/|G|²; fed (GᵀHG, tr(HΣ)) pairs it
    gives B_noise = tr(HΣ)/GᵀHG (McCandlish et al. 2018, eqs. 2.7 and 2.8): one estimator,
    one instance per noise scale.

    McCandlish et al. 2018, App. A.1: average numerator and denominator separately, then
    divide (the mean of per-step ratios is badly biased). Weight of the old average at the
    t-th accepted update: beta_t = min(beta, max(0, 1 − horizon/t)). With horizon = 1 that
    is an exact running mean for the first 1/(1 − beta) updates, exponential afterwards.
    With horizon = c > 1 the weights grow as s^(c−1) over the updates s = 1..t, so the
    average keeps about (2c − 1)/c² of all measurements (precision where the noise scale
    is stationary) while its centre of mass stays at t·c/(c + 1) (it follows the growth
    of the noise scale during training, DESIGN.md §1 pitfall 2). Non-finite pairs are
    ignored.
    """

    beta: float = 0.99
    horizon: float = 3.0
    signal_avg: float = 0.0
    noise_avg: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")
        if not self.horizon >= 1.0:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")

    def update(self, signal: float, noise: float) -> None:
        """Fold in one (signal, noise) estimate; skipped unless both are finite."""
        if not (math.isfinite(signal) and math.isfinite(noise)):
            return
        self.count += 1
        beta_t = min(self.beta, max(0.0, 1.0 - self.horizon / self.count))
        self.signal_avg = beta_t * self.signal_avg + (1.0 - beta_t) * float(signal)
        self.noise_avg = beta_t * self.noise_avg + (1.0 - beta_t) * float(noise)

    @property
    def signal(self) -> float:
        """Averaged signal, |G|² or GᵀHG (nan before the first update)."""
        return self.signal_avg if self.count > 0 else math.nan

    @property
    def noise(self) -> float:
        """Averaged noise term, tr(Σ) or tr(HΣ) (nan before the first update)."""
        return self.noise_avg if self.count > 0 else math.nan

    @property
    def scale(self) -> float:
        """noise/signal of the averages; nan before any update or when the signal is <= 0."""
        if self.count == 0 or not self.signal_avg > 0:
            return math.nan
        return self.noise_avg / self.signal_avg


@overload
def b_simple(trace_sigma: float, g2: float) -> float: ...
@overload
def b_simple(trace_sigma: npt.ArrayLike, g2: npt.ArrayLike) -> FloatArray: ...
def b_simple(trace_sigma: npt.ArrayLike, g2: npt.ArrayLike) -> float | FloatArray:
    """B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, §2.2); nan where |G|² <= 0."""
    return _finish(_ratio_positive_den(_as_array(trace_sigma), _as_array(g2)))


@overload
def b_noise(trace_h_sigma: float, ghg: float) -> float: ...
@overload
def b_noise(trace_h_sigma: npt.ArrayLike, ghg: npt.ArrayLike) -> FloatArray: ...
def b_noise(trace_h_sigma: npt.ArrayLike, ghg: npt.ArrayLike) -> float | FloatArray:
    """B_noise = tr(HΣ)/GᵀHG (McCandlish et al. 2018, §2.2); nan where GᵀHG <= 0."""
    return _finish(_ratio_positive_den(_as_array(trace_h_sigma), _as_array(ghg)))


@overload
def eps_max(g2: float, ghg: float) -> float: ...
@overload
def eps_max(g2: npt.ArrayLike, ghg: npt.ArrayLike) -> FloatArray: ...
def eps_max(g2: npt.ArrayLike, ghg: npt.ArrayLike) -> float | FloatArray:
    """ε_max = |G|²/GᵀHG (McCandlish et al. 2018, §2.2); nan where GᵀHG <= 0."""
    return _finish(_ratio_positive_den(_as_array(g2), _as_array(ghg)))


@overload
def b_simple_halfwidth(b: float, b_simple: float, n: float) -> float: ...
@overload
def b_simple_halfwidth(
    b: npt.ArrayLike, b_simple: npt.ArrayLike, n: npt.ArrayLike
) -> FloatArray: ...
def b_simple_halfwidth(
    b: npt.ArrayLike, b_simple: npt.ArrayLike, n: npt.ArrayLike
) -> float | FloatArray:
    """Relative 10–90% half-width of B_simple from n measurements at batch size b.

    ≈ 0.6·(1 + B_simple/b)/√n (DESIGN.md pitfall 7, an empirical rule of thumb): a trial
    at b ≪ B_simple cannot pin down B_simple by itself.
    """
    b_arr, n_arr = _as_array(b), _as_array(n)
    if np.any(~(b_arr > 0)):
        raise ValueError(f"b must be > 0, got {b_arr}")
    if np.any(~(n_arr > 0)):
        raise ValueError(f"n must be > 0, got {n_arr}")
    return _finish(0.6 * (1.0 + _as_array(b_simple) / b_arr) / np.sqrt(n_arr))


@overload
def pooling_weight(b: float, b_simple: float) -> float: ...
@overload
def pooling_weight(b: npt.ArrayLike, b_simple: npt.ArrayLike) -> FloatArray: ...
def pooling_weight(b: npt.ArrayLike, b_simple: npt.ArrayLike) -> float | FloatArray:
    """Weight (b/(b + B_simple))² for pooling B_simple estimates across trials.

    Inverse square of the relative half-width of :func:`b_simple_halfwidth` (up to a
    constant): ≈ (b/B_simple)² for b ≪ B_simple, saturating at 1 for b ≫ B_simple
    (DESIGN.md pitfall 7). nan where B_simple is nan.
    """
    b_arr, bs_arr = _as_array(b), _as_array(b_simple)
    if np.any(~(b_arr > 0)):
        raise ValueError(f"b must be > 0, got {b_arr}")
    if np.any(bs_arr < 0):
        raise ValueError(f"b_simple must be >= 0 (or nan), got {bs_arr}")
    return _finish((b_arr / (b_arr + bs_arr)) ** 2)


def pooled_noise_scale(
    values: npt.ArrayLike, batch_sizes: npt.ArrayLike, reference: float | None = None
) -> float:
    """Noise scale pooled over trials: a geometric mean weighted by `pooling_weight`.

    Each trial contributes its own ratio of averages (B_simple or B_noise), weighted by
    how well its batch size can measure it (DESIGN.md §1, pitfall 7), against the
    noise scale `reference` (default: the median of `values`; pass the pooled B_noise
    when pooling ε_max, which is measured with the same precision as B_noise). A
    geometric mean, because summing raw |G|² over trials lets one trial near
    instability, whose |G|² is orders of magnitude larger, decide it.
    Non-finite and non-positive values are left out; nan if none remain.
    """
    v, b = np.broadcast_arrays(_as_array(values), _as_array(batch_sizes))
    usable = np.isfinite(v) & (v > 0) & np.isfinite(b) & (b > 0)
    if not usable.any():
        return math.nan
    v, b = v[usable], b[usable]
    scale = float(np.median(v)) if reference is None or not math.isfinite(reference) else reference
    weights = (b / (b + scale)) ** 2
    return float(np.exp(np.sum(weights * np.log(v)) / np.sum(weights)))
