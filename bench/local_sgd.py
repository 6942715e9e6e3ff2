"""Local SGD against DDP: the steps to the target and the synchronisations it took.

    python bench/local_sgd.py --workload linear_regression --periods 1,2,4,8 --seeds 3

For every sync period H and training seed, one trial of the real training loop
(`trainables.loop.run_trial`, no Ray) runs on `--workers` gloo processes: H = 1 is DDP
(the gradients all-reduced every step), H > 1 local SGD (each worker steps on its own
share, the parameters averaged every H steps; trainables.steps.LocalSGD). Evaluations
fall every lcm(periods) steps (at least 8), a multiple of every period asked for, so
they add no averages; the steps to the target are interpolated between them.
Printed per period: the median over the seeds of the (interpolated) steps to the target
and of the synchronisations made by the evaluation that met it, each also over the
first period's (H = 1 first: DDP).
The issue's check: H > 1 takes fewer synchronisations for a comparable number of steps.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import keys
from trainables.loop import run_trial
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings

# Per workload: its spec's sections, the batch size, lr and momentum of every trial.
WORKLOADS: dict[str, dict[str, Any]] = {
    "linear_regression": {
        "workload_args": {"dim": 16, "noise": 0.5, "n_train": 8192},
        "target": {"metric": "loss", "value": 0.2},
        "batch_size": 32,
        "lr": 0.2,
        "momentum": 0.0,
    },
    "tests.user_workloads:classifier": {
        "workload_args": {},
        # Its accuracy saturates near 0.995 within 60 steps: the eval loss is the target.
        "target": {"metric": "loss", "value": 0.1},
        "batch_size": 32,
        "lr": 0.02,
        "momentum": 0.0,
    },
    # Held out from tuning (bench/workloads.py): its cross-entropy falls for hundreds of
    # steps, with momentum, so workers that step apart for long can drift.
    "bench.workloads:teacher_student": {
        "workload_args": {},
        "target": {"metric": "loss", "value": 1.0},
        "batch_size": 32,
        "lr": 0.04,
        "momentum": 0.9,
    },
}


def settings(workload: str, workers: int, period: int, eval_every: int) -> TrialSettings:
    """The trial settings a sweep of this workload would give, at sync period `period`."""
    setup = WORKLOADS[workload]
    spec = parse_spec(
        {
            "name": "local-sgd",
            "workload": workload,
            "workload_args": setup["workload_args"],
            "target": setup["target"],
            "budget": {"max_steps": 4000},
            "eval_every": eval_every,
            "space": {"batch_size": [setup["batch_size"]], "lr": [setup["lr"]]},
            "resources": {"workers_per_trial": workers, "checkpoint_every": 0},
            "stall": {"patience_steps": 0},
            "sync": {"period": period},
        }
    )
    return trial_settings(spec, "")


def _worker(rank: int, world: int, store: str, told: TrialSettings, hp: Any, queue: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        rows: list[dict[str, Any]] = []
        last = run_trial(told, hp, rows.append, world=World(rank, world))
        if rank == 0:
            reached = last[keys.TRIAL_STATUS] == keys.REACHED
            steps = float(last[keys.STEPS_TO_TARGET_INTERP]) if reached else math.inf
            queue.put((steps, int(last[keys.SYNCS]) if reached else math.inf))
    finally:
        dist.destroy_process_group()


def to_target(told: TrialSettings, hp: Hyperparameters, workers: int) -> tuple[float, float]:
    """(steps, syncs) to the target of one trial on `workers` gloo processes."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory(prefix="noisetune-bench-") as directory:
        store = f"file://{directory}/store"
        procs = [
            context.Process(target=_worker, args=(rank, workers, store, told, hp, queue))
            for rank in range(workers)
        ]
        for proc in procs:
            proc.start()
        result: tuple[float, float] = queue.get(timeout=600)
        for proc in procs:
            proc.join(timeout=60)
            if proc.exitcode != 0:
                raise RuntimeError(f"a worker exited with {proc.exitcode}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="linear_regression")
    parser.add_argument("--periods", default="1,2,4,8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    periods = [int(p) for p in args.periods.split(",")]
    eval_every = math.lcm(8, *periods)
    seeds = range(args.seeds)
    setup = WORKLOADS[args.workload]
    print(
        f"{args.workload}: {args.workers} workers, B {setup['batch_size']}, lr {setup['lr']}, "
        f"momentum {setup['momentum']}, "
        f"target {setup['target']['metric']} {setup['target']['value']}, eval every "
        f"{eval_every}, {args.seeds} seeds; medians"
    )
    base: tuple[float, float] | None = None
    for period in periods:
        told = settings(args.workload, args.workers, period, eval_every)
        hps = [
            Hyperparameters(setup["batch_size"], setup["lr"], setup["momentum"], 0, seed=s)
            for s in seeds
        ]
        runs = [to_target(told, hp, args.workers) for hp in hps]
        steps = statistics.median(r[0] for r in runs)
        syncs = statistics.median(r[1] for r in runs)
        base = base or (steps, syncs)
        reached = sum(math.isfinite(r[0]) for r in runs)
        print(
            f"  H {period:>3}  steps {steps:8.2f} ({steps / base[0]:.2f}x)  "
            f"syncs {syncs:7.0f} ({syncs / base[1]:.2f}x)  reached {reached}/{args.seeds}",
            flush=True,
        )


if __name__ == "__main__":
    main()
