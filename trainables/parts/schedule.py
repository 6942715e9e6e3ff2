"""Learning-rate schedule: linear warmup, then constant, cosine or linear decay.

nanoGPT's `get_lr`, with the decay's shape a choice: over the first `warmup_steps` steps
the lr rises linearly to the trial's lr; then it stays there (constant) or decays to
`final_fraction` of it by step `horizon` (cosine: ½(1 + cos πr), linear: 1 − r, with r the
fraction of the decay done), and is held there after the horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("constant", "cosine", "linear")


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimisation step `step` (1-based) during and after the warmup,
    without decay: rises linearly over the first `warmup_steps` steps, reaching base_lr at
    step `warmup_steps`, and stays there."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return base_lr
    return base_lr * step / warmup_steps


def decay_factor(kind: str, done: float) -> float:
    """The decay's shape at `done` ∈ [0, 1] of the way: 1 at the start, 0 at the end."""
    done = min(max(done, 0.0), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if kind == "linear":
        return 1.0 - done
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown schedule kind {kind!r} (choose from {', '.join(SCHEDULE_KINDS)})")


@dataclass(frozen=True)
class LrSchedule:
    """The lr of each step of one trial, set on its optimiser.

    `horizon` is the step by which a decay ends (the trial's step budget unless the spec
    gives `schedule.horizon_steps`); the decay starts where the warmup ends.
    """

    base_lr: float
    warmup_steps: int
    kind: str = "constant"
    final_fraction: float = 0.0
    horizon: int = 1

    def __post_init__(self) -> None:
        decay_factor(self.kind, 0.0)  # an unknown kind fails here, before training
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")

    def lr(self, step: int) -> float:
        if step < self.warmup_steps or self.kind == "constant":
            return warmup_lr(step, self.base_lr, self.warmup_steps)
        span = self.horizon - self.warmup_steps
        done = 1.0 if span <= 0 else (step - self.warmup_steps) / span
        final = self.final_fraction * self.base_lr
        return final + (self.base_lr - final) * decay_factor(self.kind, done)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set the lr of step `step` on every parameter group."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
