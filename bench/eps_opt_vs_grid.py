"""eps_opt pruning against the unpruned grid, side by side in one script.

    python bench/eps_opt_vs_grid.py --workload linear_regression
    python bench/eps_opt_vs_grid.py --workload teacher_mlp
    python bench/eps_opt_vs_grid.py --spec examples/char_transformer.yaml

Runs the same batch-size x lr grid twice on an embedded Ray (2 trials at a time), once
without pruning and once with `pruning: eps_opt` (with --spec: a grid spec run with
`pruning: none` and with its own pruning), and prints the examples each spent, their
ratio, and each batch size's best steps to the target. Numbers: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tuner.config.spec import parse_spec
from tuner.runtime.ray_runtime import init_ray

LRS = [0.0625, 0.088, 0.125, 0.177, 0.25, 0.354, 0.5, 0.707, 1.0, 1.414, 2.0]
WORKLOADS: dict[str, dict[str, Any]] = {
    "linear_regression": {
        "workload_args": {"dim": 100, "noise": 1.0},
        "target": {"metric": "loss", "value": 0.529},
        "budget": {"max_steps": 1500},
        "eval_every": 5,
        "space": {"batch_size": [16, 64, 256, 1024], "lr": LRS},
    },
    "teacher_mlp": {
        "workload_args": {},
        "target": {"metric": "loss", "value": 1.30},
        "budget": {"max_steps": 2500},
        "eval_every": 10,
        "space": {"batch_size": [32, 128, 512, 2048], "lr": LRS},
    },
}


def spec_for(workload: str, pruning: str, storage: str) -> Any:
    return parse_spec(
        {
            "name": f"{workload}-{pruning}",
            "workload": workload,
            **WORKLOADS[workload],
            "search": {"algorithm": "grid", "max_concurrent": 2},
            "pruning": {"kind": pruning, "tolerance": 4.0, "grace_steps": 50},
            "storage": storage,
        }
    )


def spec_from_file(path: str, pruning: str, storage: str) -> Any:
    """The grid spec at `path` with `pruning: none`, or as written ("own")."""
    data = yaml.safe_load(Path(path).read_text())
    if pruning == "none":
        data["pruning"] = {"kind": "none"}
    return parse_spec({**data, "name": f"{data['name']}-{pruning}", "storage": storage})


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="linear_regression")
    parser.add_argument("--spec", help="a grid spec, run without pruning and with its own")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables between our lines
    init_ray(num_cpus=2)  # before importing Ray: it keeps the embedded Ray on 127.0.0.1
    from tuner.runtime.runner import run_sweep

    storage = tempfile.mkdtemp(prefix="noisetune-bench-")
    rows = {}
    for pruning in ("none", "eps_opt"):
        spec = (
            spec_from_file(args.spec, "none" if pruning == "none" else "own", storage)
            if args.spec
            else spec_for(args.workload, pruning, storage)
        )
        started = time.perf_counter()
        outcome = run_sweep(spec, progress=False)
        rows[pruning] = (outcome.tables, time.perf_counter() - started)
    (full, full_s), (pruned, pruned_s) = rows["none"], rows["eps_opt"]
    spent_full = full.summary["total_examples"]
    spent_pruned = pruned.summary["total_examples"]
    print(f"{args.spec or args.workload}, {len(full.trials)} trials each")
    b_crit_full = full.summary["b_crit"]
    print(f"grid     : {spent_full:>12,} examples  {full_s:6.0f} s  B_crit {_fmt(b_crit_full)}")
    print(
        f"pruned   : {spent_pruned:>12,} examples  {pruned_s:6.0f} s  "
        f"B_crit {_fmt(pruned.summary['b_crit'])}  pruned {pruned.summary['n_pruned']}"
    )
    print(f"ratio    : {spent_full / spent_pruned:.2f}x fewer examples")
    best_full = full.front.set_index("batch_size")["steps"]
    best_pruned = pruned.front.set_index("batch_size")["steps"]
    for batch_size, steps in best_full.items():
        other = best_pruned.get(batch_size)
        print(f"  B={batch_size:>5}: best steps {steps} (grid) vs {other} (eps_opt)")


if __name__ == "__main__":
    main()
