"""The critical batch size measured along training by branching (numpy only).

Merrill, Arora, Groeneveld, Hajishirzi 2025 ("Critical Batch Size Revisited",
arXiv:2505.23971): from a checkpoint of a base run at batch size B, continue short
branches at k·B (the lr scaled by the optimiser's law) for the same number of examples
Δ as the base run takes next, and compare the losses after Δ. The critical batch size at
that checkpoint is the largest k·B whose branch keeps up, its loss within a relative
tolerance of the base run's:

    keeps_up(k) ⇔ L_k(t + Δ) ≤ (1 + tol)·L_base(t + Δ)        (a loss, lower is better)

Only multipliers tried can be reported: the value lies between the largest k that keeps
up (with every smaller k keeping up too) and the next one tried, which does not. That
bracket is what `BranchedBCrit.interval` covers: the grid of multipliers, not the noise
between runs (one branch per k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BranchedBCrit", "branched_b_crit", "lr_multiplier", "recommended_schedule"]


@dataclass(frozen=True)
class BranchedBCrit:
    """The branched critical batch size at one checkpoint."""

    progress: float  # the checkpoint's position in the base run (its examples or steps)
    b_crit: float  # the largest k·B that kept up (B itself where no k > 1 did)
    interval: tuple[float, float]  # [b_crit, the first k·B tried above it that did not)
    capped: bool  # every multiplier tried kept up: B_crit is at least b_crit


def lr_multiplier(law: str, k: float) -> float:
    """How the lr of a branch at k·B is scaled from the base run's: k for SGD's linear
    scaling below B_noise (Goyal et al. 2017; McCandlish's ε_opt ∝ B there), √k for Adam's
    square-root rule (Malladi et al. 2022; Li et al.'s surge law below its peak)."""
    if not k >= 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if law in ("sgd", "sgd_ema"):
        return float(k)
    if law == "adam":
        return math.sqrt(k)
    raise ValueError(f"unknown law {law!r}")


def branched_b_crit(
    base_batch_size: float,
    progress: float,
    base_loss: float,
    branch_loss: Mapping[float, float],
    tolerance: float,
) -> BranchedBCrit:
    """B_crit at one checkpoint from the base run's loss after Δ examples and each
    branch's (multiplier k → loss after the same Δ examples; a non-finite loss, a
    diverged branch, does not keep up). The largest k·B such that it and every smaller k
    tried kept up."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not branch_loss or min(branch_loss) <= 1:
        raise ValueError("give branches at multipliers k > 1")
    best = 1.0
    failed_at = math.inf
    for k in sorted(branch_loss):
        loss = branch_loss[k]
        if math.isfinite(loss) and loss <= (1 + tolerance) * base_loss:
            best = k
        else:
            failed_at = k
            break
    return BranchedBCrit(
        progress=progress,
        b_crit=best * base_batch_size,
        interval=(best * base_batch_size, failed_at * base_batch_size),
        capped=math.isinf(failed_at),
    )


def recommended_schedule(
    points: Sequence[BranchedBCrit], base_batch_size: float
) -> list[tuple[float, float]]:
    """A batch-size warmup from the measurements: (progress, B) from each checkpoint on,
    B the branched B_crit there but never below the base B and never decreasing (a
    batch size that shrank would undo the noise averaging relied on so far)."""
    schedule: list[tuple[float, float]] = []
    current = base_batch_size
    for point in sorted(points, key=lambda p: p.progress):
        current = max(current, point.b_crit)
        if not schedule or schedule[-1][1] != current:
            schedule.append((point.progress, current))
    return schedule
