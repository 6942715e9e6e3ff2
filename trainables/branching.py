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

Each branch k runs at every lr factor f (lr η·m(k)·f), and the base run's continuation
at B is repeated at every f ≠ 1 too (k = 1: the reference searched over the same grid).
With `seeds` S > 1, every one of these runs is repeated from the same checkpoint with
S − 1 other batch streams (and torch RNGs, for dropout), seeded by (training seed,
checkpoint step, seed index): seed index 0 is the base run's own stream, and seed index
s is the same stream for the reference and for every branch, so that their losses are
paired. A stream dataset has no generator to reseed: one seed only there.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainables.errors import BranchInputError
from trainables.loop import TrainingRun
from trainables.parts.data_sources import is_stream
from trainables.parts.streams import seeded_generator
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import Workload, build_workload

# The random streams of a continuation from a checkpoint under seed index s ≥ 1; the
# trial's own streams (trainables.parts.streams) are numbered below 16.
BRANCH_BATCH_STREAM, BRANCH_TORCH_STREAM = 16, 17


@dataclass(frozen=True)
class BranchPoint:
    """One checkpoint: the base run's eval loss Δ later, and every run's after Δ."""

    step: int  # the checkpoint's base step t
    examples: int  # the examples the base run had consumed by t
    base_loss: float  # the base run's eval loss at t + delta_steps (nan: not finite)
    # (k, lr factor) → the eval loss after delta_steps/k steps, one per seed index; k = 1
    # is the continuation at B ((1, 1.0)'s seed 0 is the base run itself, base_loss)
    losses: dict[tuple[int, float], tuple[float, ...]]

    @property
    def branch_loss(self) -> dict[int, float]:
        """k ≥ 2 → the seed-0 loss at the law's own lr (factor 1), where it was run."""
        return {k: v[0] for (k, f), v in self.losses.items() if k > 1 and f == 1.0}


def branch_settings(settings: TrialSettings) -> TrialSettings:
    """The settings the base run and its branches train under: nothing measured or
    decided on the way (the noise meter, an adaptive batch size, the stall rule off)."""
    return dataclasses.replace(
        settings, noise_every=0, curvature_every=0, adaptive_rule="none", patience_steps=0
    )


def branch_problems(
    hp: Hyperparameters,
    checkpoints: Sequence[int],
    multipliers: Sequence[int],
    delta_steps: int,
    lr_factors: Sequence[float] = (1.0,),
    seeds: int = 1,
) -> list[str]:
    """What makes these inputs unusable, one line each (empty: usable)."""
    problems = []
    if not lr_factors or not all(math.isfinite(f) and f > 0 for f in lr_factors):
        problems.append(f"lr factors must be finite and > 0, got {list(lr_factors)}")
    if seeds < 1:
        problems.append(f"seeds must be >= 1, got {seeds}")
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


def workload_problems(workload: Workload, seeds: int) -> list[str]:
    """What makes this workload unusable for branching, one line each."""
    problems = []
    if workload.eval_data is None and workload.eval_loss is None:
        # Its reported loss is the training loss since the last evaluation: a branch's
        # over Δ/k steps at k·B and the base's over its own window are not comparable.
        problems.append(
            "the workload has no eval set (eval_data or eval_loss): branches would be "
            "compared on training losses over different windows"
        )
    if seeds > 1 and is_stream(workload.train_data):
        problems.append("seeds > 1 need a map-style training set (a stream has no seed)")
    return problems


def _finite(loss: float) -> float:
    return loss if math.isfinite(loss) else math.nan


def reseeded(state: dict[str, Any], seed: int, step: int, index: int) -> dict[str, Any]:
    """The checkpoint `state` with the batch stream and the torch RNG of seed index
    `index` (module doc); index 0 is the state as it is."""
    if index == 0:
        return state
    return {
        **state,
        "sampler": seeded_generator(seed, step, index, BRANCH_BATCH_STREAM).get_state(),
        "torch_rng": seeded_generator(seed, step, index, BRANCH_TORCH_STREAM).get_state(),
    }


def _continue(
    settings: TrialSettings,
    hp: Hyperparameters,
    device: torch.device,
    workload: Workload,
    state: dict[str, Any],
    n_steps: int,
) -> float:
    """The eval loss after `n_steps` steps from `state` under `hp` (nan: not finite)."""
    # The workload's model is shared: every run loads its own state into it.
    run = TrainingRun(settings, hp, device, World(), workload)
    # A copy: the optimiser adopts the state's tensors (momentum, Adam's moments and step)
    # as they are and updates them in place, which would change the checkpoint.
    step = run.load_state_dict(copy.deepcopy(state))
    for s in range(step + 1, step + n_steps + 1):
        run.train_step(s)
    if run.batch_size != hp.batch_size:  # its own size, not the stored B
        raise RuntimeError(f"a branch at batch size {hp.batch_size} trained at {run.batch_size}")
    return _finite(float(run.evaluate(step + n_steps)["loss"]))


def branch_losses(
    settings: TrialSettings,
    hp: Hyperparameters,
    checkpoints: Sequence[int],
    multipliers: Sequence[int],
    lr_multipliers: Sequence[float],
    delta_steps: int,
    device: torch.device | None = None,
    workload: Workload | None = None,
    lr_factors: Sequence[float] = (1.0,),
    seeds: int = 1,
) -> list[BranchPoint]:
    """The base run's and every run's eval loss Δ = delta_steps·B examples after each
    checkpoint step (module doc). `lr_multipliers[i]` scales the lr of the branch at
    `multipliers[i]`·B, each lr factor scales it again; a run whose loss is not finite
    reports nan. Raises BranchInputError (a ValueError) for unusable inputs
    (`branch_problems`, `workload_problems`), before any training."""
    problems = branch_problems(hp, checkpoints, multipliers, delta_steps, lr_factors, seeds)
    if len(lr_multipliers) != len(multipliers):
        problems.append("give one lr multiplier per batch-size multiplier")
    workload = workload or build_workload(settings.workload, settings.workload_args, seed=hp.seed)
    problems += workload_problems(workload, seeds)
    if problems:
        raise BranchInputError(problems)
    device = device or torch.device("cpu")
    settings = branch_settings(settings)
    steps = sorted(set(int(t) for t in checkpoints))
    factors = sorted(set(float(f) for f in lr_factors))
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
    runs = [(1, 1.0), *zip((int(k) for k in multipliers), lr_multipliers, strict=True)]
    points = []
    for t in steps:
        losses: dict[tuple[int, float], list[float]] = {}
        for index in range(seeds):
            state = reseeded(snapshots[t], hp.seed, t, index)
            for k, mult in runs:
                for f in factors:
                    if (k, f, index) == (1, 1.0, 0):
                        loss = base_loss[t]  # the base run's own continuation
                    else:
                        run_hp = dataclasses.replace(
                            hp, batch_size=k * hp.batch_size, lr=hp.lr * mult * f, warmup_steps=0
                        )
                        loss = _continue(
                            settings, run_hp, device, workload, state, delta_steps // k
                        )
                    losses.setdefault((k, f), []).append(loss)
        points.append(
            BranchPoint(t, examples[t], base_loss[t], {r: tuple(v) for r, v in losses.items()})
        )
    return points
