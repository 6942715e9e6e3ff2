"""Precision and bias of a trial's B_simple estimate, per measurement method, at equal steps.

For each workload the weights are fixed (lr 0: the true noise scale is stationary) and
every method measures on every step of `--steps` steps, as a trial's loop does
(`trainables.loop.TrainingRun.train_step`, the trial's own moving averages). Each seed
draws other batches from the same weights. Reported per (workload, B, method), over the
seeds: the median estimate against the truth (bias) and the 10–90% spread of
estimate/truth.

The truth is B_simple = tr(Σ)/|G|² of uniform draws from the training set at those
weights: linear_regression's exact value (its `true_b_simple`); for the others, from
every example's own gradient computed alone (torch.func's vmap of grad, independent of
the hooks measured here) over the training set, or over `--pool` examples of it drawn
once (then the truth itself is an estimate: its tr(Σ) from that many examples).

    python bench/noise_precision.py                      # ~8 min on 2 cores
    python bench/noise_precision.py --workloads linear_regression --seeds 20
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from trainables.loop import TrainingRun
from trainables.parts.world import World
from trainables.settings import Hyperparameters
from trainables.workload import Workload, build_workload
from trainables.workloads.linear_regression import TRUE_B_SIMPLE, TRUE_TRACE_SIGMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adaptdl_peer
from machine_info import cpu_model
from noise_overhead import DEFAULT_SETTINGS

WORKLOADS: dict[str, dict[str, Any]] = {
    "linear_regression": {"dim": 100, "noise": 1.0},
    "teacher_mlp": {},
    "digits_cnn": {},
    "char_transformer": {},
}
BATCH_SIZES = {"char_transformer": [16, 64]}
METHODS = {  # label: (measure.method, per_example_rows); the peer with noisetune's off
    "micro_batch": ("micro_batch", 32),
    "per_example": ("per_example", 32),
    "per_example_all": ("per_example", 1 << 30),
    adaptdl_peer.LABEL: ("micro_batch", 32),
}


def truth(workload: Workload, pool: int) -> tuple[float, float]:
    """(B_simple, tr(Σ)) at the workload's weights over its training set (or `pool`
    examples of it), from each example's gradient computed alone."""
    data = workload.train_data
    n = len(data)  # type: ignore[arg-type]
    if workload.metrics is not None:
        exact = workload.metrics(workload.model)
        if TRUE_B_SIMPLE in exact:
            return float(exact[TRUE_B_SIMPLE]), float(exact[TRUE_TRACE_SIGMA])
    index = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: min(n, pool)]
    model = workload.model
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p: dict[str, torch.Tensor], example: Any) -> torch.Tensor:
        batch = tuple(t.unsqueeze(0) for t in example)

        class Bound(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = functional_call(model, p, (x,))
                return out

        return workload.loss(Bound(), batch)

    total_sq, total_g, count = 0.0, None, 0
    for lo in range(0, len(index), 256):
        rows = index[lo : lo + 256]
        batch = data[rows]
        grads = vmap(grad(one), in_dims=(None, 0))(params, tuple(batch))
        flat = torch.cat([g.reshape(g.shape[0], -1).double() for g in grads.values()], dim=1)
        total_sq += float(flat.square().sum())
        total_g = flat.sum(0) if total_g is None else total_g + flat.sum(0)
        count += flat.shape[0]
    if total_g is None:
        raise ValueError("an empty training set")
    g2 = float((total_g / count).square().sum())
    trace = total_sq / count - g2
    return trace / g2, trace


def estimate(
    base: Workload, name: str, b: int, label: str, seed: int, steps: int
) -> tuple[float, float]:
    """A trial's own (B_simple, tr(Σ)) after `steps` measured steps at the base weights
    (lr 0), measured by the method `label` (METHODS)."""
    peer = label == adaptdl_peer.LABEL
    method, rows = METHODS[label]
    settings = dataclasses.replace(
        DEFAULT_SETTINGS,
        workload=name,
        workload_args=WORKLOADS[name],
        max_steps=10**9,
        noise_every=0 if peer else 1,
        noise_method=method,
        per_example_rows=rows,
    )
    workload = Workload(model=copy.deepcopy(base.model), train_data=base.train_data, loss=base.loss)
    hp = Hyperparameters(b, 0.0, 0.0, 0, seed=seed)
    run = TrainingRun(settings, hp, torch.device("cpu"), World(), workload)
    gns = adaptdl_peer.attach(run.optimizer) if peer else None
    for step in range(1, steps + 1):
        run.train_step(step)
    if gns is not None:
        return adaptdl_peer.b_simple(gns, b), adaptdl_peer.trace_sigma(gns, b)
    return float(run.meter.b_simple.scale), float(run.meter.b_simple.noise)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lo, hi = math.floor(position), math.ceil(position)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--pool", type=int, default=4096)
    args = parser.parse_args()
    print(f"# noise precision: {args.steps} measured steps, {args.seeds} seeds, lr 0")
    print(
        f"# {platform.node()} {cpu_model()} torch {torch.__version__} {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| workload | B | true B_simple | method | B_simple: median/truth − 1 | B_simple: "
        "10–90% of estimate/truth | tr(Σ): median/truth − 1 | tr(Σ): 10–90% | s/trial |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        base = build_workload(name, WORKLOADS[name], seed=0)
        true_scale, true_trace = truth(base, args.pool)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        for b in [s for s in sizes if s in BATCH_SIZES.get(name, sizes)]:
            for label in METHODS:
                start = time.perf_counter()
                runs = [
                    estimate(base, name, b, label, seed, args.steps) for seed in range(args.seeds)
                ]
                per_trial = (time.perf_counter() - start) / args.seeds
                scale = summary([r[0] / true_scale for r in runs])
                trace = summary([r[1] / true_trace for r in runs])
                print(
                    f"| {name} | {b} | {true_scale:.1f} | {label} | {scale} | {trace} "
                    f"| {per_trial:.1f} |",
                    flush=True,
                )


def summary(ratios: list[float]) -> str:
    """'bias | 10–90%' of estimate/truth over the seeds (empty estimates counted)."""
    finite = [r for r in ratios if math.isfinite(r)]
    if not finite:
        return "— | —"
    missing = f" ({len(ratios) - len(finite)} empty)" if len(finite) < len(ratios) else ""
    bias = statistics.median(finite) - 1
    return f"{bias:+.1%} | {quantile(finite, 0.1):.2f}–{quantile(finite, 0.9):.2f}{missing}"


if __name__ == "__main__":
    main()
