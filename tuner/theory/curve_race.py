"""Comparing two learning curves at one batch size: is a trial so far behind the leader
that it cannot reach the target in fewer steps?

Curves here fall towards the target (lower is better; negate a metric that rises). A
trial at step t whose value v the leader had already reached by step t_L is t/t_L times
slower than the leader there; under the time rescaling of gradient flow (a run at a
smaller effective lr follows the same path, slower: Smith et al. 2017, "A Bayesian
perspective on generalization and SGD", where lr·steps is the time), it would need
about S_L·t/t_L steps to the target the leader reached in S_L. Curves at one batch size
do cross (a high lr starts fast and then sits on its noise floor; a low lr overtakes it),
so the rule allows a lag factor before calling a trial beaten, and compares only past a
fraction of S_L. The value is compared after taking off a margin of the noise between
runs, estimated from the curves' own jitter (`curve_noise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["curve_noise", "lag_ratio", "step_reaching"]

_MAD_TO_SD = 1.4826  # σ of a normal over its median absolute deviation
_SECOND_DIFFERENCE_VAR = 6.0  # Var(x[i+1] − 2x[i] + x[i−1]) / σ² for white noise


def curve_noise(values: Sequence[float]) -> float:
    """σ of the report-to-report noise of a curve: the robust spread of its second
    differences, 1.4826·MAD(Δ²v)/√6 (white noise of variance σ² gives Var(Δ²v) = 6σ²).

    Taken around the median second difference, so a smooth curve's own bend is not noise
    (a parabola gives 0). NaN with fewer than 4 finite values."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size < 4:
        return math.nan
    d2 = v[2:] - 2.0 * v[1:-1] + v[:-2]
    mad = float(np.median(np.abs(d2 - np.median(d2))))
    return _MAD_TO_SD * mad / math.sqrt(_SECOND_DIFFERENCE_VAR)


def step_reaching(steps: Sequence[float], values: Sequence[float], level: float) -> float:
    """The first step at which a falling curve is at or below `level`, linear between
    reports (the first report if it already is; inf if it never is)."""
    previous: tuple[float, float] | None = None
    for step, value in zip(steps, values, strict=True):
        if not math.isfinite(value):
            continue
        if value <= level:
            if previous is None or previous[1] == value:
                return float(step)
            (s0, v0) = previous
            return s0 + (step - s0) * (v0 - level) / (v0 - value)
        previous = (float(step), float(value))
    return math.inf


def lag_ratio(
    step: float,
    value: float,
    leader_steps: Sequence[float],
    leader_values: Sequence[float],
    margin: float = 0.0,
) -> float:
    """t / t_L: how many times the steps the leader needed to reach `value − margin` this
    trial has taken to be at `value` (inf where the leader never was that low before; 0
    at step 0)."""
    if step <= 0:
        return 0.0
    reached_at = step_reaching(leader_steps, leader_values, value - margin)
    if reached_at <= 0:
        return math.inf
    return step / reached_at
