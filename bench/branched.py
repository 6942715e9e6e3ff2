"""Branched B_crit along training (`noisetune branch`) over training seeds, and B_simple.

Runs `tuner.runtime.branched.run_branched` (what `noisetune branch` runs) once per
training seed (--train-seeds: the base run's seed, hence its batch stream), and prints
one markdown table: per checkpoint, the branched B_crit of each seed ("≥" where every
multiplier kept up), and B_simple = tr Σ/|G|² of the base run at that step (mean over
the seeds), from a plain run_trial of the same base with the noise meter on (and the
workload's exact `true_b_simple` where it reports one, as linear_regression does).
A seed "rises" when its B_crit at the last checkpoint exceeds the one at the first.

    python bench/branched.py bench/specs/branched_linreg.yaml --batch-size 8 --lr 0.05 \\
        --at 0.02,0.1,0.3,0.7 --multipliers 2,4,8,16,32,64,128,256 --delta-steps 256 \\
        --lr-factors 0.25,0.5,1 --train-seeds 0,1,2,3 --b-simple
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import keys
from trainables.loop import run_trial
from trainables.settings import Hyperparameters, TrialSettings
from tuner.config.spec import Spec, load_spec
from tuner.config.trial_settings import trial_settings
from tuner.runtime.branched import default_delta_steps, run_branched


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def b_simple_at(settings: TrialSettings, hp: Hyperparameters, steps: list[int]) -> dict[str, Any]:
    """B_simple of the base run at `steps`: the meter's (EMA over measured steps) and the
    workload's exact one where it reports `true_b_simple` (nan elsewhere)."""
    g = math.gcd(*steps) if all(steps) else 1
    unreachable = math.inf if settings.target_mode == "max" else -math.inf
    measured = dataclasses.replace(
        settings,
        eval_every=max(1, g),
        noise_every=1,
        max_steps=max(steps),
        max_examples=None,
        patience_steps=0,
        target_value=unreachable,
    )
    reports: list[dict[str, Any]] = []
    run_trial(measured, hp, reports.append)
    by_step = {int(r[keys.STEP]): r for r in reports}
    return {
        "meter": [float(by_step[t].get(keys.B_SIMPLE, math.nan)) for t in steps],
        "exact": [float(by_step[t].get(f"true_{keys.B_SIMPLE}", math.nan)) for t in steps],
    }


def run(spec: Spec, args: argparse.Namespace) -> pd.DataFrame:
    fixed = spec.fixed_hyperparameters()
    settings = trial_settings(spec, "")
    budget = settings.max_steps_for(args.batch_size)
    ks = _numbers(args.multipliers, int)
    delta = args.delta_steps or default_delta_steps(budget, ks)
    checkpoints = sorted({round(f * budget) for f in _numbers(args.at, float)})
    columns: dict[str, list[Any]] = {"progress": [t / budget for t in checkpoints]}
    columns["step"] = checkpoints
    meter: list[list[float]] = []
    exact: list[list[float]] = []
    for seed in _numbers(args.train_seeds, int):
        config = {"batch_size": args.batch_size, "lr": args.lr, "seed": seed}
        base = dataclasses.replace(
            Hyperparameters.from_config({**config, "schedule": "constant"}, fixed),
            warmup_steps=0,
            schedule="constant",
        )
        with tempfile.TemporaryDirectory(prefix="branched-") as out:
            result = run_branched(
                spec,
                base,
                checkpoints,
                ks,
                delta,
                args.tolerance,
                Path(out),
                "cpu",
                _numbers(args.lr_factors, float),
                args.seeds,
            )
        table = result.table
        columns[f"seed {seed}"] = [
            (">= " if r["capped"] else "") + f"{r['b_crit']:g}" for r in table.to_dict("records")
        ]
        columns[f"factors {seed}"] = [
            " ".join(f"{r[f'lr_factor_{k}']:g}" for k in [1, *sorted(set(ks))])
            for r in table.to_dict("records")
        ]
        if args.b_simple:
            measured = b_simple_at(settings, base, checkpoints)
            meter.append(measured["meter"])
            exact.append(measured["exact"])
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    if meter:
        columns["B_simple (meter)"] = [_mean(v) for v in zip(*meter, strict=True)]
        columns["B_simple (exact)"] = [_mean(v) for v in zip(*exact, strict=True)]
    return pd.DataFrame(columns)


def _mean(values: tuple[float, ...]) -> str:
    """The mean over the seeds whose value is finite, and how many those are (the
    meter's |G|² estimate can fall below 0 near the loss floor: B_simple is nan there)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "nan"
    return f"{statistics.fmean(finite):.3g} ({len(finite)}/{len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--at", default="0.1,0.3,0.5,0.7")
    parser.add_argument("--multipliers", default="2,4,8,16")
    parser.add_argument("--delta-steps", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--lr-factors", default="1")
    parser.add_argument("--seeds", type=int, default=1, help="batch streams per checkpoint")
    parser.add_argument("--train-seeds", default="0,1,2,3", help="the base runs' seeds")
    parser.add_argument("--b-simple", action="store_true", help="measure B_simple too")
    args = parser.parse_args()
    table = run(load_spec(Path(args.spec)), args)
    print(table.to_markdown(index=False))
    seeds = [c for c in table.columns if c.startswith("seed ")]
    rises = [c for c in seeds if _value(table[c].iloc[-1]) > _value(table[c].iloc[0])]
    print(f"\nB_crit rises (last checkpoint > first) in {len(rises)} of {len(seeds)} seeds")


def _value(cell: str) -> float:
    return float(cell.removeprefix(">= "))


if __name__ == "__main__":
    main()
