"""Raise the batch size instead of decaying the lr (Smith et al. 2018), side by side.

    python bench/batch_schedules.py --spec bench/specs/batch_schedule_teacher_student.yaml --seeds 5

For every configuration of the spec's grid and every training seed, the real training
loop (`trainables.loop.run_trial`, no Ray) runs twice, identical but for the schedule:
`step` (the lr × decay_factor at each milestone) and `batch_step` (the lr kept, the
batch size × 1/decay_factor once the examples reach the same milestones). Printed per
configuration: the median, over the seeds where both reached the target, of batch_step's
steps and examples to it over step's (interpolated), and how many of each reached it;
then the median over configurations. Smith et al.'s claim: about the same examples in
fewer steps, where the grown batch stays below the critical batch size (B₀·k^n ≲
B_crit); above it the steps saved shrink and the examples grow.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import keys
from trainables.loop import run_trial
from trainables.settings import Hyperparameters
from tuner.config.spec import Spec, parse_spec
from tuner.config.trial_settings import trial_settings
from tuner.strategy.candidates import draw_candidates

KINDS = ("step", "batch_step")


def to_target(spec: Spec, config: dict[str, Any], kind: str, seed: int) -> tuple[float, float]:
    """(steps, examples) to the target, interpolated; inf where it was not reached."""
    told = trial_settings(spec, Path("."))
    hp = Hyperparameters.from_config(
        {**config, keys.SCHEDULE: kind, keys.SEED: seed}, told.fixed_hyperparameters
    )
    rows: list[dict[str, Any]] = []
    run_trial(told, hp, rows.append)
    last = rows[-1]
    if last[keys.TRIAL_STATUS] != keys.REACHED:
        return float("inf"), float("inf")
    return float(last[keys.STEPS_TO_TARGET_INTERP]), float(last[keys.EXAMPLES_TO_TARGET_INTERP])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.spec).read_text())
    base["search"] = {**base.get("search", {}), "algorithm": "grid"}
    base.setdefault("schedule", {})["kind"] = "step"
    spec = parse_spec(base)
    schedule = spec.schedule
    print(
        f"{spec.name}: decay_factor {schedule.decay_factor}, milestones "
        f"{list(schedule.milestones)}, {args.seeds} seeds; batch_step / step, medians"
    )
    step_ratios, example_ratios = [], []
    for config in draw_candidates(spec):
        runs = {k: [to_target(spec, config, k, s) for s in range(args.seeds)] for k in KINDS}
        # Ratios over the seeds where both reached the target (the counts say how many).
        pairs = [
            (a, b)
            for a, b in zip(runs["step"], runs["batch_step"], strict=True)
            if math.isfinite(a[0]) and math.isfinite(b[0])
        ]
        reached = {k: sum(math.isfinite(r[0]) for r in v) for k, v in runs.items()}
        if not pairs:
            print(f"  B0 {config[keys.BATCH_SIZE]:>5} lr {config[keys.LR]:<8g} {reached}")
            continue
        steps_m = statistics.median(b[0] / a[0] for a, b in pairs)
        examples_m = statistics.median(b[1] / a[1] for a, b in pairs)
        step_ratios.append(steps_m)
        example_ratios.append(examples_m)
        print(
            f"  B0 {config[keys.BATCH_SIZE]:>5} lr {config[keys.LR]:<8g} steps {steps_m:.2f} "
            f"examples {examples_m:.2f}  reached step {reached['step']}/{args.seeds}, "
            f"batch_step {reached['batch_step']}/{args.seeds}",
            flush=True,
        )
    if not step_ratios:
        print("no configuration reached the target under both schedules on any seed")
        return
    print(
        f"median over configurations: steps {statistics.median(step_ratios):.2f}, "
        f"examples {statistics.median(example_ratios):.2f}"
    )


if __name__ == "__main__":
    main()
