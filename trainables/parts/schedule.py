"""Learning-rate schedule: linear warmup, then constant, cosine, linear or step decay; and
the batch-size schedule that replaces a step decay (`batch_step`).

nanoGPT's `get_lr`, with the decay's shape a choice: over the first `warmup_steps` steps
the lr rises linearly to the trial's lr; then it stays there (constant) or decays to
`final_fraction` of it by step `horizon` (cosine: ½(1 + cos πr), linear: 1 − r, with r the
fraction of the decay done), and is held there after the horizon.

`step` multiplies the lr by `decay` at each milestone; `batch_step` keeps the lr (warmup,
then constant) and multiplies the batch size by k = 1/decay at the same milestones
instead (Smith, Kindermans, Ying and Le 2018, "Don't Decay the Learning Rate, Increase
the Batch Size": SGD's noise scale ε(N/B − 1)/(1 − m) ≈ εN/(B(1 − m)) falls by the same
factor either way). A milestone is a fraction f of the horizon in examples, the horizon's
examples being `horizon` × B₀ (B₀ the trial's batch size): it is passed once the examples
consumed reach f·horizon·B₀. Every batch size is B₀ times a power of k, so the examples
consumed are a multiple of B₀ and the milestone is passed once they reach
`milestone_steps` × B₀, ⌈f·horizon⌉ B₀-batches of examples; at a constant B₀ that is step
⌈f·horizon⌉, after which `step` decays the lr: the two kinds change the noise scale after
the same examples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from trainables.settings import DEFAULT_DECAY, DEFAULT_MILESTONES

SCHEDULE_KINDS = ("constant", "cosine", "linear", "step", "batch_step")
STEP_KINDS = ("step", "batch_step")  # the kinds with milestones
# How far 1/decay may be from a whole number for `batch_step` (floats such as 1/0.2).
INTEGER_TOLERANCE = 1e-9


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
    if kind in ("constant", "step", "batch_step"):
        return 1.0  # no continuous decay (step: `LrSchedule.lr`)
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
    decay: float = DEFAULT_DECAY  # step: the lr's factor at each milestone
    milestones: tuple[float, ...] = DEFAULT_MILESTONES  # step: fractions of the horizon

    def __post_init__(self) -> None:
        decay_factor(self.kind, 0.0)  # an unknown kind fails here, before training
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")
        if self.kind == "step":
            check_milestones(self.milestones)
            if not 0.0 < self.decay < 1.0:
                raise ValueError(f"decay must be in (0, 1), got {self.decay}")

    def lr(self, step: int) -> float:
        if self.kind == "step":
            # Decayed from step ⌈f·horizon⌉ + 1 on: after ⌈f·horizon⌉ steps of B₀ examples.
            passed = sum(step - 1 >= m for m in milestone_steps(self.milestones, self.horizon))
            return warmup_lr(step, self.base_lr, self.warmup_steps) * self.decay**passed
        if step < self.warmup_steps or self.kind in ("constant", "batch_step"):
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


def check_milestones(milestones: tuple[float, ...]) -> None:
    """Milestones must be increasing fractions of the horizon in (0, 1)."""
    if not milestones:
        raise ValueError("give at least one milestone")
    if not all(0.0 < f < 1.0 for f in milestones):
        raise ValueError(f"milestones must be in (0, 1), got {list(milestones)}")
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        raise ValueError(f"milestones must increase, got {list(milestones)}")


def milestone_steps(milestones: tuple[float, ...], horizon: int) -> tuple[int, ...]:
    """Each milestone as the B₀-batches of examples after which it is passed: ⌈f·horizon⌉,
    a product that lands a rounding error above a whole number counting as that number."""
    return tuple(max(1, math.ceil(f * horizon - INTEGER_TOLERANCE * horizon)) for f in milestones)


def batch_growth(decay: float) -> int:
    """`batch_step`'s factor k = 1/decay, a whole number >= 2 within INTEGER_TOLERANCE."""
    k = round(1.0 / decay) if decay > 0 else 0
    if k < 2 or abs(1.0 / decay - k) > INTEGER_TOLERANCE:
        raise ValueError(
            f"batch_step multiplies the batch size by 1/decay_factor, which must be a whole "
            f"number >= 2: 1/{decay:g} = {1.0 / decay if decay > 0 else math.inf:.6g}"
        )
    return k


@dataclass(frozen=True)
class BatchSchedule:
    """The batch size of each step of one trial: `base` (B₀) times `factor` (k) for each
    milestone passed, milestone i being passed once the examples consumed reach
    `thresholds[i]` × B₀ (`milestone_steps`). No thresholds: B₀ throughout."""

    base: int
    factor: int = 1
    thresholds: tuple[int, ...] = ()

    @classmethod
    def for_trial(
        cls, kind: str, base: int, decay: float, milestones: tuple[float, ...], horizon: int
    ) -> BatchSchedule:
        """`batch_step`'s schedule; any other kind keeps B₀."""
        if kind != "batch_step":
            return cls(base)
        check_milestones(milestones)
        return cls(base, batch_growth(decay), milestone_steps(milestones, horizon))

    @property
    def changes(self) -> bool:
        return bool(self.thresholds) and self.factor != 1

    @property
    def largest(self) -> int:
        return self.base * self.factor ** len(self.thresholds)

    def batch_size(self, examples: int) -> int:
        """The batch size of the step taken after `examples` examples were consumed."""
        passed = sum(examples >= m * self.base for m in self.thresholds)
        return self.base * self.factor**passed

    def examples_at(self, step: float) -> float:
        """The examples consumed by `step` steps: the sum of their batch sizes, a
        fractional step taking that part of its batch (B₀·step before a change, exactly)."""
        examples, done, size = 0, 0, self.base
        for m in self.thresholds:
            short = m * self.base - examples
            if short > 0:
                steps = -(-short // size)  # steps at this size until the milestone
                if done + steps >= step:
                    break
                examples, done = examples + steps * size, done + steps
            size *= self.factor
        return examples + (step - done) * size
