"""Branches from checkpoints of a base run, for the critical batch size along training
(Merrill et al. 2025, arXiv:2505.23971; the maths: tuner.theory.branched).

One base run at batch size B and lr η (constant schedule) is trained to the last
checkpoint plus Δ; its whole state (`TrainingRun.state_dict`) is copied at every
checkpoint step t, and it is evaluated at every t + Δ. From each copy, a branch at k·B
with the lr η·m(k) takes Δ/k steps, the same Δ examples the base run takes next, and is
evaluated. Δ is counted in base steps (`delta_steps`; Δ = delta_steps·B examples).

The branches continue the base run's state exactly (weights, optimiser state, the batch
stream's position, the torch RNG): a branch at k·B draws its first k·B examples from the
stream where the base run would draw its next k batches of B. Nothing is measured on
the way (no noise meter, no adaptive batch size, no stall rule): the evaluations only.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainables.loop import TrainingRun
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import Workload, build_workload


@dataclass(frozen=True)
class BranchPoint:
    """One checkpoint: the base run's eval loss Δ later, and each branch's after Δ."""

    step: int  # the checkpoint's base step t
    examples: int  # the examples the base run had consumed by t
    base_loss: float  # the base run's eval loss at t + delta_steps (nan: not finite)
    branch_loss: dict[int, float]  # k → the branch's eval loss after delta_steps/k steps


def branch_settings(settings: TrialSettings) -> TrialSettings:
    """The settings the base run and its branches train under: nothing measured or
    decided on the way (the noise meter, an adaptive batch size, the stall rule off)."""
    return dataclasses.replace(
        settings, noise_every=0, curvature_every=0, adaptive_rule="none", patience_steps=0
    )


def branch_problems(
    hp: Hyperparameters, checkpoints: Sequence[int], multipliers: Sequence[int], delta_steps: int
) -> list[str]:
    """What makes these inputs unusable, one line each (empty: usable)."""
    problems = []
    if hp.schedule != "constant":
        problems.append(f"the base run's lr schedule must be constant, got {hp.schedule!r}")
    if not checkpoints:
        problems.append("give at least one checkpoint step")
    elif min(checkpoints) < hp.warmup_steps:
        problems.append(
            f"checkpoint step {min(checkpoints)} is inside the base run's warmup "
            f"({hp.warmup_steps} steps): branch after it"
        )
    if not multipliers or min(multipliers) < 2:
        problems.append("give multipliers k >= 2")
    if delta_steps < 1:
        problems.append(f"delta_steps must be >= 1, got {delta_steps}")
    elif multipliers:
        bad = [k for k in multipliers if k >= 1 and delta_steps % k]
        if bad:
            problems.append(
                f"delta_steps {delta_steps} is not divisible by multiplier(s) "
                f"{', '.join(map(str, bad))}: each branch takes delta_steps/k steps"
            )
    return problems


def _finite(loss: float) -> float:
    return loss if math.isfinite(loss) else math.nan


def branch_losses(
    settings: TrialSettings,
    hp: Hyperparameters,
    checkpoints: Sequence[int],
    multipliers: Sequence[int],
    lr_multipliers: Sequence[float],
    delta_steps: int,
    device: torch.device | None = None,
    workload: Workload | None = None,
) -> list[BranchPoint]:
    """The base run's and each branch's eval loss Δ = delta_steps·B examples after each
    checkpoint step (module doc). `lr_multipliers[i]` scales the lr of the branch at
    `multipliers[i]`·B; a branch whose loss is not finite reports nan. Raises ValueError
    for unusable inputs (`branch_problems`)."""
    problems = branch_problems(hp, checkpoints, multipliers, delta_steps)
    if len(lr_multipliers) != len(multipliers):
        problems.append("give one lr multiplier per batch-size multiplier")
    if problems:
        raise ValueError("; ".join(problems))
    device = device or torch.device("cpu")
    settings = branch_settings(settings)
    steps = sorted(set(int(t) for t in checkpoints))
    workload = workload or build_workload(settings.workload, settings.workload_args, seed=hp.seed)
    # The base run, as run_trial starts it: the same seeds, batches and evaluations.
    base = TrainingRun(settings, hp, device, World(), workload)
    base.start()
    snapshots: dict[int, dict[str, Any]] = {}
    examples: dict[int, int] = {}
    base_loss: dict[int, float] = {}
    ends = {t + delta_steps: t for t in steps}
    if 0 in steps:
        snapshots[0], examples[0] = copy.deepcopy(base.state_dict(0)), base.examples
    for step in range(1, max(ends) + 1):
        base.train_step(step)
        if step in ends:
            base_loss[ends[step]] = _finite(float(base.evaluate(step)["loss"]))
        if step in snapshots or step not in steps:
            continue
        # deep copies: the state dict's tensors are the live weights and buffers
        snapshots[step], examples[step] = copy.deepcopy(base.state_dict(step)), base.examples
    del base
    points = []
    for t in steps:
        losses: dict[int, float] = {}
        for k, mult in zip(multipliers, lr_multipliers, strict=True):
            branch_hp = dataclasses.replace(
                hp, batch_size=k * hp.batch_size, lr=hp.lr * mult, warmup_steps=0
            )
            # The workload's model is shared: every run loads its own state into it.
            branch = TrainingRun(settings, branch_hp, device, World(), workload)
            branch.load_state_dict(snapshots[t])
            n_steps = delta_steps // k
            for step in range(t + 1, t + n_steps + 1):
                branch.train_step(step)
            if branch.batch_size != branch_hp.batch_size:  # its own size, not the stored B
                raise RuntimeError(f"branch at k={k} trained at batch size {branch.batch_size}")
            losses[int(k)] = _finite(float(branch.evaluate(t + n_steps)["loss"]))
        points.append(BranchPoint(t, examples[t], base_loss[t], losses))
    return points
