"""Adaptive batch-size rules (tuner.theory.adaptive_batch) against closed forms and an
exact simulation of per-example gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.theory.adaptive_batch import (
    grown_batch_size,
    noise_scale_batch,
    norm_test_batch,
    norm_test_expected,
    norm_test_from_examples,
)


def test_norm_test_batch_is_the_variance_over_eta2_times_the_batch_norm() -> None:
    # tr Σ = 10, |G|² = 1, B = 10: E‖g_B‖² = 1 + 10/10 = 2, so 10/(η²·2).
    assert norm_test_batch(10.0, 1.0, 10, eta=1.0) == 5.0
    assert norm_test_batch(10.0, 1.0, 10, eta=0.5) == 20.0
    assert math.isnan(norm_test_batch(-1.0, 1.0, 10, eta=1.0))
    with pytest.raises(ValueError, match="eta"):
        norm_test_batch(10.0, 1.0, 10, eta=0.0)


def test_the_sample_test_equals_the_estimator_form_on_the_same_batch() -> None:
    """With tr Σ̂ the Bessel-corrected variance sum and |G|² = ‖ḡ‖² − tr Σ̂/B (the
    unbiased estimate), the two forms are the same number."""
    grads = np.random.default_rng(3).normal(0.2, 1.0, size=(16, 40))
    mean = grads.mean(axis=0)
    trace = float(grads.var(axis=0, ddof=1).sum())
    g2 = float(mean @ mean) - trace / 16
    assert norm_test_from_examples(grads, eta=0.7) == pytest.approx(
        norm_test_batch(trace, g2, 16, eta=0.7), rel=1e-12
    )


def test_norm_test_in_expectation_is_b_simple_b_over_b_plus_b_simple() -> None:
    """Exact simulation: per-example gradients N(G, diag σ²) with |G|² = 1 and tr Σ = 64
    (B_simple = 64). Over many batches of B = 32 the mean numerator over the mean
    denominator is B_simple·B/(B + B_simple) = 21.33."""
    rng = np.random.default_rng(0)
    dim, batch, draws = 64, 32, 4000
    g = np.full(dim, 1.0 / math.sqrt(dim))
    numerators, denominators = [], []
    for _ in range(draws):
        grads = g + rng.normal(0.0, 1.0, size=(batch, dim))
        mean = grads.mean(axis=0)
        numerators.append(grads.var(axis=0, ddof=1).sum())
        denominators.append(mean @ mean)
    ratio = float(np.mean(numerators) / np.mean(denominators))
    assert ratio == pytest.approx(norm_test_expected(64.0, 32.0), rel=0.02)
    assert norm_test_expected(64.0, 32.0) == pytest.approx(64 * 32 / 96)
    # One test grows B by less than 1/η²: B_simple·B/(B + B_simple) < B.
    assert norm_test_expected(1e9, 32.0) < 32.0


def test_noise_scale_rule_is_a_multiple_of_b_simple() -> None:
    assert noise_scale_batch(40.0, 0.5) == 20.0
    assert math.isnan(noise_scale_batch(-3.0, 1.0))
    with pytest.raises(ValueError, match="multiple"):
        noise_scale_batch(40.0, 0.0)


@pytest.mark.parametrize(
    ("current", "proposed", "maximum", "granularity", "expected"),
    [
        (32, 20.0, 512, 8, 32),  # never shrinks
        (32, 33.0, 512, 8, 40),  # rounds up to the granularity
        (32, 1e6, 512, 8, 512),  # capped
        (32, 1e6, 500, 8, 496),  # the cap itself on the granularity
        (32, math.nan, 512, 8, 32),  # no estimate yet
        (32, 64.0, 512, 64, 64),
    ],
)
def test_grown_batch_size(
    current: int, proposed: float, maximum: int, granularity: int, expected: int
) -> None:
    assert grown_batch_size(current, proposed, maximum, granularity) == expected


def test_grown_batch_size_refuses_a_current_above_the_maximum() -> None:
    with pytest.raises(ValueError, match="current <= maximum"):
        grown_batch_size(1024, 2048.0, 512, 8)
