"""What a trial needs to know besides its hyperparameters, as plain picklable data.

The driver builds these from the spec (tuner.runtime.runner); the workers never see the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainables import keys
from trainables.parts.judge import Target


@dataclass(frozen=True)
class TrialSettings:
    """The sweep-wide settings every trial of a sweep shares."""

    workload: str
    workload_args: dict[str, Any] = field(default_factory=dict)
    target_metric: str = "loss"
    target_value: float = 0.0
    target_mode: str = "min"  # min: lower is better; max: higher is better
    max_steps: int | None = None
    max_examples: int | None = None
    eval_every: int = 20
    optimizer: str = "sgd"
    noise_every: int = 4
    micro_batches: int = 2
    noise_ema: float = 0.99
    curvature_every: int = 0  # GᵀHG, tr(HΣ) (B_noise, ε_max) every n steps; 0 = off
    precision: str = "fp32"
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    divergence_factor: float = 10.0  # eval loss above this multiple of the initial one diverged
    # Stall rule (trainables.parts.judge): no record in this many steps (None: a quarter of the
    # trial's step budget; 0: off), a record gaining min_delta of the way to the target.
    stall_patience_steps: int | None = None
    stall_min_delta: float = 0.01
    # Evaluations between checkpoints of the trial's state (0 = none): a trial restarted
    # after a failure (max_failures, or `noisetune resume`) continues from the latest.
    checkpoint_every: int = 5
    # The run's directory or URI; multi-worker (Ray Train) trials keep their own state
    # under <run_dir>/train.
    run_dir: str = ""

    @property
    def target(self) -> Target:
        return Target(self.target_metric, self.target_value, self.target_mode)

    def patience_steps_for(self, batch_size: int) -> int:
        """The stall rule's patience at this batch size (0: no stall rule)."""
        if self.stall_patience_steps is not None:
            return self.stall_patience_steps
        return max(1, self.max_steps_for(batch_size) // 4)

    def max_steps_for(self, batch_size: int) -> int:
        """The step budget of a trial at this batch size (max_steps and max_examples)."""
        limits = []
        if self.max_steps is not None:
            limits.append(self.max_steps)
        if self.max_examples is not None:
            limits.append(self.max_examples // batch_size)
        if not limits:
            raise ValueError("a budget needs max_steps or max_examples")
        return max(1, min(limits))


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the joint search space."""

    batch_size: int
    lr: float
    momentum: float
    warmup_steps: int
    seed: int = 0  # the training seed: batches, the torch RNG, the model's initialisation

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Hyperparameters:
        return cls(
            batch_size=int(config[keys.BATCH_SIZE]),
            lr=float(config[keys.LR]),
            momentum=float(config.get(keys.MOMENTUM, 0.0)),
            warmup_steps=int(config.get(keys.WARMUP_STEPS, 0)),
            seed=int(config.get(keys.SEED, 0)),
        )
