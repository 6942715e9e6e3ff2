"""Does an adaptive batch size follow the noise scale it measures? (issue 15, part 2)

    python bench/adaptive_batch.py --spec bench/specs/adaptive_teacher_student.yaml --seeds 3

For each training seed, the real loop (`trainables.loop.run_trial`, no Ray) trains the
spec's one configuration with its `adaptive_batch` rule. Printed per seed: the batch size
and the trial's own smoothed B_simple at the first and last report, and over the second
half of the reports (or every one after the first, `--all-reports`; those below the
cap) the median and range of B / (multiple · B_simple) for `noise_scale`,
or B / (B_simple(1/η² − 1)) for `norm_test` (where the norm test settles): 1 is a batch
size that follows the measured noise scale exactly. Where the workload reports the exact
B_simple (`true_b_simple`, linear regression), the same ratio against it too.
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

TRUE_B_SIMPLE = f"true_{keys.B_SIMPLE}"


def settles_at(spec: Spec) -> float:
    """The batch size the rule asks for, per unit of B_simple."""
    rule = spec.adaptive_batch
    if rule.rule == "norm_test":
        return 1 / rule.eta**2 - 1
    return rule.multiple


def reports(spec: Spec, config: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    told = trial_settings(spec, Path("."))
    hp = Hyperparameters.from_config({**config, keys.SEED: seed}, told.fixed_hyperparameters)
    rows: list[dict[str, Any]] = []
    run_trial(told, hp, rows.append)
    return rows


def ratios(
    rows: list[dict[str, Any]], column: str, per_b_simple: float, cap: int, skip: int
) -> list[float]:
    """B / (per_b_simple · column) at each report after the first `skip`, finite ones; a
    report at the cap is left out (the rule cannot follow there)."""
    kept = [r for r in rows[skip:] if column in r and r[keys.BATCH_SIZE_NOW] < cap]
    out = [r[keys.BATCH_SIZE_NOW] / (per_b_simple * r[column]) for r in kept]
    return [x for x in out if math.isfinite(x) and x > 0]


def span(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--all-reports",
        action="store_true",
        help="every report after the first instead of the second half (a B that hits the "
        "cap early)",
    )
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.spec).read_text())
    base["search"] = {**base.get("search", {}), "algorithm": "grid"}
    spec = parse_spec(base)
    (config,) = draw_candidates(spec)
    per = settles_at(spec)
    rule = spec.adaptive_batch
    cap = int(rule.max_batch_size or 0)
    print(
        f"{spec.name}: rule {rule.rule}, B0 {config[keys.BATCH_SIZE]}, lr {config[keys.LR]}, "
        f"asks for {per:.2f} x B_simple; "
        f"{'every report after the first' if args.all_reports else 'second half of the reports'}"
    )
    for seed in range(args.seeds):
        rows = reports(spec, config, seed)
        skip = 1 if args.all_reports else len(rows) // 2
        first, last = rows[1], rows[-1]
        line = (
            f"  seed {seed}: B {first[keys.BATCH_SIZE_NOW]} -> {last[keys.BATCH_SIZE_NOW]}, "
            f"measured B_simple {first[keys.B_SIMPLE]:.0f} -> {last[keys.B_SIMPLE]:.0f}, "
            f"B / asked {span(ratios(rows, keys.B_SIMPLE, per, cap, skip))}"
        )
        if TRUE_B_SIMPLE in last:
            line += (
                f"; exact B_simple {first[TRUE_B_SIMPLE]:.0f} -> {last[TRUE_B_SIMPLE]:.0f}, "
                f"B / asked on it {span(ratios(rows, TRUE_B_SIMPLE, per, cap, skip))}"
            )
        at_cap = sum(r[keys.BATCH_SIZE_NOW] >= cap for r in rows)
        print(
            line + f", {last[keys.STEP]} steps ({at_cap} of {len(rows)} reports at the cap "
            f"{cap}), {last[keys.TRIAL_STATUS]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
