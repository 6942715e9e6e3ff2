"""Learning-rate schedule: linear warmup, then constant."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimisation step `step` (1-based).

    Rises linearly over the first `warmup_steps` steps, reaching base_lr at step
    `warmup_steps`, and stays there (nanoGPT's get_lr without the decay).
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return base_lr
    return base_lr * step / warmup_steps


@dataclass(frozen=True)
class WarmupConstant:
    """`warmup_lr` as the trial's schedule: the lr of each step, set on the optimiser."""

    base_lr: float
    warmup_steps: int

    def lr(self, step: int) -> float:
        return warmup_lr(step, self.base_lr, self.warmup_steps)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set the lr of step `step` on every parameter group."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
