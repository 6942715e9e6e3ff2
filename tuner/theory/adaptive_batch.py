"""Batch sizes that grow with the measured gradient noise (numpy only).

Two rules for the batch size a run should use next, from the noise statistics it
measures on its own gradients:

- the **norm test** (Byrd, Chin, Nocedal, Wu 2012; the adaptive local batches of Lau et
  al. 2024, arXiv:2406.13936): grow B until the batch gradient's variance is at most η²
  of its squared norm, E‖g_B − G‖² ≤ η²‖g_B‖², i.e.

      b = ⌈ tr Σ̂ / (η² ‖g_B‖²) ⌉,    tr Σ̂ = ‖Var̂_i ∇f_i‖₁ (Bessel-corrected);

- the **noise-scale rule**: B tracks a multiple c of the current B_simple = tr Σ/|G|²
  (McCandlish et al. 2018, whose B_crit ≈ B_simple for a well-conditioned loss).

With η = 1 the norm test is a naive B_simple whose denominator is the biased ‖g_B‖²:
its ratio of expectations is B_simple·B/(B + B_simple) < B, so one test grows B by at
most ~1/η² (`norm_test_expected`). Both rules only grow B (`grown_batch_size`): a batch
size that shrank would undo the noise averaging the run relied on so far.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "ADAPTIVE_RULES",
    "grown_batch_size",
    "noise_scale_batch",
    "norm_test_batch",
    "norm_test_expected",
    "norm_test_from_examples",
]

ADAPTIVE_RULES = ("norm_test", "noise_scale")


def norm_test_batch(trace_sigma: float, g2: float, batch_size: float, eta: float) -> float:
    """The norm test's batch size tr Σ / (η² ‖g_B‖²), with ‖g_B‖² = |G|² + tr Σ/B the batch
    gradient's expected squared norm, from unbiased estimates of tr Σ and |G|² (as
    `tuner.theory.noise` gives them); nan where they are not positive."""
    if not eta > 0 or not batch_size > 0:
        raise ValueError(f"eta and batch_size must be > 0, got {eta}, {batch_size}")
    batch_norm2 = g2 + trace_sigma / batch_size
    if not (trace_sigma > 0 and batch_norm2 > 0):
        return math.nan
    return trace_sigma / (eta**2 * batch_norm2)


def norm_test_from_examples(per_example_grads: npt.ArrayLike, eta: float) -> float:
    """The sample norm test on one batch of per-example gradients (rows): ‖Var̂_i ∇f_i‖₁ /
    (η²‖ḡ‖²), the variance per coordinate with Bessel's correction, ḡ the batch mean
    (Byrd et al. 2012, eq. 3.9; Lau et al.'s `tests.py`)."""
    grads = np.asarray(per_example_grads, dtype=np.float64)
    if grads.ndim != 2 or grads.shape[0] < 2:
        raise ValueError("need a (batch, parameters) array with at least 2 examples")
    mean = grads.mean(axis=0)
    variance_l1 = float(grads.var(axis=0, ddof=1).sum())
    return variance_l1 / (eta**2 * float(mean @ mean))


def norm_test_expected(b_simple: float, batch_size: float, eta: float = 1.0) -> float:
    """E tr Σ̂ / (η² E‖g_B‖²) = B_simple·B / (η²(B + B_simple)): what the test asks for at
    batch size B on a loss whose B_simple = tr Σ/|G|² (ratio of expectations)."""
    return b_simple * batch_size / (eta**2 * (batch_size + b_simple))


def noise_scale_batch(b_simple: float, multiple: float) -> float:
    """The noise-scale rule's batch size c·B_simple (nan where B_simple is not positive)."""
    if not multiple > 0:
        raise ValueError(f"multiple must be > 0, got {multiple}")
    return multiple * b_simple if b_simple > 0 else math.nan


def grown_batch_size(current: int, proposed: float, maximum: int, granularity: int) -> int:
    """The next batch size: `proposed` rounded up to a multiple of `granularity` (the
    workers × micro-batch a step splits into), never below `current` (the rules only
    grow B), never above `maximum`; `current` where the proposal is nan."""
    if not 0 < current <= maximum or granularity <= 0:
        raise ValueError(
            f"need 0 < current <= maximum and granularity > 0, got {current}, {maximum}, "
            f"{granularity}"
        )
    if not math.isfinite(proposed) or proposed <= current:
        return current
    rounded = granularity * math.ceil(proposed / granularity)
    cap = granularity * (maximum // granularity)
    return max(current, min(rounded, cap))
