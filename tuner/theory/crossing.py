"""Steps to a target from evaluations every few steps, interpolated between evaluations.

"The first evaluation at or past the target" rounds the crossing up by up to one evaluation
interval k. A delay δ added to every S(B) = S_min·(1 + B_crit/B) lowers the fitted B_crit
(to S_min·B_crit/(S_min + δ) for a constant δ), so rounding biases B_crit low, most where
S_min is only a few evaluation intervals. Interpolating linearly between the last
evaluation before the target and the first one past it removes most of that bias.

It cannot undo the other effect of evaluating every k steps on a fluctuating metric: dips
below the target between evaluations go unseen, which delays small-B runs (long, noisy
approaches to the target) most and biases B_crit up (bench/b_crit_coverage.py).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tuner.theory.noise import _as_array

__all__ = ["CROSSING_MODES", "crossing_step", "first_crossing", "target_met"]

CROSSING_MODES = ("min", "max")


def _check_mode(mode: str) -> None:
    if mode not in CROSSING_MODES:
        raise ValueError(f"mode must be one of {CROSSING_MODES}, got {mode!r}")


def target_met(value: npt.ArrayLike, target: float, mode: str) -> npt.ArrayLike:
    """Whether `value` has reached `target`: at or below it (mode min) or at or above it
    (max). Elementwise on arrays."""
    return value <= target if mode == "min" else value >= target  # type: ignore[operator]


def crossing_step(
    step_before: float | None,
    value_before: float | None,
    step: float,
    value: float,
    target: float,
    mode: str,
) -> float:
    """Step at which the line through (step_before, value_before), (step, value) meets target.

    t* = t₀ + (target − v₀)/(v − v₀)·(t − t₀), clipped to (t₀, t]. ``value`` is the first
    evaluation that reached the target (mode "min": value ≤ target, the metric falls to
    it; "max": value ≥ target) and ``value_before`` the evaluation before it, which had
    not. Without a previous evaluation (None), or with a non-finite one, there is nothing
    to interpolate and the answer is ``step`` itself.
    """
    _check_mode(mode)
    if not (math.isfinite(step) and math.isfinite(value) and math.isfinite(target)):
        raise ValueError(f"step, value and target must be finite, got {step}, {value}, {target}")
    if not target_met(value, target, mode):
        raise ValueError(f"value {value} has not reached the target {target} (mode {mode!r})")
    if step_before is None or value_before is None or not math.isfinite(value_before):
        return float(step)
    if not step_before < step:
        raise ValueError(f"step_before must be < step, got {step_before} and {step}")
    if target_met(value_before, target, mode):
        raise ValueError(
            f"value_before {value_before} already reached the target {target}: "
            "pass the last evaluation before the crossing"
        )
    fraction = (target - value_before) / (value - value_before)
    crossing = step_before + fraction * (step - step_before)
    # Clip for rounding only: with value_before beyond and value at the target, 0 < fraction ≤ 1.
    return float(min(max(crossing, math.nextafter(step_before, math.inf)), step))


def first_crossing(
    steps: npt.ArrayLike,
    values: npt.ArrayLike,
    target: float,
    mode: str = "min",
    interpolate: bool = True,
) -> float:
    """Steps to the target from a curve evaluated at increasing ``steps``; nan if never.

    The first evaluation at or past the target, or, with ``interpolate``, the
    :func:`crossing_step` between it and the evaluation before it. nan values (a diverged
    evaluation) never count as reaching the target.
    """
    _check_mode(mode)
    t, v = _as_array(steps), _as_array(values)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(
            f"steps and values must be 1-D of equal length, got shapes {t.shape}, {v.shape}"
        )
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("steps must be finite and strictly increasing")
    with np.errstate(invalid="ignore"):
        hit = np.asarray(target_met(v, target, mode))
    if not hit.any():
        return math.nan
    i = int(np.argmax(hit))
    if not interpolate or i == 0:
        return float(t[i])
    return crossing_step(float(t[i - 1]), float(v[i - 1]), float(t[i]), float(v[i]), target, mode)
