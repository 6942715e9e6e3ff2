"""Optimal Adam learning rate versus batch size: the surge law (Li et al. 2024, NeurIPS,
"Surge Phenomenon in Optimal Learning Rate and Batch Size Scaling").

ε_opt(B) = ε_max / (½(√(B_noise/B) + √(B/B_noise)))                    (their Eq. 2)

Square-root scaling for B ≪ B_noise (Eq. 4: ε_opt ≈ 2ε_max·√(B/B_noise)), a peak ε_max
at B = B_noise (Eq. 15), and a fall ∝ √(B_noise/B) above it. Theorem 4's non-zero plateau
at very large B is not part of this law.

Adam's B_noise is not McCandlish's tr(HΣ)/GᵀHG (Eq. 14 differs). The paper ties it to
the steps/examples trade-off instead, B_noise ≈ B_crit = E_min/S_min (Eq. 21), fitted to
the best run at each batch size (Eq. 22, 1/S = −B_noise/E + 1/S_min, the same hyperbola
`tuner.theory.tradeoff.fit_tradeoff` fits), and then ε_max from the best lrs (Eq. 23).
The rate compared is the lr itself: Adam's first moment is an average of gradients, so
β1 does not scale the step the way SGD's heavy-ball momentum does.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt

from tuner.theory.eps_opt import EpsOptFit, _check_points, _check_weights
from tuner.theory.noise import FloatArray, _as_array, _finish
from tuner.theory.tradeoff import fit_tradeoff

__all__ = ["eps_opt_adam", "fit_eps_max_adam", "fit_eps_opt_adam"]


def _surge_denominator(b: FloatArray, b_noise: FloatArray) -> FloatArray:
    """½(√(B_noise/B) + √(B/B_noise)) ≥ 1, with equality at B = B_noise."""
    return 0.5 * (np.sqrt(b_noise / b) + np.sqrt(b / b_noise))


@overload
def eps_opt_adam(b: float, eps_max: float, b_noise: float) -> float: ...
@overload
def eps_opt_adam(
    b: npt.ArrayLike, eps_max: npt.ArrayLike, b_noise: npt.ArrayLike
) -> FloatArray: ...
def eps_opt_adam(
    b: npt.ArrayLike, eps_max: npt.ArrayLike, b_noise: npt.ArrayLike
) -> float | FloatArray:
    """ε_opt(B) = ε_max/(½(√(B_noise/B) + √(B/B_noise))) (Li et al. 2024, Eq. 2)."""
    b_arr, bn_arr = _as_array(b), _as_array(b_noise)
    if np.any(~(b_arr > 0)):
        raise ValueError(f"batch size b must be > 0, got {b_arr}")
    if np.any(~(bn_arr > 0)):
        raise ValueError(f"b_noise must be > 0 for the Adam law, got {bn_arr}")
    return _finish(_as_array(eps_max) / _surge_denominator(b_arr, bn_arr))


def fit_eps_max_adam(
    batch_sizes: npt.ArrayLike,
    lrs: npt.ArrayLike,
    b_noise: float,
    weights: npt.ArrayLike | None = None,
) -> float:
    """ε_max with B_noise known, in closed form in log space: the weighted geometric mean
    of lr·½(√(B_noise/B) + √(B/B_noise)) (Eq. 23, which takes the arithmetic mean; the
    geometric one is the least-squares fit in log lr, as for SGD)."""
    x, y = _check_points(batch_sizes, lrs, "lrs")
    w = _check_weights(weights, x.size)
    if not (math.isfinite(b_noise) and b_noise > 0):
        raise ValueError(f"b_noise must be finite and > 0, got {b_noise}")
    scaled = y * _surge_denominator(x, np.full_like(x, b_noise))
    return math.exp(float(np.log(scaled) @ w))


def _rms_log(x: FloatArray, y: FloatArray, eps_max: float, b_noise: float) -> float:
    predicted = np.asarray(eps_opt_adam(x, eps_max, b_noise))
    return float(np.sqrt(np.mean((np.log(y) - np.log(predicted)) ** 2)))


def fit_eps_opt_adam(
    batch_sizes: npt.ArrayLike,
    lrs: npt.ArrayLike,
    steps: npt.ArrayLike | None = None,
    b_noise: float | None = None,
) -> EpsOptFit:
    """The Adam law fitted to the best run at each batch size (its lr and steps).

    B_noise is `b_noise` where given (a calibrated model), else B_crit of the
    steps/examples trade-off fitted to `steps` (Eqs. 21–22; needs 2 distinct batch
    sizes); ε_max is then fitted to the lrs (Eq. 23). ``at_bound`` is the trade-off fit's:
    steps still fall ∝ 1/B at the largest batch size, or not at all, so B_noise is only a
    bound and the law is square-root (or inverse square-root) scaling over the batch
    sizes tried. ``rms_log`` is the misfit to the lrs.
    """
    x, y = _check_points(batch_sizes, lrs, "lrs")
    at_bound = False
    if b_noise is None:
        if steps is None:
            raise ValueError("give the steps to the target (to fit B_noise) or b_noise")
        tradeoff = fit_tradeoff(x, steps)
        b_noise, at_bound = tradeoff.b_crit, tradeoff.at_bound
    eps_max = fit_eps_max_adam(x, y, b_noise)
    return EpsOptFit(
        eps_max=eps_max,
        b_noise=b_noise,
        rms_log=_rms_log(x, y, eps_max, b_noise),
        at_bound=at_bound,
        law="adam",
    )
