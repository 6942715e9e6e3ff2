"""Steps/examples trade-off (McCandlish, Kaplan, Amodei 2018, eqs. 2.11–2.12).

(S/S_min − 1)(E/E_min − 1) = 1 with E = B·S and B_crit = E_min/S_min, equivalently
S(B) = S_min·(1 + B_crit/B) and E(B) = E_min + S_min·B. B_crit depends on the target the
steps were counted to (DESIGN.md pitfall 10): always report it with that target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from tuner.theory.eps_opt import _check_points, _fit_log_hyperbola, _require_two_sizes
from tuner.theory.noise import FloatArray, _as_array, _finish

__all__ = [
    "TradeoffFit",
    "bootstrap_b_crit",
    "examples_for",
    "fit_tradeoff",
    "pareto_mask",
    "steps_for",
]

_GRID_SPAN = 1000.0


@dataclass(frozen=True)
class TradeoffFit:
    """Fitted S(B) = s_min·(1 + b_crit/B); e_min = s_min·b_crit.

    ``rms_log`` is the RMS residual of log S (natural-log units) over ``n_points`` points.
    ``at_bound`` is True when b_crit sits at an end of the search range
    [min(B)/1000, max(B)·1000]: steps still fall ∝ 1/B at the largest B (upper end; only
    e_min is determined) or do not fall with B at all (lower end; only s_min is).
    """

    s_min: float
    b_crit: float
    e_min: float
    rms_log: float
    n_points: int
    at_bound: bool = False


def _check_b(b: FloatArray, s_min: FloatArray, b_crit: FloatArray) -> None:
    if np.any(~(b > 0)):
        raise ValueError(f"batch size b must be > 0, got {b}")
    if np.any(~(s_min > 0)):
        raise ValueError(f"s_min must be > 0, got {s_min}")
    if np.any(~(b_crit >= 0)):
        raise ValueError(f"b_crit must be >= 0, got {b_crit}")


@overload
def steps_for(b: float, s_min: float, b_crit: float) -> float: ...
@overload
def steps_for(b: npt.ArrayLike, s_min: npt.ArrayLike, b_crit: npt.ArrayLike) -> FloatArray: ...
def steps_for(b: npt.ArrayLike, s_min: npt.ArrayLike, b_crit: npt.ArrayLike) -> float | FloatArray:
    """Steps to target S(B) = S_min·(1 + B_crit/B) (McCandlish et al. 2018, eq. 2.11)."""
    b_arr, s_arr, bc_arr = _as_array(b), _as_array(s_min), _as_array(b_crit)
    _check_b(b_arr, s_arr, bc_arr)
    return _finish(s_arr * (1.0 + bc_arr / b_arr))


@overload
def examples_for(b: float, s_min: float, b_crit: float) -> float: ...
@overload
def examples_for(b: npt.ArrayLike, s_min: npt.ArrayLike, b_crit: npt.ArrayLike) -> FloatArray: ...
def examples_for(
    b: npt.ArrayLike, s_min: npt.ArrayLike, b_crit: npt.ArrayLike
) -> float | FloatArray:
    """Examples to target E(B) = E_min + S_min·B, E_min = S_min·B_crit (eqs. 2.11–2.12)."""
    b_arr, s_arr, bc_arr = _as_array(b), _as_array(s_min), _as_array(b_crit)
    _check_b(b_arr, s_arr, bc_arr)
    return _finish(s_arr * bc_arr + s_arr * b_arr)


def _fit(
    x: FloatArray, log_s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Fit rows of log_s (m, n); returns (b_crit, log s_min, rms, at_bound) of shape (m,)."""
    w = np.full(x.size, 1.0 / x.size)
    return _fit_log_hyperbola(
        x, log_s, w, 1.0, float(x.min()) / _GRID_SPAN, float(x.max()) * _GRID_SPAN
    )


def fit_tradeoff(batch_sizes: npt.ArrayLike, steps: npt.ArrayLike) -> TradeoffFit:
    """Fit S(B) = S_min·(1 + B_crit/B) (McCandlish et al. 2018, eqs. 2.11–2.12).

    Least squares in log space, Σ (log S_i − log S_min − log(1 + B_crit/B_i))²: log S_min in
    closed form (a mean), B_crit by a grid over [min(B)/1000, max(B)·1000] refined by golden
    section. ``steps`` are the fewest steps to the target at each batch size; repeated
    batch sizes are allowed, at least 2 distinct ones are needed.
    """
    x, y = _check_points(batch_sizes, steps, "steps")
    _require_two_sizes(x, np.ones_like(x))
    k, c, rms, at_bound = _fit(x, np.log(y)[None, :])
    s_min = math.exp(float(c[0]))
    b_crit = float(k[0])
    return TradeoffFit(
        s_min=s_min,
        b_crit=b_crit,
        e_min=s_min * b_crit,
        rms_log=float(rms[0]),
        n_points=int(x.size),
        at_bound=bool(at_bound[0]),
    )


def bootstrap_b_crit(
    batch_sizes: npt.ArrayLike,
    steps: npt.ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.9,
) -> tuple[float, float]:
    """Percentile interval for B_crit from a residual bootstrap in log space.

    Log-space residuals of :func:`fit_tradeoff`, inflated by √(n/(n − 2)) for the two fitted
    parameters, are resampled with replacement onto the fitted curve and refitted
    (case resampling degenerates with few batch sizes). Needs at least 3 points; exact
    points give a zero-width interval.
    """
    x, y = _check_points(batch_sizes, steps, "steps")
    _require_two_sizes(x, np.ones_like(x))
    n = x.size
    if n < 3:
        raise ValueError(f"bootstrap needs at least 3 points (2 parameters are fitted), got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    log_s = np.log(y)
    k, c, _, _ = _fit(x, log_s[None, :])
    fitted = c[0] + np.log1p(k[0] / x)
    resid = (log_s - fitted) * math.sqrt(n / (n - 2))
    rng = np.random.default_rng(seed)
    draws = fitted[None, :] + resid[rng.integers(0, n, size=(n_boot, n))]
    b_crits = _fit(x, draws)[0]
    lo, hi = np.quantile(b_crits, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def pareto_mask(steps: npt.ArrayLike, examples: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True for points not dominated in (steps, examples), both minimised.

    A point is dominated if another is <= in both and < in at least one; identical points
    do not dominate each other, so ties are all kept.
    """
    s, e = _as_array(steps), _as_array(examples)
    if s.ndim != 1 or s.shape != e.shape:
        raise ValueError(
            f"steps and examples must be 1-D of equal length, got shapes {s.shape}, {e.shape}"
        )
    if np.any(np.isnan(s)) or np.any(np.isnan(e)):
        raise ValueError("steps and examples must not contain nan")
    le = (s[None, :] <= s[:, None]) & (e[None, :] <= e[:, None])
    lt = (s[None, :] < s[:, None]) | (e[None, :] < e[:, None])
    dominated = np.any(le & lt, axis=1)
    return np.asarray(~dominated, dtype=np.bool_)
