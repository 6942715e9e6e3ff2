"""Steps/examples trade-off (McCandlish, Kaplan, Amodei 2018, eqs. 2.11–2.12).

(S/S_min − 1)(E/E_min − 1) = 1 with E = B·S and B_crit = E_min/S_min, equivalently
S(B) = S_min·(1 + B_crit/B) and E(B) = E_min + S_min·B. B_crit depends on the target the
steps were counted to (DESIGN.md pitfall 10): always report it with that target.

The interval to report is :func:`b_crit_interval` (profile likelihood, Student's t on
n − 2 dof), and :func:`b_crit_finding` says whether a fit is a finding at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from tuner.theory.eps_opt import _check_points, _fit_log_hyperbola, _require_two_sizes
from tuner.theory.noise import FloatArray, _as_array, _finish

__all__ = [
    "B_CRIT_KINDS",
    "BCritFinding",
    "BCritKind",
    "TradeoffFit",
    "b_crit_finding",
    "b_crit_interval",
    "bootstrap_b_crit",
    "examples_for",
    "fit_tradeoff",
    "pareto_mask",
    "steps_for",
    "student_t_cdf",
    "student_t_quantile",
]

_GRID_SPAN = 1000.0
_GRID_POINTS = 2001  # as in eps_opt._fit_log_hyperbola
_BISECT_ITERS = 60
_BETACF_MAX_ITERS = 300
_BETACF_EPS = 1e-15
_TINY = 1e-300


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
    """Percentile interval for B_crit from a log-space residual bootstrap (use b_crit_interval).

    Kept for comparison: it undercovers with few points. A nominal 90% interval covered the
    true B_crit in 0.76–0.83 of simulated data sets at 4–7 batch sizes with log-normal noise
    (tests/test_theory_tradeoff.py) and 0.76–0.82 on real noisy SGD at 4 batch sizes
    (bench/b_crit_coverage.py). Log-space residuals of :func:`fit_tradeoff`, inflated by
    √(n/(n − 2)) for the two fitted parameters, are resampled with replacement onto the
    fitted curve and refitted (case resampling degenerates with few batch sizes). Needs at
    least 3 points; exact points give a zero-width interval.
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


def _lentz_step(aa: float, c: float, d: float) -> tuple[float, float, float]:
    """One modified-Lentz update: returns (c, d, the factor d·c multiplying the fraction)."""
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    c = 1.0 + aa / c
    c = c if abs(c) > _TINY else _TINY
    return c, d, d * c


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes §6.4, betacf)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _BETACF_MAX_ITERS + 1):
        even = m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m))
        c, d, delta = _lentz_step(even, c, d)
        h *= delta
        odd = -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))
        c, d, delta = _lentz_step(odd, c, d)
        h *= delta
        if abs(delta - 1.0) < _BETACF_EPS:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes §6.4, eq. 6.4.5 ff.)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast only for x < (a + 1)/(a + b + 2); use the symmetry
    # I_x(a, b) = 1 − I_{1−x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _check_dof(dof: float) -> None:
    if not (math.isfinite(dof) and dof > 0):
        raise ValueError(f"dof must be finite and > 0, got {dof}")


def student_t_cdf(t: float, dof: float) -> float:
    """P(T ≤ t) for Student's t with ``dof`` degrees of freedom.

    P(T > |t|) = ½·I_{ν/(ν+t²)}(ν/2, ½) (Numerical Recipes eq. 6.4.9), I the regularised
    incomplete beta function.
    """
    _check_dof(dof)
    if math.isnan(t):
        raise ValueError("t must not be nan")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betai(0.5 * dof, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, dof: float) -> float:
    """t with P(T ≤ t) = p for Student's t on ``dof`` dof: :func:`student_t_cdf` by bisection."""
    _check_dof(dof)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, dof) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _profile_sse(x: FloatArray, log_s: FloatArray, log_k: FloatArray) -> FloatArray:
    """SSE(B_c) = Σ (r_i − r̄)², r_i = log S_i − log(1 + B_c/B_i): log S_min profiled out."""
    r = log_s - np.log1p(np.exp(log_k)[:, None] / x[None, :])
    out: FloatArray = np.sum((r - r.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return out


def _grid_sse(x: FloatArray, log_s: FloatArray, log_k: FloatArray) -> FloatArray:
    """:func:`_profile_sse` of every row (m, n) at every grid point: shape (m, grid)."""
    f = np.log1p(np.exp(log_k)[:, None] / x[None, :])
    fc = f - f.mean(axis=1, keepdims=True)
    yc = log_s - log_s.mean(axis=1, keepdims=True)
    out: FloatArray = (
        np.sum(yc**2, axis=1)[:, None] - 2.0 * (yc @ fc.T) + np.sum(fc**2, axis=1)[None, :]
    )
    return out


def _bisect_threshold(
    x: FloatArray, log_s: FloatArray, inner: FloatArray, outer: FloatArray, thr: FloatArray
) -> FloatArray:
    """Where SSE crosses thr between log B_c = inner (SSE ≤ thr) and outer (SSE > thr)."""
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (inner + outer)
        ok = _profile_sse(x, log_s, mid) <= thr
        inner = np.where(ok, mid, inner)
        outer = np.where(ok, outer, mid)
    return inner


def _profile_interval_rows(
    x: FloatArray, log_s: FloatArray, level: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Profile interval of every row of log_s (m, n): returns (lo, hi, b_crit), each (m,).

    {B_c : SSE(B_c) ≤ SSE_min·(1 + t²/(n − 2))}, t = t_{(1+level)/2, n−2}, closed off as its
    hull on the fit's grid of log B_c; an end at the grid's bound is open (0.0 or inf).
    """
    n = x.size
    k_hat = _fit(x, log_s)[0]
    lk_hat = np.log(k_hat)
    t = student_t_quantile(0.5 * (1.0 + level), n - 2)
    thr = _profile_sse(x, log_s, lk_hat) * (1.0 + t * t / (n - 2))
    grid = np.linspace(
        math.log(float(x.min()) / _GRID_SPAN), math.log(float(x.max()) * _GRID_SPAN), _GRID_POINTS
    )
    inside = _grid_sse(x, log_s, grid) <= thr[:, None]
    any_in = inside.any(axis=1)
    first = np.argmax(inside, axis=1)
    last = _GRID_POINTS - 1 - np.argmax(inside[:, ::-1], axis=1)
    # The fitted point is inside by construction even if no grid point is (exact data).
    inner_lo = np.where(any_in, np.minimum(grid[first], lk_hat), lk_hat)
    inner_hi = np.where(any_in, np.maximum(grid[last], lk_hat), lk_hat)
    # The grid point next beyond each inner end is outside: no inside point lies beyond it.
    below = np.clip(np.searchsorted(grid, inner_lo, side="left") - 1, 0, _GRID_POINTS - 1)
    above = np.clip(np.searchsorted(grid, inner_hi, side="right"), 0, _GRID_POINTS - 1)
    log_lo = _bisect_threshold(x, log_s, inner_lo, grid[below], thr)
    log_hi = _bisect_threshold(x, log_s, inner_hi, grid[above], thr)
    lo = np.where(inner_lo <= grid[0], 0.0, np.exp(log_lo))
    hi = np.where(inner_hi >= grid[-1], math.inf, np.exp(log_hi))
    return lo, hi, k_hat


def b_crit_interval(
    batch_sizes: npt.ArrayLike, steps: npt.ArrayLike, level: float = 0.9
) -> tuple[float, float]:
    """Profile-likelihood interval for B_crit of S(B) = S_min·(1 + B_crit/B) (eq. 2.11).

    {B_c : SSE(B_c) ≤ SSE_min·(1 + t²_{(1+level)/2, n−2}/(n − 2))}, SSE(B_c) the log-space
    residual sum of squares with log S_min profiled out (a mean): the F/t test of B_c,
    exact for a linear model with normal errors. n counts every point, so several seeds
    per batch size put their spread into the residuals. An end that reaches the search
    range [min(B)/1000, max(B)·1000] is open: 0.0 or math.inf. Exact points give a
    zero-width interval. Needs at least 3 points and 2 distinct batch sizes.
    """
    x, y = _check_points(batch_sizes, steps, "steps")
    _require_two_sizes(x, np.ones_like(x))
    if x.size < 3:
        raise ValueError(
            f"an interval needs at least 3 points (2 parameters are fitted), got {x.size}"
        )
    _check_level(level)
    lo, hi, _ = _profile_interval_rows(x, np.log(y)[None, :], level)
    return float(lo[0]), float(hi[0])


BCritKind = Literal["inside", "beyond", "below", "undetermined", "too_few"]
B_CRIT_KINDS: tuple[BCritKind, ...] = ("inside", "beyond", "below", "undetermined", "too_few")
_MIN_SIZES = 3


@dataclass(frozen=True)
class BCritFinding:
    """What a B_crit fit may be reported as (S(B) = S_min·(1 + B_crit/B), eq. 2.11).

    ``kind``: "inside" (B_crit within [min B, max B], ≥ 3 distinct batch sizes, its
    interval closed), "beyond" (B_crit > max B: steps still fall about as 1/B, only E_min
    is determined; or an interval open above), "below" (B_crit < min B: steps barely fall
    with B, only S_min is; or an interval open below), "undetermined" (an interval open at
    both ends), "too_few" (< 3 distinct batch sizes: no interval, not a finding).
    ``b_crit`` is the fitted value (nan with fewer than 2 distinct batch sizes);
    ``interval`` is :func:`b_crit_interval` at
    ``level`` (None for "too_few"); ``note`` is a one-line verdict and ``covers`` a
    one-line statement of what the interval covers.
    """

    kind: BCritKind
    b_crit: float
    interval: tuple[float, float] | None
    level: float
    n_points: int
    n_sizes: int
    fit: TradeoffFit | None
    note: str
    covers: str


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.0f}" if 10 <= value < 1e5 else f"{value:.3g}"


def _pct(level: float) -> str:
    return f"{100 * level:g}%"


def _covers(level: float, n: int, n_sizes: int, seeds: int) -> str:
    if seeds > 1:
        points = (
            f"each the median over {seeds} training seeds of each seed's best, so that "
            "seed-to-seed variation enters through the scatter of the medians"
        )
    elif n > n_sizes:
        points = "several per batch size, taken as independent"
    else:
        points = "one per batch size from one training seed (seed-to-seed variation not in it)"
    return (
        f"{_pct(level)} profile-likelihood interval (t, n−2 = {n - 2} dof) of B_crit in "
        f"S(B)=S_min(1+B_crit/B) over the {n} points given, {points}; not the lr grid's "
        "resolution nor how often the target is evaluated"
    )


def _note(
    kind: BCritKind, b_crit: float, lo: float, hi: float, b_min: float, b_max: float, level: float
) -> str:
    pct = _pct(level)
    if kind == "undetermined":
        return (
            f"not determined by the batch sizes tried (fit {_fmt(b_crit)}, but its {pct} "
            "interval is open at both ends)"
        )
    if kind == "beyond" and b_crit <= b_max:
        return (
            f"not bounded above by the batch sizes tried (fit {_fmt(b_crit)}, but all the "
            f"data say at {pct} is B_crit > {_fmt(lo)})"
        )
    if kind == "beyond":
        bound = f"B_crit > {_fmt(lo)}" if lo > 0 else "no bound on B_crit"
        return (
            "beyond the batch sizes tried (steps still fall about as 1/B up to "
            f"B={_fmt(b_max)}; {bound} at {pct})"
        )
    if kind == "below" and b_crit >= b_min:
        return (
            f"not bounded below by the batch sizes tried (fit {_fmt(b_crit)}, but all the "
            f"data say at {pct} is B_crit < {_fmt(hi)})"
        )
    if kind == "below":
        bound = f"B_crit < {_fmt(hi)}" if math.isfinite(hi) else "no bound on B_crit"
        return (
            "below the batch sizes tried (steps barely fall with B from "
            f"B={_fmt(b_min)}; {bound} at {pct})"
        )
    return (
        f"B_crit = {_fmt(b_crit)} ({pct} interval {_fmt(lo)}–{_fmt(hi)}) within the batch "
        f"sizes tried ({_fmt(b_min)}–{_fmt(b_max)})"
    )


def b_crit_finding(
    batch_sizes: npt.ArrayLike, steps: npt.ArrayLike, level: float = 0.9, seeds: int = 1
) -> BCritFinding:
    """Fit S(B) = S_min·(1 + B_crit/B) (eq. 2.11) and say what, if anything, it finds.

    ``steps`` are the fewest steps to the target, one or more points per batch size (only
    batch sizes that reached the target); ``seeds`` > 1 says each point is a median over
    that many training seeds (for what the interval covers). See :class:`BCritFinding`
    for the kinds; an interval open at one end makes the fit no finding ("beyond" or
    "below") even where the fitted value lies within the batch sizes tried.
    """
    _check_level(level)
    x, y = _as_array(batch_sizes), _as_array(steps)
    if x.ndim == 1 and x.shape == y.shape and x.size == 0:
        n_sizes = 0
    else:
        x, y = _check_points(x, y, "steps")
        n_sizes = int(np.unique(x).size)
    if n_sizes < _MIN_SIZES:
        fit = fit_tradeoff(x, y) if n_sizes >= 2 else None
        return BCritFinding(
            kind="too_few",
            b_crit=fit.b_crit if fit is not None else math.nan,
            interval=None,
            level=level,
            n_points=int(x.size),
            n_sizes=n_sizes,
            fit=fit,
            note=f"too few batch sizes ({n_sizes} reached the target; {_MIN_SIZES} are needed)",
            covers="no interval: fewer than 3 batch sizes",
        )
    fit = fit_tradeoff(x, y)
    lo, hi = b_crit_interval(x, y, level)
    b_min, b_max = float(x.min()), float(x.max())
    kind: BCritKind = (
        "undetermined"
        if math.isinf(hi) and lo <= 0
        else "beyond"
        if fit.b_crit > b_max or math.isinf(hi)
        else "below"
        if fit.b_crit < b_min or lo <= 0
        else "inside"
    )
    return BCritFinding(
        kind=kind,
        b_crit=fit.b_crit,
        interval=(lo, hi),
        level=level,
        n_points=int(x.size),
        n_sizes=n_sizes,
        fit=fit,
        note=_note(kind, fit.b_crit, lo, hi, b_min, b_max, level),
        covers=_covers(level, int(x.size), n_sizes, seeds),
    )


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
