"""Prediction accuracy: ε_opt(B) and B_crit against what the grid found.

    python bench/prediction_accuracy.py --spec bench/specs/linear_regression.yaml
    python bench/prediction_accuracy.py --spec bench/specs/teacher_mlp.yaml

From the spec's recorded grid (`bench/curves.py`): the best effective lr ε/(1 − m) and
the fewest steps to the target per batch size, and B_crit fitted to those steps
(S = S_min(1 + B_crit/B), McCandlish et al. 2018 eq. 2.11). The best configuration of
each batch size is then trained again with curvature measured every `--curvature-every`
steps, and its B_simple, B_noise and ε_max at the target are pooled across batch sizes
as the eps_opt scheduler pools them (`theory.pooled_noise_scale`). Printed: per batch
size the predicted ε_opt(B) = ε_max/(1 + B_noise/B) over the grid's best lr (measured:
both measured; calibrated: B_noise measured, ε_max fitted; fitted: both fitted to the
best lrs, in-sample), and B_crit beside B_simple and B_noise (McCandlish et al. 2018,
Table 1 style). The grid's lrs are spaced by 2x, so a ratio within 0.7–1.4 is exact to
the grid's resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curves import CONFIG_COLUMNS, load_or_record

from trainables import keys
from tuner import theory
from tuner.config.spec import Spec, parse_spec


def best_per_batch(frame: Any) -> Any:
    """The grid's fastest configuration to the target at each batch size."""
    last = frame.groupby(CONFIG_COLUMNS, sort=False).tail(1)
    reached = last[last[keys.TRIAL_STATUS] == keys.REACHED]
    best = reached.sort_values([keys.BATCH_SIZE, keys.STEPS_TO_TARGET, keys.LR])
    return best.groupby(keys.BATCH_SIZE).head(1).reset_index(drop=True)


def _measure(job: tuple[Spec, dict[str, Any], int]) -> dict[str, Any]:
    import torch

    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters
    from tuner.config.trial_settings import trial_settings

    torch.set_num_threads(1)
    spec, config, curvature_every = job
    settings = dataclasses.replace(trial_settings(spec, Path(".")), curvature_every=curvature_every)
    rows: list[dict[str, Any]] = []
    run_trial(settings, Hyperparameters.from_config(config), rows.append)
    return rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--curvature-every", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.spec).read_text())
    spec = parse_spec(base)
    best = best_per_batch(load_or_record(spec, args.processes))
    configs = [{c: row[c] for c in CONFIG_COLUMNS} for _, row in best.iterrows()]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        finals = pool.map(_measure, [(spec, c, args.curvature_every) for c in configs])

    sizes = best[keys.BATCH_SIZE].astype(float).to_numpy()
    steps = best[keys.STEPS_TO_TARGET].astype(float).to_numpy()
    best_lrs = theory.effective_lr(
        best[keys.LR].to_numpy(dtype=float), best[keys.MOMENTUM].to_numpy(dtype=float)
    )
    b_simple = theory.pooled_noise_scale([f[keys.B_SIMPLE] for f in finals], sizes)
    b_noise = theory.pooled_noise_scale([f[keys.B_NOISE] for f in finals], sizes)
    eps_max = theory.pooled_noise_scale([f[keys.EPS_MAX] for f in finals], sizes, b_noise)
    fit = theory.fit_tradeoff(sizes, steps)
    lo, hi = theory.b_crit_interval(sizes, steps) if len(sizes) >= 3 else (math.nan, math.nan)
    models = {
        mode: theory.eps_opt_model(mode, sizes, best_lrs, b_noise, eps_max)
        for mode in ("measured", "calibrated", "fitted")
    }

    print(f"{spec.name}: target {spec.target.metric} <= {spec.target.value}")
    header = "| B | best config (lr, m, warmup) | steps | best ε/(1−m) |"
    header += " ".join(f" ε_opt {m} (ratio) |" for m in models)
    print(header)
    print("|" + "---|" * (4 + len(models)))
    for i, (_, row) in enumerate(best.iterrows()):
        cells = [
            f"{int(row[keys.BATCH_SIZE])}",
            f"{row[keys.LR]:g}, {row[keys.MOMENTUM]:g}, {int(row[keys.WARMUP_STEPS])}",
            f"{steps[i]:.0f}",
            f"{best_lrs[i]:.3g}",
        ]
        for model in models.values():
            if model is None:
                cells.append("-")
                continue
            predicted = float(theory.eps_opt(sizes[i], model.eps_max, model.b_noise))
            cells.append(f"{predicted:.3g} ({predicted / best_lrs[i]:.2f})")
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "| workload | B_crit (fit, 90% CI) | S_min | B_simple | B_noise | ε_max | B_crit/B_noise |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {spec.workload} | {fit.b_crit:.0f} ({lo:.0f}–{hi:.0f}) | {fit.s_min:.0f} | "
        f"{b_simple:.0f} | {b_noise:.0f} | {eps_max:.3g} | {fit.b_crit / b_noise:.2f} |"
    )
    for mode, model in models.items():
        if model is not None:
            print(
                f"{mode}: ε_max {model.eps_max:.3g}, B_noise {model.b_noise:.0f}, "
                f"rms log misfit to the best lrs {model.rms_log:.2f}"
            )
    exact = [f for f in finals if "true_b_noise" in f]
    if exact:
        true_noise = [f"{f['true_b_noise']:.0f}" for f in exact]
        true_simple = [f"{f['true_b_simple']:.0f}" for f in exact]
        print(f"exact B_noise at the target, per B: {true_noise}; B_simple: {true_simple}")


if __name__ == "__main__":
    main()
