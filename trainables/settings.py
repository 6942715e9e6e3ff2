"""What a trial needs to know besides its hyperparameters, as plain picklable data.

The driver builds these from the spec (tuner.config.trial_settings); the workers never see
the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables import keys
from tuner.theory import CROSSING_MODES, target_met


@dataclass(frozen=True)
class Target:
    """The sweep's target: `metric` must reach `value`, falling to it (min) or rising (max)."""

    metric: str
    value: float
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in CROSSING_MODES:
            raise ValueError(f"target mode must be one of {CROSSING_MODES}, got {self.mode!r}")

    @property
    def relation(self) -> str:
        return "<=" if self.mode == "min" else ">="

    def __str__(self) -> str:
        return f"{self.metric} {self.relation} {self.value:g}"

    def met(self, value: float) -> bool:
        return bool(target_met(value, self.value, self.mode))

    def gain(self, new: float, old: float) -> float:
        """How much better `new` is than `old` (negative: worse)."""
        return old - new if self.mode == "min" else new - old


def step_budget(batch_size: int, max_steps: int | None, max_examples: int | None) -> int:
    """The step limit at this batch size: the tighter of max_steps and
    max_examples // batch_size over the limits given, at least 1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limits = [] if max_steps is None else [max_steps]
    if max_examples is not None:
        limits.append(max_examples // batch_size)
    if not limits:
        raise ValueError("a budget needs max_steps or max_examples")
    return max(1, min(limits))


# step and batch_step (trainables.parts.schedule): Smith et al.'s factor (the lr ÷ 5, or the
# batch size × 5) at the classic half and three quarters of the horizon.
DEFAULT_DECAY = 0.2
DEFAULT_MILESTONES = (0.5, 0.75)


@dataclass(frozen=True)
class TrialSettings:
    """The sweep-wide settings every trial of a sweep shares, as the spec gives them
    (tuner.config.trial_settings builds them; their defaults are the spec's)."""

    workload: str
    workload_args: dict[str, Any]
    target_metric: str
    target_value: float
    target_mode: str  # min: lower is better; max: higher is better
    max_steps: int | None
    max_examples: int | None
    eval_every: int
    # The eval set: at most this many of its examples (one fixed subset; None: all), in
    # forward passes of eval_batch_size examples (trainables.parts.evaluator).
    eval_max_examples: int | None
    eval_batch_size: int
    optimizer: str
    noise_every: int
    noise_method: str  # auto | per_example | micro_batch (trainables.steps)
    per_example_rows: int  # per_example: examples of a measured step whose norms are taken
    micro_batches: int
    noise_ema: float
    curvature_every: int  # GᵀHG, tr(HΣ) (B_noise, ε_max) every n steps; 0 = off
    precision: str
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    # How training batches are fetched (trainables.parts.data_sources): a DataLoader with
    # this many worker processes (0: in the trial's process), pinned memory, prefetching.
    loader_workers: int
    pin_memory: bool
    prefetch_factor: int
    # The most examples one device computes at once; a larger share of a batch is
    # accumulated over micro-batches (one optimiser step per batch). None: no limit.
    max_micro_batch: int | None
    # Stall rule (trainables.parts.judge): no record in this many steps (None: a quarter of
    # the trial's step budget; 0: off), a record gaining min_delta of the way to the target.
    patience_steps: int | None
    min_delta: float
    # Evaluations between checkpoints of the trial's state (0 = none): a trial restarted
    # after a failure (max_failures, or `noisetune resume`) continues from the latest.
    checkpoint_every: int
    # The run's directory or URI; multi-worker (Ray Train) trials keep their own state
    # under <run_dir>/train.
    run_dir: str
    # The recipe's values the space does not search (Spec.fixed_hyperparameters), and the
    # lr schedule's parameters (trainables.parts.schedule).
    fixed_hyperparameters: dict[str, Any]
    final_lr_fraction: float
    horizon_steps: int | None
    divergence_factor: float = 10.0  # eval loss above this multiple of the initial one diverged
    # step and batch_step (trainables.parts.schedule): the lr's factor at each milestone (the
    # batch size's: its inverse), the milestones as fractions of the horizon.
    decay_factor: float = DEFAULT_DECAY
    milestones: tuple[float, ...] = DEFAULT_MILESTONES
    # adaptive_batch (trainables.parts.adaptive_batch): the rule growing the batch size from
    # the measured noise (none: off; norm_test, noise_scale), the norm test's η, the noise-
    # scale rule's multiple of B_simple, and the largest batch size (required with a rule).
    adaptive_rule: str = "none"
    adaptive_eta: float = 0.7
    adaptive_multiple: float = 1.0
    adaptive_max_batch_size: int | None = None
    adaptive_min_measurements: int = 4  # no decision before this many measured steps
    # sync (trainables.steps.LocalSGD): a multi-worker trial's parameters averaged every
    # sync_period steps (1: gradients all-reduced every step, DDP), after sync_warmup_steps
    # steps of all-reduced gradients.
    sync_period: int = 1
    sync_warmup_steps: int = 0

    @property
    def target(self) -> Target:
        return Target(self.target_metric, self.target_value, self.target_mode)

    def patience_steps_for(self, batch_size: int) -> int:
        """The stall rule's patience at this batch size (0: no stall rule)."""
        if self.patience_steps is not None:
            return self.patience_steps
        return max(1, self.max_steps_for(batch_size) // 4)

    def max_steps_for(self, batch_size: int) -> int:
        """The step budget of a trial at this batch size (`step_budget`)."""
        return step_budget(batch_size, self.max_steps, self.max_examples)


DEFAULT_WEIGHT_DECAY = 0.0  # none unless the spec asks
DEFAULT_BETA2 = 0.999  # AdamW's second-moment decay unless the spec gives one
DEFAULT_SCHEDULE = "constant"


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the joint search space."""

    batch_size: int
    lr: float
    momentum: float
    warmup_steps: int
    seed: int = 0  # the training seed: batches, the torch RNG, the model's initialisation
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    beta2: float = DEFAULT_BETA2  # AdamW only
    schedule: str = DEFAULT_SCHEDULE  # the lr after warmup (trainables.parts.schedule)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], fixed: Mapping[str, Any] | None = None
    ) -> Hyperparameters:
        """A trial's config (the searched values), completed by the sweep's `fixed`
        values (TrialSettings.fixed_hyperparameters)."""
        values = {**(fixed or {}), **config}
        return cls(
            batch_size=int(values[keys.BATCH_SIZE]),
            lr=float(values[keys.LR]),
            momentum=float(values.get(keys.MOMENTUM, 0.0)),
            warmup_steps=int(values.get(keys.WARMUP_STEPS, 0)),
            seed=int(values.get(keys.SEED, 0)),
            weight_decay=float(values.get(keys.WEIGHT_DECAY, DEFAULT_WEIGHT_DECAY)),
            beta2=float(values.get(keys.BETA2, DEFAULT_BETA2)),
            schedule=str(values.get(keys.SCHEDULE, DEFAULT_SCHEDULE)),
        )
