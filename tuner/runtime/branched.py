"""`noisetune branch`: the critical batch size along training, by branching (Merrill et al.
2025; the maths: tuner.theory.branched, the training: trainables.branching).

Runs in this process (no Ray): one base run and a few short branches, sequential, on
this machine's device. Writes branched.parquet (one row per checkpoint: every (k, lr
factor)'s mean loss over the seeds, the factor that won at each k, B_crit), branched.json
(the inputs, the law, the recommended batch-size schedule) and b_crit_vs_progress.png
into the output directory, each through a temporary name renamed over it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from trainables.errors import BranchInputError
from trainables.settings import Hyperparameters
from tuner.config.spec import Spec
from tuner.config.trial_settings import trial_settings
from tuner.theory import LAW_OF_OPTIMIZER
from tuner.theory.branched import (
    BranchedBCrit,
    best_lr_factor,
    branched_b_crit,
    lr_multiplier,
    paired_gap,
    recommended_schedule,
    seed_mean,
)

if TYPE_CHECKING:
    from trainables.branching import BranchPoint

PARQUET, JSON, FIGURE = "branched.parquet", "branched.json", "b_crit_vs_progress.png"
INTERVAL_NOTE = (
    "interval: [b_crit, the next batch size tried that did not keep up); it covers the grid "
    "of multipliers tried, not the noise between runs. gap_k ± gap_k_se: the mean and "
    "standard error over the seeds of the paired relative gap L_k/L_ref - 1 at the chosen "
    "lr factors; it covers the batch stream after the checkpoint (seeds drawn from the "
    "same state), not the base run before it (rerun with --seed) nor the choice of factor"
)


@dataclass(frozen=True)
class BranchedResult:
    table: pd.DataFrame
    schedule: list[tuple[float, float]]
    files: list[Path]


def default_delta_steps(budget_steps: int, multipliers: Sequence[int]) -> int:
    """The smallest multiple of lcm(multipliers) that is at least 5% of the budget."""
    step = math.lcm(*multipliers)
    return step * max(1, math.ceil(0.05 * budget_steps / step))


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def check_inputs(
    spec: Spec,
    base: Hyperparameters,
    checkpoints: Sequence[int],
    multipliers: Sequence[int],
    delta_steps: int,
    tolerance: float,
    lr_factors: Sequence[float] = (1.0,),
    seeds: int = 1,
) -> list[str]:
    from trainables.branching import branch_problems

    problems = branch_problems(base, checkpoints, multipliers, delta_steps, lr_factors, seeds)
    if spec.optimizer not in LAW_OF_OPTIMIZER:
        problems.append(f"optimizer {spec.optimizer!r} has no lr law to scale branches by")
    if not tolerance >= 0:
        problems.append(f"tolerance must be >= 0, got {tolerance}")
    if base.batch_size < 1 or not base.lr > 0:
        problems.append("the base batch size must be >= 1 and its lr > 0")
    return problems


def _name(f: float) -> str:
    return f"{f:g}"


def point_row(
    point: BranchPoint,
    ks: Sequence[int],
    factors: Sequence[float],
    batch_size: int,
    budget: int,
    tolerance: float,
) -> tuple[dict[str, Any], BranchedBCrit]:
    """One checkpoint's row of branched.parquet and its B_crit: each (k, f)'s mean loss
    over the seeds, the best factor at each k (k = 1: the reference), the paired gaps."""
    row: dict[str, Any] = {
        "step": point.step,
        "examples": point.examples,
        "progress": point.step / budget,
        "base_loss": point.base_loss,
    }
    best: dict[int, tuple[float, float]] = {}
    for k in (1, *ks):
        means = {f: seed_mean(point.losses[(k, f)]) for f in factors}
        best[k] = best_lr_factor(means)
        if k > 1:
            row[f"loss_{k}"] = best[k][1]
        row[f"lr_factor_{k}"] = best[k][0]
        row.update({f"loss_{k}_lr{_name(f)}": v for f, v in means.items()})
    ref_factor, reference = best[1]
    row["reference_loss"] = reference
    for k in ks:
        f = best[k][0]
        if math.isfinite(f) and math.isfinite(ref_factor):
            gap = paired_gap(point.losses[(k, f)], point.losses[(1, ref_factor)])
        else:
            gap = (math.nan, math.nan)
        row[f"gap_{k}"], row[f"gap_{k}_se"] = gap
    b = branched_b_crit(
        batch_size,
        row["progress"],
        reference,
        {float(k): best[k][1] for k in ks},
        tolerance,
    )
    row.update(
        b_crit=b.b_crit, interval_lo=b.interval[0], interval_hi=b.interval[1], capped=b.capped
    )
    return row, b


def run_branched(
    spec: Spec,
    base: Hyperparameters,
    checkpoints: Sequence[int],
    multipliers: Sequence[int],
    delta_steps: int,
    tolerance: float,
    out_dir: Path,
    device: str = "auto",
    lr_factors: Sequence[float] = (1.0,),
    seeds: int = 1,
) -> BranchedResult:
    """Branch from `checkpoints` (base steps) at every lr factor and seed, compute B_crit
    at each and write the three files into `out_dir`. Raises BranchInputError before
    training on unusable inputs: the arguments here, the workload (one without an eval
    set) where `branch_losses` builds it."""
    problems = check_inputs(
        spec, base, checkpoints, multipliers, delta_steps, tolerance, lr_factors, seeds
    )
    if problems:
        raise BranchInputError(problems)
    from trainables.branching import branch_losses

    law = LAW_OF_OPTIMIZER[spec.optimizer]
    ks = sorted(set(int(k) for k in multipliers))
    factors = sorted(set(float(f) for f in lr_factors))
    settings = trial_settings(spec, str(out_dir))
    budget = settings.max_steps_for(base.batch_size)
    points = branch_losses(
        settings,
        base,
        checkpoints,
        ks,
        [lr_multiplier(law, k) for k in ks],
        delta_steps,
        device=_device(device),
        lr_factors=factors,
        seeds=seeds,
    )
    measured: list[BranchedBCrit] = []
    rows = []
    for point in points:
        row, b = point_row(point, ks, factors, base.batch_size, budget, tolerance)
        rows.append(row)
        measured.append(b)
    table = pd.DataFrame(rows)
    schedule = recommended_schedule(measured, base.batch_size)
    summary = {
        "spec": spec.name,
        "workload": spec.workload,
        "optimizer": spec.optimizer,
        "law": law,
        "lr_multipliers": {str(k): lr_multiplier(law, k) for k in ks},
        "lr_factors": factors,
        "seeds": seeds,
        "base": {
            "batch_size": base.batch_size,
            "lr": base.lr,
            "momentum": base.momentum,
            "seed": base.seed,
            "schedule": "constant",
        },
        "budget_steps": budget,
        "checkpoints": sorted(set(int(t) for t in checkpoints)),
        "multipliers": ks,
        "delta_steps": delta_steps,
        "delta_examples": delta_steps * base.batch_size,
        "tolerance": tolerance,
        "recommended_schedule": [{"progress": p, "batch_size": b} for p, b in schedule],
        "note": INTERVAL_NOTE,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / PARQUET, out_dir / JSON, out_dir / FIGURE]
    tmp = [path.with_name(f".{path.name}.tmp") for path in files]
    try:
        table.to_parquet(tmp[0], index=False)
        tmp[1].write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
        _figure(table, base.batch_size, spec.name).savefig(tmp[2], format="png", dpi=120)
        for src, dst in zip(tmp, files, strict=True):
            os.replace(src, dst)
    finally:
        for path in tmp:
            path.unlink(missing_ok=True)
    return BranchedResult(table, schedule, files)


def _figure(table: pd.DataFrame, base_batch_size: int, name: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x, lo = table["progress"].to_numpy(float), table["b_crit"].to_numpy(float)
    hi = table["interval_hi"].to_numpy(float)
    top = max(float(hi[pd.notna(hi) & (hi < float("inf"))].max(initial=lo.max())), lo.max())
    upper = [h - b if math.isfinite(h) else 0.0 for h, b in zip(hi, lo, strict=True)]
    ax.errorbar(x, lo, yerr=[[0.0] * len(lo), upper], fmt="o-", capsize=3,
                label="branched B_crit [kept up, first that did not)")  # fmt: skip
    capped = table["capped"].to_numpy(bool)
    if capped.any():
        ax.scatter(x[capped], lo[capped], marker="^", s=60, label="capped (every k kept up)")
    ax.axhline(base_batch_size, color="grey", ls=":", label=f"base B = {base_batch_size}")
    ax.set_yscale("log")
    ax.set_ylim(base_batch_size / 1.5, top * 1.5)
    ax.set_xlabel("progress (fraction of the step budget at the base B)")
    ax.set_ylabel("critical batch size")
    ax.set_title(f"{name}: B_crit along training (branching)", fontsize=9)
    ax.legend(fontsize=7.5)
    return fig
