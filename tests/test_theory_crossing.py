"""Steps to a target interpolated between evaluations, and what rounding does to B_crit."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from tuner.theory import (
    CROSSING_MODES,
    crossing_step,
    first_crossing,
    fit_tradeoff,
    steps_for,
)

Array = npt.NDArray[np.float64]
Curve = Callable[[Array, float], Array]


@pytest.mark.parametrize(
    ("step_before", "value_before", "step", "value", "target", "mode", "expected"),
    [
        pytest.param(20.0, 1.0, 40.0, 0.0, 0.25, "min", 35.0, id="falls"),
        pytest.param(20.0, 0.0, 40.0, 1.0, 0.75, "max", 35.0, id="rises"),
        pytest.param(20.0, 1.0, 40.0, 0.25, 0.25, "min", 40.0, id="lands-on-target"),
        pytest.param(0.0, 3.0, 5.0, -2.0, 2.0, "min", 1.0, id="negative-values"),
        pytest.param(None, None, 40.0, 0.1, 0.25, "min", 40.0, id="first-evaluation"),
        pytest.param(20.0, math.inf, 40.0, 0.1, 0.25, "min", 40.0, id="previous-diverged"),
        pytest.param(20.0, math.nan, 40.0, 0.9, 0.75, "max", 40.0, id="previous-nan"),
    ],
)
def test_crossing_step_closed_forms(
    step_before: float | None,
    value_before: float | None,
    step: float,
    value: float,
    target: float,
    mode: str,
    expected: float,
) -> None:
    got = crossing_step(step_before, value_before, step, value, target, mode)
    assert got == pytest.approx(expected, rel=1e-12)
    if step_before is not None:
        assert step_before < got <= step


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((20.0, 1.0, 40.0, 0.5, 0.25, "min"), "has not reached"),
        ((20.0, 0.1, 40.0, 0.0, 0.25, "min"), "already reached"),
        ((20.0, 0.9, 40.0, 1.0, 0.75, "max"), "already reached"),
        ((40.0, 1.0, 40.0, 0.0, 0.25, "min"), "step_before"),
        ((20.0, 1.0, 40.0, 0.0, 0.25, "mean"), "mode"),
        ((20.0, 1.0, 40.0, math.nan, 0.25, "min"), "finite"),
    ],
)
def test_crossing_step_rejects(
    args: tuple[float, float, float, float, float, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        crossing_step(*args)


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize(("mode", "slope"), [("min", -0.01), ("max", 0.02)])
def test_linear_curve_is_interpolated_exactly(k: int, mode: str, slope: float) -> None:
    t = np.arange(k, 2001, k, dtype=float)
    values = 5.0 + slope * t
    for crossing in (37.3, 123.0, 401.9):
        target = 5.0 + slope * crossing
        assert first_crossing(t, values, target, mode) == pytest.approx(crossing, rel=1e-9)
        assert (
            first_crossing(t, values, target, mode, interpolate=False)
            == math.ceil(crossing / k) * k
        )


@pytest.mark.parametrize(
    ("tau", "k"), [(50.0, 5), (50.0, 20), (200.0, 5), (200.0, 20), (200.0, 50)]
)
@pytest.mark.parametrize("crossing", [61.3, 123.4, 301.7])
def test_exponential_decay_interpolation_error_is_second_order(
    tau: float, k: int, crossing: float
) -> None:
    # L(t) = exp(−t/τ) is convex, so the chord crosses late, by at most (k²/8)·max L''/|chord
    # slope| ≤ k²/(8τ)·e^{k/τ}; rounding up costs up to k (here ceil(t*/k)·k − t*).
    t = np.arange(k, 2000, k, dtype=float)
    target = math.exp(-crossing / tau)
    got = first_crossing(t, np.exp(-t / tau), target)
    bound = k * k / (8 * tau) * math.exp(k / tau)
    assert 0.0 <= got - crossing <= bound
    assert got - crossing < 0.1 * k
    rounded = first_crossing(t, np.exp(-t / tau), target, interpolate=False)
    assert rounded == pytest.approx(math.ceil(crossing / k) * k)


@pytest.mark.parametrize(
    ("values", "target", "mode", "interpolate", "expected"),
    [
        pytest.param([3.0, 2.0, 1.0], 0.5, "min", True, math.nan, id="never"),
        pytest.param([math.nan, 2.0, 0.0], 1.0, "min", True, 25.0, id="nan-before"),
        pytest.param([0.1, 2.0, 0.0], 1.0, "min", True, 10.0, id="at-first-eval"),
        pytest.param([0.0, 0.5, 0.9], 0.7, "max", True, 25.0, id="max"),
        pytest.param([0.0, 0.5, 0.9], 0.7, "max", False, 30.0, id="max-round-up"),
        pytest.param([2.0, 1.5, 0.5, 1.5, 0.1], 1.0, "min", True, 25.0, id="first-of-two"),
    ],
)
def test_first_crossing(
    values: list[float], target: float, mode: str, interpolate: bool, expected: float
) -> None:
    steps = 10.0 * np.arange(1, len(values) + 1)
    got = first_crossing(steps, values, target, mode, interpolate)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("steps", "values", "match"),
    [
        ([10.0, 20.0], [1.0], "equal length"),
        ([20.0, 10.0], [1.0, 0.0], "increasing"),
        ([10.0, 10.0], [1.0, 0.0], "increasing"),
        ([10.0, math.nan], [1.0, 0.0], "increasing"),
    ],
)
def test_first_crossing_rejects(steps: list[float], values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        first_crossing(steps, values, 0.5)
    with pytest.raises(ValueError, match="mode"):
        first_crossing([10.0], [0.0], 0.5, "lowest")
    assert CROSSING_MODES == ("min", "max")


# --- B_crit from round-up vs interpolated steps on curves whose S(B) is known exactly.

S_MIN, B_CRIT = 50.0, 191.0
SIZES = 2.0 ** np.arange(4, 11)  # 16 … 1024
TRUE_STEPS = steps_for(SIZES, S_MIN, B_CRIT)
TARGET = 0.1


def _exponential(t: Array, s: float) -> Array:
    """L(t) = 0.1^{t/S}: falls from 1 and reaches the target 0.1 exactly at t = S."""
    return np.asarray(TARGET ** (t / s))


def _power(t: Array, s: float) -> Array:
    """L(t) = 1/(1 + t/τ) with τ = S/9: reaches 0.1 at t = S."""
    return 1.0 / (1.0 + 9.0 * t / s)


@pytest.mark.parametrize(
    ("curve", "k", "rounded_b_crit", "max_interpolated_bias"),
    [
        # Rounded steps ceil(S/k)·k do not depend on the curve's shape.
        pytest.param(_exponential, 5, 187.009, 0.003, id="exp-k5"),
        pytest.param(_exponential, 20, 173.520, 0.025, id="exp-k20"),
        pytest.param(_power, 5, 187.009, 0.003, id="power-k5"),
        pytest.param(_power, 20, 173.520, 0.02, id="power-k20"),
    ],
)
def test_rounding_biases_b_crit_low_and_interpolation_removes_most(
    curve: Curve, k: int, rounded_b_crit: float, max_interpolated_bias: float
) -> None:
    rounded, interpolated = [], []
    for s in TRUE_STEPS:
        t = np.arange(k, 10 * s, k, dtype=float)
        rounded.append(first_crossing(t, curve(t, s), TARGET, interpolate=False))
        interpolated.append(first_crossing(t, curve(t, s), TARGET))
    np.testing.assert_allclose(rounded, np.ceil(TRUE_STEPS / k) * k)
    b_rounded = fit_tradeoff(SIZES, rounded).b_crit
    b_interpolated = fit_tradeoff(SIZES, interpolated).b_crit
    assert fit_tradeoff(SIZES, TRUE_STEPS).b_crit == pytest.approx(B_CRIT, rel=1e-6)
    assert b_rounded == pytest.approx(rounded_b_crit, rel=1e-4)  # 2 % (k=5), 9 % (k=20) low
    assert abs(b_interpolated / B_CRIT - 1.0) <= max_interpolated_bias
    assert abs(b_interpolated - B_CRIT) < 0.25 * abs(b_rounded - B_CRIT)
