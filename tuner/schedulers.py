"""Trial schedulers: none (FIFO), ASHA as the generic baseline, eps_opt pruning."""

from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from trainables import keys
from tuner.spec import Spec


def smallest_batch_size(spec: Spec) -> int:
    dim = spec.space.dimensions()[keys.BATCH_SIZE]
    return int(min(dim.points()))  # a range's points() are its bounds


def make_scheduler(spec: Spec, run_dir: Path) -> TrialScheduler | None:
    """The scheduler `pruning.kind` asks for; None means Tune's FIFO (no pruning)."""
    kind = spec.pruning.kind
    if kind == "none":
        return None
    if kind == "asha":
        # ASHA on our own monotonic step counter, not training_iteration (DESIGN.md §4).
        return ASHAScheduler(
            time_attr=keys.STEP,
            metric=keys.TARGET_VALUE,
            mode="min",
            max_t=spec.budget.max_steps_for(smallest_batch_size(spec)),
            grace_period=max(1, spec.pruning.grace_steps),
            reduction_factor=4,
        )
    raise NotImplementedError(f"pruning.kind {kind!r} is not available yet")
