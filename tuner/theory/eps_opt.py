"""Optimal SGD learning rate versus batch size (McCandlish, Kaplan, Amodei 2018, §2.2).

ε_opt(B) = ε_max/(1 + B_noise/B), with momentum m compared through the effective rate
ε/(1 − m) (Smith et al. 2017). This is an SGD law: it does not describe Adam-style
optimisers (DESIGN.md pitfall 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from tuner.theory.noise import FloatArray, _as_array, _finish

__all__ = [
    "EpsOptFit",
    "effective_lr",
    "eps_opt",
    "fit_eps_max",
    "fit_eps_opt",
    "lr_ratio_to_eps_opt",
]

_GRID_POINTS = 2001
_REFINE_ITERS = 60
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class EpsOptFit:
    """A fitted ε_opt(B) law: `law` "sgd" is eps_max/(1 + b_noise/B) (this module), "adam"
    the surge law of `tuner.theory.adam_eps_opt`; `tuner.theory.lr_laws` evaluates either.

    ``rms_log`` is the weighted RMS residual in natural-log units. ``at_bound`` is True when
    b_noise sits at an end of the search range (lr never saturates, or never grows, with B),
    so only the ratio eps_max/b_noise (upper end) or eps_max (lower end) is determined.
    """

    eps_max: float
    b_noise: float
    rms_log: float
    at_bound: bool = False
    law: str = "sgd"


@overload
def eps_opt(b: float, eps_max: float, b_noise: float) -> float: ...
@overload
def eps_opt(b: npt.ArrayLike, eps_max: npt.ArrayLike, b_noise: npt.ArrayLike) -> FloatArray: ...
def eps_opt(b: npt.ArrayLike, eps_max: npt.ArrayLike, b_noise: npt.ArrayLike) -> float | FloatArray:
    """ε_opt(B) = ε_max/(1 + B_noise/B) (McCandlish et al. 2018, §2.2)."""
    b_arr, bn_arr = _as_array(b), _as_array(b_noise)
    if np.any(~(b_arr > 0)):
        raise ValueError(f"batch size b must be > 0, got {b_arr}")
    if np.any(bn_arr < 0):
        raise ValueError(f"b_noise must be >= 0, got {bn_arr}")
    return _finish(_as_array(eps_max) / (1.0 + bn_arr / b_arr))


@overload
def effective_lr(lr: float, momentum: float) -> float: ...
@overload
def effective_lr(lr: npt.ArrayLike, momentum: npt.ArrayLike) -> FloatArray: ...
def effective_lr(lr: npt.ArrayLike, momentum: npt.ArrayLike) -> float | FloatArray:
    """Effective SGD learning rate ε/(1 − m) of heavy-ball momentum m (Smith et al. 2017)."""
    m = _as_array(momentum)
    if np.any(~((m >= 0) & (m < 1))):
        raise ValueError(f"momentum must be in [0, 1), got {m}")
    return _finish(_as_array(lr) / (1.0 - m))


@overload
def lr_ratio_to_eps_opt(
    lr: float, momentum: float, b: float, eps_max: float, b_noise: float
) -> float: ...
@overload
def lr_ratio_to_eps_opt(
    lr: npt.ArrayLike,
    momentum: npt.ArrayLike,
    b: npt.ArrayLike,
    eps_max: npt.ArrayLike,
    b_noise: npt.ArrayLike,
) -> FloatArray: ...
def lr_ratio_to_eps_opt(
    lr: npt.ArrayLike,
    momentum: npt.ArrayLike,
    b: npt.ArrayLike,
    eps_max: npt.ArrayLike,
    b_noise: npt.ArrayLike,
) -> float | FloatArray:
    """(ε/(1 − m))/ε_opt(B): > 1 means the effective rate is above the predicted optimum."""
    ratio = _as_array(effective_lr(lr, momentum)) / _as_array(eps_opt(b, eps_max, b_noise))
    return _finish(ratio)


def _check_points(
    batch_sizes: npt.ArrayLike, values: npt.ArrayLike, name: str
) -> tuple[FloatArray, FloatArray]:
    x = _as_array(batch_sizes)
    y = _as_array(values)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"batch_sizes and {name} must be 1-D of equal length, got shapes {x.shape}, {y.shape}"
        )
    if x.size == 0:
        raise ValueError("no points given")
    if not np.all(np.isfinite(x) & (x > 0)):
        raise ValueError(f"batch_sizes must be finite and > 0, got {x}")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(f"{name} must be finite and > 0, got {y}")
    return x, y


def _check_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = _as_array(weights)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError(f"weights must be finite and >= 0, got {w}")
    total = float(w.sum())
    if not total > 0:
        raise ValueError("weights must not all be zero")
    return w / total


def _require_two_sizes(x: FloatArray, w: FloatArray) -> None:
    if np.unique(x[w > 0]).size < 2:
        raise ValueError("need at least 2 distinct batch sizes (with non-zero weight) to fit")


def _fit_log_hyperbola(
    x: FloatArray, y: FloatArray, w: FloatArray, sign: float, k_lo: float, k_hi: float
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Weighted least squares of y ≈ c + sign·log(1 + k/x) over k in [k_lo, k_hi].

    ``y`` has shape (m, n): m independent data sets sharing x and w (normalised to sum 1).
    c is solved in closed form (weighted mean); log k by a grid search refined with golden
    section. Returns (k, c, rms, at_bound), each of shape (m,).
    """
    log_k = np.linspace(math.log(k_lo), math.log(k_hi), _GRID_POINTS)
    f = np.log1p(np.exp(log_k)[:, None] / x[None, :])
    fc = f - (f @ w)[:, None]
    yc = y - (y @ w)[:, None]
    grid_obj = (yc**2 @ w)[:, None] - 2.0 * sign * ((yc * w) @ fc.T) + (fc**2 @ w)[None, :]
    idx = np.argmin(grid_obj, axis=1)
    at_bound = (idx == 0) | (idx == _GRID_POINTS - 1)

    def objective(lk: FloatArray) -> tuple[FloatArray, FloatArray]:
        r = y - sign * np.log1p(np.exp(lk)[:, None] / x[None, :])
        c = r @ w
        return ((r - c[:, None]) ** 2) @ w, c

    a = log_k[np.maximum(idx - 2, 0)]
    b = log_k[np.minimum(idx + 2, _GRID_POINTS - 1)]
    for _ in range(_REFINE_ITERS):
        lo = b - _INV_PHI * (b - a)
        hi = a + _INV_PHI * (b - a)
        left = objective(lo)[0] <= objective(hi)[0]
        b = np.where(left, hi, b)
        a = np.where(left, a, lo)
    refined = 0.5 * (a + b)
    obj_refined, _ = objective(refined)
    obj_grid, _ = objective(log_k[idx])
    best = np.where(obj_refined <= obj_grid, refined, log_k[idx])
    obj, c = objective(best)
    return np.exp(best), c, np.sqrt(np.maximum(obj, 0.0)), at_bound


def fit_eps_opt(
    batch_sizes: npt.ArrayLike, lrs: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> EpsOptFit:
    """Fit ε_opt(B) = ε_max/(1 + B_noise/B) to (batch size, best lr) pairs.

    Weighted least squares in log space, Σ w (log lr − log ε_max + log(1 + B_noise/B))²:
    log ε_max in closed form, B_noise by a grid over [min(B)/100, max(B)·100] refined by
    golden section. Pass effective rates (lr/(1 − m)) when momentum varies.
    """
    x, y = _check_points(batch_sizes, lrs, "lrs")
    w = _check_weights(weights, x.size)
    _require_two_sizes(x, w)
    k, c, rms, at_bound = _fit_log_hyperbola(
        x, np.log(y)[None, :], w, -1.0, float(x.min()) / 100.0, float(x.max()) * 100.0
    )
    return EpsOptFit(
        eps_max=math.exp(float(c[0])),
        b_noise=float(k[0]),
        rms_log=float(rms[0]),
        at_bound=bool(at_bound[0]),
    )


def fit_eps_max(
    batch_sizes: npt.ArrayLike,
    lrs: npt.ArrayLike,
    b_noise: float,
    weights: npt.ArrayLike | None = None,
) -> float:
    """Fit ε_max with B_noise known ("calibrated" mode), in closed form in log space.

    log ε_max = weighted mean of log lr + log(1 + B_noise/B) (McCandlish et al. 2018, §2.2).
    """
    x, y = _check_points(batch_sizes, lrs, "lrs")
    w = _check_weights(weights, x.size)
    if not (math.isfinite(b_noise) and b_noise >= 0):
        raise ValueError(f"b_noise must be finite and >= 0, got {b_noise}")
    return math.exp(float((np.log(y) + np.log1p(b_noise / x)) @ w))


EPS_OPT_MODES = ("measured", "calibrated", "fitted")


def eps_opt_model(
    mode: str,
    batch_sizes: npt.ArrayLike,
    best_lrs: npt.ArrayLike,
    b_noise_measured: float = math.nan,
    eps_max_measured: float = math.nan,
) -> EpsOptFit | None:
    """The ε_opt(B) law a pruner uses, from pooled data; None while there is too little.

    `best_lrs` are the best effective learning rates ε/(1 − m) found per batch size.
    - measured:   ε_max and B_noise both measured (curvature), pooled across trials;
    - calibrated: B_noise measured, ε_max fitted to the best lrs (≥ 1 batch size);
    - fitted:     both fitted to the best lrs (≥ 2 distinct batch sizes).
    rms_log is the misfit to the best lrs (nan where there are none).
    """
    if mode not in EPS_OPT_MODES:
        raise ValueError(f"mode must be one of {EPS_OPT_MODES}, got {mode!r}")
    b = np.atleast_1d(np.asarray(batch_sizes, dtype=np.float64))
    lr = np.atleast_1d(np.asarray(best_lrs, dtype=np.float64))
    if mode == "fitted":
        return fit_eps_opt(b, lr) if np.unique(b).size >= 2 else None
    if not (math.isfinite(b_noise_measured) and b_noise_measured > 0):
        return None
    if mode == "measured":
        if not (math.isfinite(eps_max_measured) and eps_max_measured > 0):
            return None
        eps_max_value = eps_max_measured
    elif b.size == 0:
        return None
    else:
        eps_max_value = fit_eps_max(b, lr, b_noise_measured)
    if b.size:
        predicted = np.asarray(eps_opt(b, eps_max_value, b_noise_measured))
        rms = float(np.sqrt(np.mean((np.log(lr) - np.log(predicted)) ** 2)))
    else:
        rms = math.nan
    return EpsOptFit(eps_max=eps_max_value, b_noise=b_noise_measured, rms_log=rms)
