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
between runs.

The lr of a branch is the law's guess η·m(k) times a factor f from a small grid F, and a
run's loss is the best over that grid (`best_lr_factor`); the reference at B is searched
over the same grid (k = 1, m = 1), so that a factor above 1 cannot make a branch keep up
only because the base lr was below its best:

    L_k = min_f L(k·B, η·m(k)·f),   keeps_up(k) ⇔ L_k ≤ (1 + tol)·L_1      (f ∈ F)

Merrill et al.'s hypothesis (§1) asks that k·B keep up under an appropriate lr scaling;
a scaling law is one guess at it, and SGD's linear one fails where η·k crosses the
stability limit (η·k·λ_max ≈ 2) while a smaller lr at k·B would still keep up. F = {1}
is the law alone.

With S seeds per checkpoint (batch streams drawn afresh from the same state, the same S
for the reference and every branch: paired), each (k, f) is judged on its mean over the
seeds (`seed_mean`), the factor chosen on the means, and the paired relative gap
L_k,s/L_1,s − 1 is summarised by its mean and standard error (`paired_gap`): the noise of
the batch stream after the checkpoint, not the base run's history before it (one base
run per training seed), nor the choice of f (a minimum over noisy means leans low).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BranchedBCrit",
    "best_lr_factor",
    "branched_b_crit",
    "lr_multiplier",
    "paired_gap",
    "recommended_schedule",
    "seed_mean",
]


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


def seed_mean(losses: Sequence[float]) -> float:
    """The mean loss over a run's seeds, nan if any seed's is not finite (a run that
    diverged on one batch stream is not one that keeps up)."""
    values = np.asarray(losses, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan
    return float(values.mean())


def best_lr_factor(losses: Mapping[float, float]) -> tuple[float, float]:
    """The lr factor f whose loss is lowest, and that loss: min_f L(η·m(k)·f) over the
    finite losses (nan, nan where none is). Ties go to the factor nearest 1 (the law's
    own lr), then to the smaller factor."""
    finite = {f: loss for f, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        return math.nan, math.nan
    best = min(finite, key=lambda f: (finite[f], abs(math.log(f)), f))
    return float(best), float(finite[best])


def paired_gap(branch: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """The mean over seeds s of the relative gap L_k,s/L_ref,s − 1 (paired: seed s of the
    branch and of the reference draw the same batch stream) and its standard error
    sd/√S (nan for one seed; both nan where a loss is not finite)."""
    b = np.asarray(branch, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if b.shape != r.shape or b.size == 0:
        raise ValueError("give one branch loss per reference loss")
    if not (np.isfinite(b).all() and np.isfinite(r).all()):
        return math.nan, math.nan
    gaps = b / r - 1.0
    se = float(gaps.std(ddof=1) / math.sqrt(gaps.size)) if gaps.size > 1 else math.nan
    return float(gaps.mean()), se


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
