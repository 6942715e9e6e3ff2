"""Step-time overhead of the noise-scale measurement in the real training loop.

Runs `trainables.loop.Trial.step` (no evaluation) for a baseline with the measurement off
(noise_every = 0) and for variants measuring every k steps, side by side in one process.
After a warm-up block of every variant, each repeat runs `steps` steps of every variant,
interleaved in chunks of lcm(k) steps (16 by default) in rotating order, so that a burst
of load from other processes hits one chunk rather than one variant. Every chunk of a
variant holds the same number of measured steps, so a repeat's ms/step is the median of
its chunks (robust to preemption; the plain mean is kept in the JSON output too).

Reported per (workload, B): the median over repeats of ms/step, the overhead as the median
of the per-repeat ratios variant/baseline − 1 (spread: their min…max), the extra cost of
one measured step, (t_k − t_0)·k, from the densest and the sparsest variant, and the
smallest k whose predicted overhead extra/(k·t_0) is at most 2% (extra from the sparsest).

    python bench/noise_overhead.py                      # default run, ~1.5 min on 2 cores
    python bench/noise_overhead.py --batch-sizes 16,4096 --out noise_overhead.md

The training data of a workload is built once and shared; every trial gets its own copy of
the model and optimiser (Trial(settings, hp, cpu, World(), workload)).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.loop import Trial, World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import Workload, build_workload

WORKLOAD_ARGS: dict[str, dict[str, Any]] = {
    "linear_regression": {"dim": 100, "noise": 1.0},
    "teacher_mlp": {},
}
LR = 1e-3
MOMENTUM = 0.9
OVERHEAD_GOAL = 0.02


@dataclass
class Result:
    """Timings of one (workload, batch size): per variant, ms/step of every repeat."""

    workload: str
    batch_size: int
    steps: int
    noise_every: list[int]
    repeats_ms: dict[int, list[float]] = field(default_factory=dict)  # median of chunks
    repeats_mean_ms: dict[int, list[float]] = field(default_factory=dict)  # mean of chunks
    resets: int = 0  # chunks after which non-finite weights were restored

    def median_ms(self, every: int) -> float:
        """Median over repeats of ms/step."""
        return statistics.median(self.repeats_ms[every])

    def ratios(self, every: int) -> list[float]:
        """Per-repeat ratio variant/baseline."""
        return [v / b for v, b in zip(self.repeats_ms[every], self.repeats_ms[0], strict=True)]

    def overhead(self, every: int) -> tuple[float, float, float]:
        """(median, min, max) over repeats of variant/baseline − 1."""
        r = self.ratios(every)
        return statistics.median(r) - 1, min(r) - 1, max(r) - 1

    def measured_step_ms(self, every: int) -> float:
        """Extra ms per measured step of variant `every`: median over repeats of (t_k − t_0)·k."""
        pairs = zip(self.repeats_ms[every], self.repeats_ms[0], strict=True)
        return statistics.median([(v - b) * every for v, b in pairs])

    def every_for_goal(self, goal: float = OVERHEAD_GOAL) -> int:
        """Smallest k whose predicted overhead extra/(k·t_0) is at most `goal`.

        Uses the sparsest variant's extra cost: a measured step among unmeasured ones costs
        more than one in a run of measured steps (colder caches and allocator).
        """
        extra = self.measured_step_ms(max(self.noise_every))
        return max(1, math.ceil(extra / (goal * self.median_ms(0))))


def parse_ints(text: str) -> list[int]:
    """'16,64' -> [16, 64]."""
    return [int(part) for part in text.split(",") if part.strip()]


def block_steps(steps: int, batch_size: int, unit: int) -> int:
    """Steps per variant and repeat: `steps` up to B = 512, then scaled by 512/B (>= 6 units).

    Always a multiple of `unit` (the lcm of the noise_every values), the chunk length, so
    every chunk of a variant holds the same whole number of measured steps.
    """
    scaled = steps * min(1.0, 512 / batch_size)
    return unit * max(min(6, max(1, steps // unit)), round(scaled / unit))


def make_trial(base: Workload, name: str, batch_size: int, every: int) -> Trial:
    """A trial of its own model copy on the shared training data; no evaluation is run."""
    settings = TrialSettings(
        workload=name,
        workload_args=WORKLOAD_ARGS[name],
        max_steps=10**9,
        noise_every=every,
    )
    hp = Hyperparameters(batch_size=batch_size, lr=LR, momentum=MOMENTUM, warmup_steps=0)
    workload = Workload(model=copy.deepcopy(base.model), train_data=base.train_data, loss=base.loss)
    return Trial(settings, hp, torch.device("cpu"), World(), workload)


class Runner:
    """One variant: its trial, its next step number, and the weights to restore on NaN."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.next_step = 1
        self.initial = copy.deepcopy(trial.model.state_dict())
        self.resets = 0

    def run_block(self, steps: int) -> float:
        """Run `steps` training steps; return ms/step."""
        step, trial = self.next_step, self.trial
        start = time.perf_counter()
        for s in range(step, step + steps):
            trial.step(s)
        elapsed = time.perf_counter() - start
        self.next_step = step + steps
        self.guard_finite()
        return 1e3 * elapsed / steps

    def guard_finite(self) -> None:
        """Restore the initial weights (and drop optimiser state) if any became non-finite."""
        params = self.trial.params
        if all(bool(torch.isfinite(p).all()) for p in params):
            return
        self.resets += 1
        self.trial.model.load_state_dict(self.initial)
        self.trial.optimizer.state.clear()


def bench_one(
    base: Workload, name: str, batch_size: int, variants: list[int], steps: int, repeats: int
) -> Result:
    """Warm-up block, then `repeats` repeats of interleaved chunks in rotating order."""
    runners = {every: Runner(make_trial(base, name, batch_size, every)) for every in variants}
    result = Result(name, batch_size, steps, variants)
    result.repeats_ms = {every: [] for every in variants}
    result.repeats_mean_ms = {every: [] for every in variants}
    unit = math.lcm(*[e for e in variants if e > 0])
    for runner in runners.values():
        runner.run_block(steps)
    gc.collect()
    turn = 0
    for _ in range(repeats):
        chunks: dict[int, list[float]] = {every: [] for every in variants}
        for _ in range(steps // unit):
            shift = turn % len(variants)
            turn += 1
            for every in variants[shift:] + variants[:shift]:
                chunks[every].append(runners[every].run_block(unit))
        for every, times in chunks.items():
            result.repeats_ms[every].append(statistics.median(times))
            result.repeats_mean_ms[every].append(statistics.fmean(times))
    result.resets = sum(runner.resets for runner in runners.values())
    return result


def format_cell(result: Result, every: int) -> str:
    """'ms/step (+overhead%, min…max)' of one variant."""
    median, lo, hi = result.overhead(every)
    return f"{result.median_ms(every):.3f} ({100 * median:+.1f}%, {100 * lo:+.1f}…{100 * hi:+.1f})"


def markdown_table(results: list[Result], repeats: int) -> str:
    """One row per (workload, B): baseline ms/step, each variant, cost per measured step."""
    variants = [e for e in results[0].noise_every if e > 0]
    head = ["workload", "B", "steps × repeats", "off: ms/step"]
    head += [f"every {e}: ms/step (overhead, min…max)" for e in variants]
    dense, sparse = variants[0], variants[-1]
    head += [
        f"extra ms per measured step, k={dense} / k={sparse} (× off step)",
        f"k for ≤{100 * OVERHEAD_GOAL:g}% (from k={sparse})",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        base = res.median_ms(0)
        lo, hi = res.measured_step_ms(dense), res.measured_step_ms(sparse)
        row = [res.workload, str(res.batch_size), f"{res.steps} × {repeats}", f"{base:.3f}"]
        row += [format_cell(res, e) for e in variants]
        row += [f"{lo:.3f} / {hi:.3f} ({lo / base:.1f}× / {hi / base:.1f}×)"]
        row += [str(res.every_for_goal())]
        lines.append("| " + " | ".join(row) + " |")
    resets = sum(r.resets for r in results)
    if resets:
        lines.append(f"\nNon-finite weights were restored after {resets} chunk(s).")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def code_version() -> str:
    """The git commit of this checkout, marked '+dirty' if trainables/ or tuner/ changed."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "trainables", "tuner"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Versions and CPU of this machine, for the record."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": torch.multiprocessing.cpu_count(),
        "cpu_model": cpu_model(),
        "code": code_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="linear_regression,teacher_mlp")
    parser.add_argument("--batch-sizes", default="16,64,256,1024,4096")
    parser.add_argument("--noise-every", default="1,4,16", help="variants besides 0 (off)")
    parser.add_argument(
        "--steps",
        type=int,
        default=160,
        help="steps per variant and repeat up to B=512 (scaled by 512/B)",
    )
    parser.add_argument("--repeats", type=int, default=16, help="timed repeats after warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the table (.md) or raw results (.json)")
    args = parser.parse_args(argv)

    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOAD_ARGS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOAD_ARGS)}")
    variants = [0, *sorted({e for e in parse_ints(args.noise_every) if e > 0})]
    if len(variants) < 2 or args.repeats < 1 or args.steps < 1:
        parser.error("need at least one noise_every > 0, --repeats >= 1 and --steps >= 1")
    unit = math.lcm(*variants[1:])
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[Result] = []
    for name in names:
        base = build_workload(name, WORKLOAD_ARGS[name])
        for batch_size in parse_ints(args.batch_sizes):
            steps = block_steps(args.steps, batch_size, unit)
            res = bench_one(base, name, batch_size, variants, steps, args.repeats)
            results.append(res)
            print(
                f"{name} B={batch_size}: off {res.median_ms(0):.3f} ms/step, "
                + ", ".join(f"every {e} {100 * res.overhead(e)[0]:+.1f}%" for e in variants[1:]),
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    load = f"{load_before:.1f} → {os.getloadavg()[0]:.1f}"

    table = markdown_table(results, args.repeats)
    info = machine()
    micro = TrialSettings(workload=names[0]).micro_batches
    header = (
        f"{info['cpu_model']}, {info['cpus']} CPUs, torch {info['torch']}, "
        f"python {info['python']}, code {info['code']}, "
        f"threads={args.threads}, lr={LR:g}, momentum={MOMENTUM:g}, micro_batches={micro}; "
        f"wall {wall:.0f} s, 1-min load average {load}"
    )
    print(header + "\n\n" + table)
    if args.out is not None:
        if args.out.suffix == ".json":
            payload = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": info}
            payload["wall_s"] = wall
            payload["load_average"] = load
            payload["results"] = [asdict(r) for r in results]
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
        else:
            args.out.write_text(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
