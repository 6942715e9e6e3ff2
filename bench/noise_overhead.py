"""Step-time overhead of the noise-scale (and curvature) measurement in the real training loop.

Runs `trainables.loop.TrainingRun.train_step` (no evaluation) for a baseline with every measurement
off (noise_every = 0, curvature_every = 0) and for variants measuring the noise scale
every k steps, side by side in one process, or in each of N DDP processes with
`--workers N`. With `--curvature-every c` one more variant measures the noise scale every
`--curvature-noise-every` steps (4, the default of a sweep) and the curvature (GᵀHG,
tr(HΣ)) every c steps, as a sweep with `measure.curvature_every: c` does.

After a warm-up block of every variant, each repeat runs `steps` steps of every variant,
interleaved in chunks in rotating order, so that a burst of load from other processes hits
one chunk rather than one variant. A chunk is the lcm of every variant's measurement
periods (16 by default; lcm(k, 4, c) with a curvature variant, so choose k that divide
20 for c = 10), so every chunk of a variant holds the same number of measured steps, and
a repeat's ms/step is the median of its chunks (robust to preemption; the plain mean is
kept in the JSON output too).

One worker (the default): every measured step measures as `--method` says (a sweep's
`measure.method`, default auto): every example's squared gradient norm by layer hooks in
the step's own backward pass, or the batch split into micro-batches, each one's squared
gradient norm recorded by parameter hooks. `--workers N` (N ≥ 2):
N spawned processes join a gloo process group on 127.0.0.1 (a free port), and each builds
the same trials with World(rank, N), so the loop wraps the model in DDP with the
noise-capture comm hook exactly as a multi-worker trial does. Every rank runs the same
chunks in the same order; a barrier before each chunk starts the ranks together, and the
timings reported are rank 0's.

Reported per (workload, B): the median over repeats of ms/step, the overhead as the median
of the per-repeat ratios variant/baseline − 1 (spread: their min…max), the extra cost of
one measured step, (t_k − t_0)·k, from the densest and the sparsest variant, and the
smallest k whose predicted overhead extra/(k·t_0) is at most 2% (extra from the sparsest).
With a curvature variant, a second table: its overhead against the noise-only variant of
the same noise_every, the extra cost of one curvature step, (t_c − t_k)·c, and the
smallest interval whose curvature share extra/(c·t_0) is at most 10%.

    python bench/noise_overhead.py                      # default run, ~1.5 min on 2 cores
    python bench/noise_overhead.py --batch-sizes 16,4096 --out noise_overhead.md
    python bench/noise_overhead.py --noise-every 1,4,20 --curvature-every 10  # ~4-6 min
    python bench/noise_overhead.py --workers 2 --noise-every 1,4,20 --curvature-every 10
        # B 64,1024,4096: ~7 min on 2 busy cores (~12 min with --repeats 32)

The training data of a workload is built once (per process) and shared; every trial gets
its own copy of the model and optimiser (TrainingRun(settings, hp, cpu, World(...), workload)).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import queue as queue_module
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainables.loop import TrainingRun
from trainables.parts.world import World
from trainables.settings import Hyperparameters
from trainables.workload import Workload, build_workload
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings

WORKLOAD_ARGS: dict[str, dict[str, Any]] = {
    "linear_regression": {"dim": 100, "noise": 1.0},
    "teacher_mlp": {},
    "digits_cnn": {},
    "char_transformer": {},
}
LR = 1e-3
MOMENTUM = 0.9
OVERHEAD_GOAL = 0.02
CURVATURE_GOAL = 0.10
BASELINE = "0"
LOOPBACK = "127.0.0.1"
DEFAULT_BATCH_SIZES = {1: "16,64,256,1024,4096", 2: "64,1024,4096"}
# A sweep's defaults (the spec's) for what a variant does not set.
DEFAULT_SETTINGS = trial_settings(
    parse_spec(
        {
            "name": "noise-overhead",
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.0},
            "budget": {"max_steps": 1},
            "space": {"batch_size": [16], "lr": [LR]},
        }
    ),
    "",
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adaptdl_peer  # noqa: E402
from machine_info import cpu_model  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """What one trial measures: the noise scale every `noise_every` steps (0 = never) and
    the curvature every `curvature_every` steps (0 = never)."""

    noise_every: int
    curvature_every: int = 0
    method: str = ""  # measure.method ("": the plan's)
    peer: bool = False  # noisetune's measurement off, AdaptDL's GradientNoiseScale on

    @property
    def label(self) -> str:
        """'0' (baseline), 'k' (noise every k), 'k+cC' (and curvature every C), 'k METHOD'
        (noise every k by that method), 'adaptdl' (the peer, every step)."""
        if self.peer:
            return adaptdl_peer.LABEL
        if self.curvature_every:
            return f"{self.noise_every}+c{self.curvature_every}"
        return f"{self.noise_every} {self.method}" if self.method else str(self.noise_every)

    @property
    def period(self) -> int:
        """Steps after which the pattern of measured steps repeats."""
        return math.lcm(*[e for e in (self.noise_every, self.curvature_every) if e > 0] or [1])


@dataclass
class Result:
    """Timings of one (workload, batch size): per variant label, ms/step of every repeat."""

    workload: str
    batch_size: int
    steps: int
    noise_every: list[int]
    curvature_every: int = 0  # 0: no curvature variant
    curvature_noise_every: int = 0  # the curvature variant's noise_every
    workers: int = 1
    repeats_ms: dict[str, list[float]] = field(default_factory=dict)  # median of chunks
    repeats_mean_ms: dict[str, list[float]] = field(default_factory=dict)  # mean of chunks
    resets: int = 0  # chunks after which non-finite weights were restored

    @property
    def curvature_label(self) -> str:
        return Variant(self.curvature_noise_every, self.curvature_every).label

    def median_ms(self, label: str) -> float:
        """Median over repeats of ms/step."""
        return statistics.median(self.repeats_ms[label])

    def ratios(self, label: str, base: str = BASELINE) -> list[float]:
        """Per-repeat ratio variant/base."""
        pairs = zip(self.repeats_ms[label], self.repeats_ms[base], strict=True)
        return [v / b for v, b in pairs]

    def overhead(self, label: str, base: str = BASELINE) -> tuple[float, float, float]:
        """(median, min, max) over repeats of variant/base − 1."""
        r = self.ratios(label, base)
        return statistics.median(r) - 1, min(r) - 1, max(r) - 1

    def extra_ms(self, label: str, base: str, every: int) -> float:
        """Median over repeats of (t_label − t_base)·every: extra ms per measured step."""
        pairs = zip(self.repeats_ms[label], self.repeats_ms[base], strict=True)
        return statistics.median([(v - b) * every for v, b in pairs])

    def measured_step_ms(self, every: int) -> float:
        """Extra ms per measured step of noise variant `every`: (t_k − t_0)·k."""
        return self.extra_ms(str(every), BASELINE, every)

    def every_for_goal(self, goal: float = OVERHEAD_GOAL) -> int:
        """Smallest k whose predicted overhead extra/(k·t_0) is at most `goal`.

        Uses the sparsest variant's extra cost: a measured step among unmeasured ones costs
        more than one in a run of measured steps (colder caches and allocator).
        """
        extra = self.measured_step_ms(max(self.noise_every))
        return max(1, math.ceil(extra / (goal * self.median_ms(BASELINE))))

    def curvature_base(self) -> str:
        """The noise-only variant the curvature variant is compared with: the one with the
        same noise_every if it ran, else the baseline."""
        same = str(self.curvature_noise_every)
        return same if same in self.repeats_ms else BASELINE

    def curvature_step_ms(self) -> float:
        """Extra ms per curvature step on top of `curvature_base()`: (t_c − t_base)·c."""
        return self.extra_ms(self.curvature_label, self.curvature_base(), self.curvature_every)

    def curvature_every_for_goal(self, goal: float = CURVATURE_GOAL) -> int:
        """Smallest interval c whose curvature share extra/(c·t_0) is at most `goal`."""
        extra = self.curvature_step_ms()
        return max(1, math.ceil(extra / (goal * self.median_ms(BASELINE))))


def parse_ints(text: str) -> list[int]:
    """'16,64' -> [16, 64]."""
    return [int(part) for part in text.split(",") if part.strip()]


def block_steps(steps: int, batch_size: int, unit: int) -> int:
    """Steps per variant and repeat: `steps` up to B = 512, then scaled by 512/B (>= 6 units).

    Always a multiple of `unit` (the lcm of the variants' periods), the chunk length, so
    every chunk of a variant holds the same whole number of measured steps.
    """
    scaled = steps * min(1.0, 512 / batch_size)
    return unit * max(min(6, max(1, steps // unit)), round(scaled / unit))


def make_trial(
    base: Workload,
    name: str,
    batch_size: int,
    variant: Variant,
    world: World | None = None,
    max_micro_batch: int | None = None,
    method: str = "auto",
) -> TrainingRun:
    """A trial of its own model copy on the shared training data; no evaluation is run.

    With world.size > 1 (a process group must be up) the loop wraps the model in DDP with
    the noise-capture comm hook, as in a multi-worker trial.
    """
    world = world or World()
    settings = dataclasses.replace(
        DEFAULT_SETTINGS,
        workload=name,
        workload_args=WORKLOAD_ARGS[name],
        max_steps=10**9,
        noise_every=0 if variant.peer else variant.noise_every,
        curvature_every=variant.curvature_every,
        workers_per_trial=world.size,
        max_micro_batch=max_micro_batch,
        noise_method=variant.method or method,
    )
    hp = Hyperparameters(batch_size=batch_size, lr=LR, momentum=MOMENTUM, warmup_steps=0)
    workload = Workload(model=copy.deepcopy(base.model), train_data=base.train_data, loss=base.loss)
    trial = TrainingRun(settings, hp, torch.device("cpu"), world, workload)
    if variant.peer:
        adaptdl_peer.attach(trial.optimizer)  # its hooks keep it alive
    return trial


class Runner:
    """One variant: its trial, its next step number, and the weights to restore on NaN."""

    def __init__(self, trial: TrainingRun) -> None:
        self.trial = trial
        self.next_step = 1
        self.initial = copy.deepcopy(trial.model.state_dict())
        self.resets = 0

    def run_block(self, steps: int) -> float:
        """Run `steps` training steps; return ms/step.

        In a process group, a barrier first, so that every rank starts the block together
        (the barrier is not timed; the steps' own all-reduces keep the ranks in step).
        """
        step, trial = self.next_step, self.trial
        if trial.world.size > 1:
            dist.barrier()
        start = time.perf_counter()
        for s in range(step, step + steps):
            trial.train_step(s)
        elapsed = time.perf_counter() - start
        self.next_step = step + steps
        self.guard_finite()
        return 1e3 * elapsed / steps

    def guard_finite(self) -> None:
        """Restore the initial weights (and drop optimiser state) if any became non-finite.

        DDP ranks hold identical weights, so they all decide the same.
        """
        params = self.trial.params
        if all(bool(torch.isfinite(p).all()) for p in params):
            return
        self.resets += 1
        self.trial.model.load_state_dict(self.initial)
        self.trial.optimizer.state.clear()


def chunk_unit(variants: list[Variant]) -> int:
    """The chunk length: the lcm of every variant's period."""
    return math.lcm(*[v.period for v in variants])


def bench_one(
    base: Workload,
    name: str,
    batch_size: int,
    variants: list[Variant],
    steps: int,
    repeats: int,
    world: World | None = None,
    max_micro_batch: int | None = None,
    method: str = "auto",
) -> Result:
    """Warm-up block, then `repeats` repeats of interleaved chunks in rotating order."""
    world = world or World()
    labels = [v.label for v in variants]
    runners = {
        v.label: Runner(make_trial(base, name, batch_size, v, world, max_micro_batch, method))
        for v in variants
    }
    curvature = [v for v in variants if v.curvature_every]
    result = Result(
        name,
        batch_size,
        steps,
        [v.noise_every for v in variants if not v.curvature_every and not v.method and not v.peer],
        curvature_every=curvature[0].curvature_every if curvature else 0,
        curvature_noise_every=curvature[0].noise_every if curvature else 0,
        workers=world.size,
    )
    result.repeats_ms = {label: [] for label in labels}
    result.repeats_mean_ms = {label: [] for label in labels}
    unit = chunk_unit(variants)
    for runner in runners.values():
        runner.run_block(steps)
    gc.collect()
    turn = 0
    for _ in range(repeats):
        chunks: dict[str, list[float]] = {label: [] for label in labels}
        for _ in range(steps // unit):
            shift = turn % len(labels)
            turn += 1
            for label in labels[shift:] + labels[:shift]:
                chunks[label].append(runners[label].run_block(unit))
        for label, times in chunks.items():
            result.repeats_ms[label].append(statistics.median(times))
            result.repeats_mean_ms[label].append(statistics.fmean(times))
    result.resets = sum(runner.resets for runner in runners.values())
    return result


@dataclass(frozen=True)
class Plan:
    """What to measure: picklable, so that spawned DDP workers get it whole."""

    names: list[str]
    batch_sizes: list[int]
    variants: list[Variant]
    steps: int
    repeats: int
    threads: int
    max_micro_batch: int | None = None  # every variant accumulates (the baseline too)
    method: str = "auto"  # measure.method of every variant (one worker)


def run_plan(plan: Plan, world: World, emit: Callable[[Result], None]) -> None:
    """Every (workload, batch size) of the plan in order; `emit` each result."""
    unit = chunk_unit(plan.variants)
    for name in plan.names:
        base = build_workload(name, WORKLOAD_ARGS[name])
        for batch_size in plan.batch_sizes:
            steps = block_steps(plan.steps, batch_size, unit)
            emit(
                bench_one(
                    base,
                    name,
                    batch_size,
                    plan.variants,
                    steps,
                    plan.repeats,
                    world,
                    plan.max_micro_batch,
                    plan.method,
                )
            )


def ddp_worker(rank: int, world_size: int, port: int, plan: Plan, results: Any) -> None:
    """One DDP rank: join the gloo group on 127.0.0.1, run the plan, rank 0 puts each
    result on the queue; every rank puts ('done', rank) or ('error', rank, traceback)."""
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's pairs on loopback too
    torch.set_num_threads(plan.threads)
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size
        )
        try:

            def emit(result: Result) -> None:
                if rank == 0:
                    results.put(("result", asdict(result)))

            run_plan(plan, World(rank, world_size), emit)
        finally:
            dist.destroy_process_group()
    except BaseException:
        results.put(("error", rank, traceback.format_exc()))
        raise
    results.put(("done", rank))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def run_ddp(plan: Plan, world_size: int, emit: Callable[[Result], None]) -> None:
    """Run the plan in `world_size` spawned gloo processes (tests/_helpers.run_gloo_workers'
    way); `emit` rank 0's results as they come. A failing rank's traceback is raised here,
    after the processes this started are ended (by their own handles)."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=ddp_worker, args=(rank, world_size, port, plan, results))
        for rank in range(world_size)
    ]
    for worker in workers:
        worker.start()
    done = 0
    try:
        while done < world_size:
            try:
                message = results.get(timeout=5)
            except queue_module.Empty:
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a DDP worker exited with {dead[0].exitcode}") from None
                continue
            if message[0] == "result":
                emit(Result(**message[1]))
            elif message[0] == "done":
                done += 1
            else:
                raise RuntimeError(f"DDP rank {message[1]} failed:\n{message[2]}")
        for worker in workers:
            worker.join(timeout=60)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)


def format_cell(result: Result, label: str, base: str = BASELINE) -> str:
    """'ms/step (+overhead%, min…max)' of one variant against `base`."""
    median, lo, hi = result.overhead(label, base)
    return f"{result.median_ms(label):.3f} ({100 * median:+.1f}%, {100 * lo:+.1f}…{100 * hi:+.1f})"


def methods_table(results: list[Result], methods: list[str], every: list[int], peer: bool) -> str:
    """One row per (workload, B): the plain step, then per method its overhead at each k,
    the extra cost of one measured step (from the sparsest k) and the k for ≤2%; the
    peer's overhead (it measures every step)."""
    head = ["workload", "B", "off: ms/step"]
    for method in methods:
        head += [f"{method} every {k}" for k in every]
        head += [f"{method}: extra ms per measured step (× off step)", f"{method}: k for ≤2%"]
    if peer:
        head += [f"{adaptdl_peer.LABEL} (every step)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        base = res.median_ms(BASELINE)
        row = [res.workload, str(res.batch_size), f"{base:.3f}"]
        for method in methods:
            row += [f"{100 * res.overhead(f'{k} {method}')[0]:+.1f}%" for k in every]
            sparse = max(every)
            extra = res.extra_ms(f"{sparse} {method}", BASELINE, sparse)
            row += [f"{extra:.3f} ({extra / base:.2f}×)"]
            row += [str(max(1, math.ceil(extra / (OVERHEAD_GOAL * base))))]
        if peer:
            row += [format_cell(res, adaptdl_peer.LABEL)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_table(results: list[Result], repeats: int) -> str:
    """One row per (workload, B): baseline ms/step, each variant, cost per measured step."""
    first = results[0]
    variants = [e for e in first.noise_every if e > 0]
    head = ["workload", "B", "steps × repeats", "off: ms/step"]
    head += [f"every {e}: ms/step (overhead, min…max)" for e in variants]
    if first.curvature_every:
        head += [
            f"every {first.curvature_noise_every} + curvature every {first.curvature_every}: "
            "ms/step (overhead, min…max)"
        ]
    dense, sparse = variants[0], variants[-1]
    head += [
        f"extra ms per measured step, k={dense} / k={sparse} (× off step)",
        f"k for ≤{100 * OVERHEAD_GOAL:g}% (from k={sparse})",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        base = res.median_ms(BASELINE)
        lo, hi = res.measured_step_ms(dense), res.measured_step_ms(sparse)
        row = [res.workload, str(res.batch_size), f"{res.steps} × {repeats}", f"{base:.3f}"]
        row += [format_cell(res, str(e)) for e in variants]
        if res.curvature_every:
            row += [format_cell(res, res.curvature_label)]
        row += [f"{lo:.3f} / {hi:.3f} ({lo / base:.1f}× / {hi / base:.1f}×)"]
        row += [str(res.every_for_goal())]
        lines.append("| " + " | ".join(row) + " |")
    resets = sum(r.resets for r in results)
    if resets:
        lines.append(f"\nNon-finite weights were restored after {resets} chunk(s).")
    return "\n".join(lines)


def curvature_table(results: list[Result]) -> str:
    """One row per (workload, B): the curvature variant against the baseline and against
    the noise-only variant of the same noise_every, and what one curvature step costs."""
    first = results[0]
    k, c, base = first.curvature_noise_every, first.curvature_every, first.curvature_base()
    against = "off" if base == BASELINE else f"every {k}"
    head = [
        "workload",
        "B",
        f"every {k} + curvature every {c}: overhead vs off (min…max)",
        f"vs {against} alone (min…max)",
        f"extra ms per curvature step (× off step), vs {against}",
        f"c for curvature share ≤{100 * CURVATURE_GOAL:g}%",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        label = res.curvature_label
        total, lo, hi = res.overhead(label)
        share, slo, shi = res.overhead(label, base)
        extra = res.curvature_step_ms()
        row = [
            res.workload,
            str(res.batch_size),
            f"{100 * total:+.1f}% ({100 * lo:+.1f}…{100 * hi:+.1f})",
            f"{100 * share:+.1f}% ({100 * slo:+.1f}…{100 * shi:+.1f})",
            f"{extra:.3f} ({extra / res.median_ms(BASELINE):.1f}×)",
            str(res.curvature_every_for_goal()),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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
    parser.add_argument(
        "--batch-sizes",
        help=f"default {DEFAULT_BATCH_SIZES[1]} (1 worker), {DEFAULT_BATCH_SIZES[2]} (DDP)",
    )
    parser.add_argument("--noise-every", default="1,4,16", help="variants besides 0 (off)")
    parser.add_argument(
        "--curvature-every",
        type=int,
        default=0,
        help="add a variant measuring curvature every C steps (0: none)",
    )
    parser.add_argument(
        "--curvature-noise-every",
        type=int,
        default=4,
        help="noise_every of the curvature variant (a sweep's default: 4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="1: one process, micro-batches; N >= 2: N gloo DDP processes on 127.0.0.1",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=160,
        help="steps per variant and repeat up to B=512 (scaled by 512/B)",
    )
    parser.add_argument(
        "--max-micro-batch",
        type=int,
        help="accumulate every variant (the baseline too) over micro-batches of at most N",
    )
    parser.add_argument(
        "--method",
        default="auto",
        choices=["auto", "per_example", "micro_batch"],
        help="measure.method of every variant on one worker (default auto)",
    )
    parser.add_argument(
        "--methods",
        default="",
        help="compare these measure.methods side by side (e.g. per_example,micro_batch)",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="add AdaptDL 0.2.11's GradientNoiseScale (pip install adaptdl==0.2.11 --no-deps)",
    )
    parser.add_argument("--repeats", type=int, default=16, help="timed repeats after warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, help="write the table (.md) or raw results (.json)")
    args = parser.parse_args(argv)

    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOAD_ARGS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOAD_ARGS)}")
    noise = [0, *sorted({e for e in parse_ints(args.noise_every) if e > 0})]
    if len(noise) < 2 or args.repeats < 1 or args.steps < 1:
        parser.error("need at least one noise_every > 0, --repeats >= 1 and --steps >= 1")
    if args.curvature_every < 0 or args.curvature_noise_every < 0 or args.workers < 1:
        parser.error("--curvature-every and --curvature-noise-every >= 0, --workers >= 1")
    methods = [m for m in args.methods.split(",") if m]
    if methods:
        variants = [Variant(0)] + [Variant(e, method=m) for m in methods for e in noise[1:]]
    else:
        variants = [Variant(e) for e in noise]
    if args.peer:
        if not adaptdl_peer.available() or args.workers > 1:
            parser.error("--peer needs adaptdl installed and one worker")
        variants.append(Variant(1, peer=True))
    if args.curvature_every:
        variants.append(Variant(args.curvature_noise_every, args.curvature_every))
    batch_text = args.batch_sizes or DEFAULT_BATCH_SIZES[min(args.workers, 2)]
    batch_sizes = parse_ints(batch_text)
    uneven = [b for b in batch_sizes if b % args.workers]
    if uneven:
        parser.error(f"batch sizes {uneven} are not divisible by {args.workers} workers")
    plan = Plan(
        names,
        batch_sizes,
        variants,
        args.steps,
        args.repeats,
        args.threads,
        args.max_micro_batch,
        args.method,
    )
    torch.set_num_threads(args.threads)

    results: list[Result] = []

    def emit(res: Result) -> None:
        results.append(res)
        labels = [label for label in res.repeats_ms if label != BASELINE]
        cells = [f"{label} {100 * res.overhead(label)[0]:+.1f}%" for label in labels]
        print(
            f"{res.workload} B={res.batch_size}: off {res.median_ms(BASELINE):.3f} ms/step, "
            + ", ".join(cells),
            file=sys.stderr,
            flush=True,
        )

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if args.workers == 1:
        run_plan(plan, World(), emit)
    else:
        run_ddp(plan, args.workers, emit)
    wall = time.perf_counter() - started
    load = f"{load_before:.1f} → {os.getloadavg()[0]:.1f}"

    if methods:
        table = methods_table(results, methods, noise[1:], args.peer)
    else:
        table = markdown_table(results, args.repeats)
    if args.curvature_every:
        table += "\n\n" + curvature_table(results)
    info = machine()
    if args.workers == 1:
        micro = DEFAULT_SETTINGS.micro_batches
        rows = DEFAULT_SETTINGS.per_example_rows
        mode = f"method={args.method} (micro_batches={micro}, per_example_rows={rows})"
    else:
        mode = f"workers={args.workers} (DDP comm hook, gloo on {LOOPBACK}; rank 0's timings)"
    if args.max_micro_batch:
        mode += f", every variant accumulated over micro-batches of <= {args.max_micro_batch}"
    header = (
        f"{info['cpu_model']}, {info['cpus']} CPUs, torch {info['torch']}, "
        f"python {info['python']}, code {info['code']}, "
        f"threads={args.threads}, lr={LR:g}, momentum={MOMENTUM:g}, {mode}; "
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
