"""The training loop every trial runs, on one worker or on each of N DDP workers.

Warmup then constant lr, SGD with momentum (or AdamW with beta1 = momentum), a global
batch B split evenly over the workers, the two-batch noise-scale measurement every
`noise_every` steps, the curvature measurement (GᵀHG, tr(HΣ), hence B_noise and ε_max)
every `curvature_every` steps, an evaluation every `eval_every` steps (target check,
workload metrics, report) and a stop on target reached, budget exhausted or divergence.

Every `checkpoint_every` evaluations the report carries a checkpoint of the trial's
whole state (model, optimiser, samplers, noise-scale averages, step), so a trial that is
restarted after a worker or driver failure continues from there and trains on exactly
the batches it would have seen (`Checkpoints`: the executors bind it to Ray).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from trainables import keys
from trainables.curvature import CurvaturePair, GradVector, curvature_pair
from trainables.judge import Judge
from trainables.noise_capture import (
    DDPNormState,
    MicroBatchNorms,
    NormPair,
    allreduce_with_norms,
    grad_sq_norm,
)
from trainables.schedule import warmup_lr
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import Workload, build_workload
from tuner.theory import NoiseScaleEMA, eps_max

Report = Callable[[dict[str, Any]], None]
EVAL_CHUNK = 8192
HESSIAN_STREAM = 1  # the Hessian batches' random stream of a trial (the sampler's is apart)
INITIAL_LOSS_STREAM = 2  # the examples of the step-0 training loss (no eval_data)
TORCH_STREAM = 3  # the trial's torch RNG (dropout, augmentation drawn in `loss`)
INITIAL_LOSS_EXAMPLES = 1024  # at most this many training examples
STATE_FILE = "trial_state.pt"  # a trial checkpoint's one file (`save_state`, `load_state`)


class TrialInputError(ValueError):
    """A trial that cannot run as configured (reported as the trial's error)."""


class Checkpoints(Protocol):
    """Where a trial's checkpoints go and come back from (Ray Tune, Ray Train, a test)."""

    def restore(self) -> dict[str, Any] | None:
        """The state of the latest checkpoint of this trial, or None to start afresh."""

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """Report `metrics` together with a checkpoint of `state()` (called only where
        the checkpoint is written: rank 0 of a multi-worker trial)."""


def save_state(state: Mapping[str, Any], directory: str | Path) -> None:
    """Write a trial state (`Trial.state_dict`) into a checkpoint directory."""
    torch.save(dict(state), Path(directory) / STATE_FILE)


def load_state(directory: str | Path) -> dict[str, Any]:
    """Read what `save_state` wrote, onto the CPU (RNG states must be there; loading
    the model and optimiser state dicts moves the rest onto the trial's device)."""
    state: dict[str, Any] = torch.load(
        Path(directory) / STATE_FILE, map_location="cpu", weights_only=True
    )
    return state


def stream_seed(*entropy: int) -> int:
    """The seed of one random stream of a trial, named by its integers."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def seeded_generator(*entropy: int) -> torch.Generator:
    """A torch generator of the stream `stream_seed(*entropy)`."""
    return torch.Generator().manual_seed(stream_seed(*entropy))


@dataclass(frozen=True)
class World:
    """This worker's place among the trial's data-parallel workers."""

    rank: int = 0
    size: int = 1


def fetch_batch(dataset: Dataset[Any], indices: torch.Tensor) -> Any:
    """A collated batch of `dataset` at `indices` (fast path for TensorDataset)."""
    if isinstance(dataset, TensorDataset):
        return tuple(t[indices] for t in dataset.tensors)
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return default_collate(getitems(indices.tolist()))
    return default_collate([dataset[i] for i in indices.tolist()])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def split_batch(batch: Any, parts: int) -> list[tuple[Any, int]]:
    """Split a collated batch along dim 0 into `parts` micro-batches with their sizes."""
    size = batch_len(batch)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [
        (slice_batch(batch, lo, hi), hi - lo) for lo, hi in itertools.pairwise(bounds) if hi > lo
    ]


def batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return batch_len(next(iter(batch.values())))
    return batch_len(batch[0])


def slice_batch(batch: Any, lo: int, hi: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, Mapping):
        return {k: slice_batch(v, lo, hi) for k, v in batch.items()}
    return type(batch)(slice_batch(v, lo, hi) for v in batch)


def make_optimizer(
    name: str, params: Iterator[torch.nn.Parameter], hp: Hyperparameters
) -> torch.optim.Optimizer:
    """SGD with momentum from the space, or AdamW with beta1 = momentum."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, betas=(hp.momentum, 0.999))
    raise TrialInputError(f"unknown optimizer {name!r}")


@dataclass
class TrainLossWindow:
    """Mean training loss since the last evaluation, kept on the device (no host sync)."""

    total: torch.Tensor
    count: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().double()
        self.count += 1

    def take(self, world: World) -> float:
        if self.count == 0:  # every evaluation after step 0 follows a step
            raise RuntimeError("no training loss since the last evaluation")
        mean = self.total / self.count
        if world.size > 1:
            dist.all_reduce(mean, op=dist.ReduceOp.SUM)
            mean /= world.size
        self.total = torch.zeros_like(self.total)
        self.count = 0
        return float(mean)


@dataclass
class Captured:
    """What one step's backward measured: the norm pair, and on curvature steps the
    small-batch gradient vectors (each micro-batch's, or this worker's local one)."""

    pair: NormPair | None = None
    small_grads: list[list[torch.Tensor | None]] | None = None


class Trial:
    """One training run: its model, optimiser, measurement state and stop rules."""

    def __init__(
        self,
        settings: TrialSettings,
        hp: Hyperparameters,
        device: torch.device,
        world: World,
        workload: Workload | None = None,
    ) -> None:
        if hp.batch_size % world.size:
            raise TrialInputError(
                f"batch_size {hp.batch_size} is not divisible by {world.size} workers"
            )
        self.settings, self.hp, self.device, self.world = settings, hp, device, world
        self.workload = workload or build_workload(
            settings.workload, settings.workload_args, seed=hp.seed
        )
        self.model = self.workload.model.to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp_norms: DDPNormState | None = None
        self.trained: torch.nn.Module = self.model
        if world.size > 1:
            self.trained = DistributedDataParallel(self.model)
            self.ddp_norms = DDPNormState(world.size)
            self.trained.register_comm_hook(self.ddp_norms, allreduce_with_norms)
        self.optimizer = make_optimizer(settings.optimizer, iter(self.params), hp)
        self.local_batch = hp.batch_size // world.size
        self.max_steps = settings.max_steps_for(hp.batch_size)
        # Common random numbers: every trial at one batch size sees the same batches,
        # and every worker draws the same global indices and takes its own slice.
        self.sampler = torch.Generator().manual_seed(1_000_003 * (hp.seed + 1) + hp.batch_size)
        # The Hessian batch of the curvature measurement has its own stream (the same on
        # every worker), so measuring curvature does not shift the training batches.
        self.hessian_sampler = seeded_generator(hp.seed, hp.batch_size, HESSIAN_STREAM)
        self.noise = NoiseScaleEMA(beta=settings.noise_ema)
        # Fed with (GᵀHG, tr(HΣ)): its g2 is GᵀHG, its trace_sigma tr(HΣ), its ratio B_noise.
        self.curvature = NoiseScaleEMA(beta=settings.noise_ema)
        self.train_loss = TrainLossWindow(torch.zeros((), dtype=torch.float64, device=device))
        self.skipped_steps = 0

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything the loop needs to continue after `step` as if never stopped.

        Reads the state only (the samplers' positions are copied, not advanced). The
        training-loss window is empty here: checkpoints are taken right after an
        evaluation, which empties it.
        """
        state: dict[str, Any] = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.get_state(),
            "hessian_sampler": self.hessian_sampler.get_state(),
            "noise": dataclasses.asdict(self.noise),
            "curvature": dataclasses.asdict(self.curvature),
            "skipped_steps": self.skipped_steps,
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Continue from `state_dict(step)`; returns that step."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler"])
        self.hessian_sampler.set_state(state["hessian_sampler"])
        self.noise = NoiseScaleEMA(**state["noise"])
        self.curvature = NoiseScaleEMA(**state["curvature"])
        self.skipped_steps = int(state["skipped_steps"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        return int(state["step"])

    def checkpoint_due(self, step: int) -> bool:
        """Every `checkpoint_every`-th evaluation (evaluations fall on multiples of
        eval_every); 0 turns checkpoints off."""
        every = self.settings.checkpoint_every * self.settings.eval_every
        return every > 0 and step > 0 and step % every == 0

    def autocast(self) -> AbstractContextManager[Any]:
        if self.settings.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def next_batch(self, generator: torch.Generator | None = None) -> Any:
        """This worker's slice of the next global batch drawn from `generator` (the sampler)."""
        n = len(self.workload.train_data)  # type: ignore[arg-type]
        indices = torch.randint(n, (self.hp.batch_size,), generator=generator or self.sampler)
        lo = self.world.rank * self.local_batch
        local = indices[lo : lo + self.local_batch]
        return to_device(fetch_batch(self.workload.train_data, local), self.device)

    def measures_noise(self, step: int) -> bool:
        every = self.settings.noise_every
        if every <= 0 or step % every:
            return False
        # One worker needs at least two examples to split into micro-batches.
        return self.world.size > 1 or self.hp.batch_size >= 2

    def measures_curvature(self, step: int) -> bool:
        every = self.settings.curvature_every
        if every <= 0 or step % every:
            return False
        return self.world.size > 1 or self.hp.batch_size >= 2

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        """Gradient of the mean loss over the global batch; norms on measured steps, and
        with `keep_grads` the small-batch gradient vectors too (no extra backward pass)."""
        if self.ddp_norms is not None:
            if measure:
                self.ddp_norms.start(self.device, keep_grads=keep_grads)
            with self.autocast():
                loss = self.workload.loss(self.trained, batch)
            loss.backward()
            self.add_train_loss(loss)
            if not measure:
                return Captured()
            small = [self.ddp_norms.local_grads(self.params)] if keep_grads else None
            return Captured(self.ddp_norms.local_pair(self.local_batch), small)
        if not measure:
            with self.autocast():
                loss = self.workload.loss(self.model, batch)
            loss.backward()
            self.add_train_loss(loss)
            return Captured()
        norms = MicroBatchNorms(self.params, keep_grads=keep_grads)
        losses = []
        parts = min(self.settings.micro_batches, self.hp.batch_size)
        with norms.capturing():
            for micro, size in split_batch(batch, parts):
                weight = size / self.hp.batch_size
                with norms.micro_batch(size, weight):
                    with self.autocast():
                        loss = self.workload.loss(self.model, micro) * weight
                    loss.backward()
                losses.append(loss.detach())
        self.add_train_loss(torch.stack(losses).sum())
        return Captured(norms.pair(), norms.take_grads() if keep_grads else None)

    def add_train_loss(self, loss: torch.Tensor) -> None:
        """Keep the training loss only where it is reported (no eval_data): it costs a
        few µs a step, 1-2% of a small-batch step."""
        if self.workload.eval_data is None:
            self.train_loss.add(loss)

    def measure_curvature(self, pair: NormPair, small: Sequence[GradVector]) -> CurvaturePair:
        """Quadratic forms vᵀHv of the step's two batch gradients, H from a fresh batch.

        Runs before the optimizer step (same weights as the gradients), in fp32 without
        autocast, with `torch.autograd.grad` only (`.grad` stays as it is), the global RNG
        and the module buffers (BatchNorm statistics) restored afterwards. Each worker takes
        its slice of the Hessian batch (McCandlish et al. 2018, App. A.1).
        """
        batch = self.next_batch(self.hessian_sampler)
        big = [p.grad for p in self.params]
        with self.side_effects_undone():
            loss = self.workload.loss(self.model, batch)
            return curvature_pair(
                loss, self.params, small, big, pair.b_small, pair.b_big, self.world.size
            )

    @contextlib.contextmanager
    def side_effects_undone(self) -> Iterator[None]:
        """A forward pass off the training path: the global RNG and the module buffers
        (BatchNorm statistics) are as they were afterwards."""
        buffers = [b.detach().clone() for b in self.model.buffers()]
        devices = [] if self.device.type == "cpu" else [self.device]
        try:
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                yield
        finally:
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)

    def step(self, step: int) -> None:
        lr = warmup_lr(step, self.hp.lr, self.hp.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        curvature = self.measures_curvature(step)
        # Curvature steps measure the norms too (same step, same weights).
        captured = self.backward(
            self.next_batch(), self.measures_noise(step) or curvature, keep_grads=curvature
        )
        if self.settings.precision == "bf16" and not math.isfinite(
            float(grad_sq_norm(self.params))
        ):
            self.skipped_steps += 1  # a non-finite step is skipped, not applied
            return
        pair = captured.pair
        if pair is not None and captured.small_grads is not None:
            # Every worker gets here on the same steps (the skip above is decided on the
            # all-reduced gradient), as the all-reduce inside requires.
            forms = self.measure_curvature(pair, captured.small_grads)
            if forms.is_finite():
                self.curvature.update(forms.ghg(), forms.trace_h_sigma())
        self.optimizer.step()
        if pair is not None and math.isfinite(pair.sq_small) and math.isfinite(pair.sq_big):
            self.noise.update(pair.g2(), pair.trace_sigma())

    def average_noise_over_workers(self) -> None:
        """Make the workers' noise-scale averages one (a no-op on one worker).

        Between evaluations each DDP worker folds its own local |G_small|² into its own
        averages (`DDPNormState.local_pair`): no collective on a measured step. The
        two-batch estimates are linear in |G_small|² and every worker's moving averages
        take the same weights on the same steps (a non-finite pair, the only one skipped,
        is non-finite everywhere, as the all-reduced |G_big|² is), so the mean of the
        workers' averages equals the average of the workers' mean pairs: what one
        all-reduce per measured step gave, for one per evaluation."""
        if self.ddp_norms is None:
            return
        averages = torch.tensor(
            [self.noise.g2_avg, self.noise.trace_sigma_avg], dtype=torch.float64
        ).to(self.device)
        dist.all_reduce(averages, op=dist.ReduceOp.SUM)
        self.noise.g2_avg, self.noise.trace_sigma_avg = (averages / self.world.size).tolist()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        """(loss, workload metrics); loss over eval_data, else the recent training loss.
        The workers' noise-scale averages are made one first: reports and checkpoints
        follow evaluations."""
        self.average_noise_over_workers()
        eval_data = self.workload.eval_data
        initial = None
        if self.workload.eval_loss is None and eval_data is None and self.train_loss.count == 0:
            initial = self.initial_train_loss()  # in train mode, as the later windows are
        self.model.eval()
        try:
            if self.workload.eval_loss is not None:
                loss = float(self.workload.eval_loss(self.model))
            elif initial is not None:
                loss = initial
            elif eval_data is None:
                loss = self.train_loss.take(self.world)
            else:
                n = len(eval_data)  # type: ignore[arg-type]
                loss = self.mean_loss(eval_data, torch.arange(n))
            metrics = dict(self.workload.metrics(self.model)) if self.workload.metrics else {}
        finally:
            self.model.train()
        reserved = sorted(name for name in metrics if keys.is_reserved(name))
        if reserved:
            raise TrialInputError(
                f"workload metric(s) {', '.join(map(repr, reserved))} would overwrite what "
                "noisetune reports under that name: rename them"
            )
        return loss, {k: float(v) for k, v in metrics.items()}

    def mean_loss(self, dataset: Dataset[Any], indices: torch.Tensor) -> float:
        """The mean loss over `dataset` at `indices`, in chunks of EVAL_CHUNK."""
        total = 0.0
        for lo in range(0, len(indices), EVAL_CHUNK):
            chunk = indices[lo : lo + EVAL_CHUNK]
            batch = to_device(fetch_batch(dataset, chunk), self.device)
            total += float(self.workload.loss(self.model, batch)) * len(chunk)
        return total / len(indices)

    def initial_train_loss(self) -> float:
        """Without eval_data, the step-0 loss: the mean training loss at the initial
        weights over the whole training set when it holds at most INITIAL_LOSS_EXAMPLES,
        else over that many examples drawn from a stream of the training seed alone (every
        trial of a seed starts from the same value whatever its batch size). Each worker
        takes its share of the examples; the workers' sums are added. Taken as the
        training losses after it are (train mode: dropout, batch statistics), with no
        gradient, and with the torch RNG and the module buffers as they were before."""
        with self.side_effects_undone(), torch.no_grad():
            return self._initial_train_loss()

    def _initial_train_loss(self) -> float:
        n = len(self.workload.train_data)  # type: ignore[arg-type]
        if n <= INITIAL_LOSS_EXAMPLES:
            indices = torch.arange(n)
        else:
            generator = seeded_generator(self.hp.seed, INITIAL_LOSS_STREAM)
            indices = torch.randint(n, (INITIAL_LOSS_EXAMPLES,), generator=generator)
        share = indices.tensor_split(self.world.size)[self.world.rank]
        total = self.mean_loss(self.workload.train_data, share) * len(share) if len(share) else 0.0
        if self.world.size == 1:
            return total / len(indices)
        summed = torch.tensor([total], dtype=torch.float64, device=self.device)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return float(summed[0]) / len(indices)

    def target_value(self, loss: float, metrics: Mapping[str, float]) -> float:
        name = self.settings.target_metric
        if name == keys.LOSS:
            return loss
        if name not in metrics:
            known = ", ".join(sorted([keys.LOSS, *metrics]))
            raise TrialInputError(f"target metric {name!r} is not reported (known: {known})")
        return metrics[name]


def run_trial(
    settings: TrialSettings,
    hp: Hyperparameters,
    report: Report,
    device: torch.device | None = None,
    world: World | None = None,
    workload: Workload | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Train one configuration until it ends (trainables.judge); report every evaluation.

    Returns the last report. Every worker of a DDP trial calls this and takes the same
    decisions, since evaluations run on identical weights. With `checkpoints`, a trial
    that has one continues from it (its reports up to there were made before), and every
    `checkpoint_every`-th evaluation that does not end the trial is reported together
    with a checkpoint.
    """
    world = world or World()
    trial = Trial(settings, hp, device or torch.device("cpu"), world, workload)
    judge = Judge(
        settings.target,
        trial.max_steps,
        divergence_factor=settings.divergence_factor,
        patience_steps=settings.patience_steps_for(hp.batch_size),
        min_delta=settings.stall_min_delta,
        warmup_steps=hp.warmup_steps,
    )
    started = time.perf_counter()
    saved = checkpoints.restore() if checkpoints is not None else None
    # Wall time before a restart counts too (the work lost since the checkpoint does not).
    wall_before = float(saved["wall_s"]) if saved is not None else 0.0

    def wall_s() -> float:
        return wall_before + time.perf_counter() - started

    def result(step: int, loss: float, metrics: Mapping[str, float]) -> dict[str, Any]:
        value = trial.target_value(loss, metrics)
        verdict = judge.judge(step, loss, value)
        reached = verdict.status == keys.REACHED
        return {
            keys.STEP: step,
            keys.EXAMPLES: step * hp.batch_size,
            keys.LOSS: loss,
            keys.LR: warmup_lr(max(step, 1), hp.lr, hp.warmup_steps),
            keys.B_SIMPLE: trial.noise.b_simple,
            keys.G2: trial.noise.g2,
            keys.TRACE_SIGMA: trial.noise.trace_sigma,
            keys.B_NOISE: trial.curvature.b_simple,
            keys.GHG: trial.curvature.g2,
            keys.TRACE_H_SIGMA: trial.curvature.trace_sigma,
            keys.EPS_MAX: float(eps_max(trial.noise.g2, trial.curvature.g2)),
            keys.TARGET_VALUE: value,
            keys.TRIAL_STATUS: verdict.status,
            keys.STEPS_TO_TARGET: step if reached else math.nan,
            keys.EXAMPLES_TO_TARGET: step * hp.batch_size if reached else math.nan,
            keys.STEPS_TO_TARGET_INTERP: verdict.steps_interp,
            keys.EXAMPLES_TO_TARGET_INTERP: verdict.steps_interp * hp.batch_size,
            keys.REASON: verdict.reason,
            keys.WALL_S: wall_s(),
            **metrics,
        }

    def state(step: int) -> dict[str, Any]:
        return {**trial.state_dict(step), "judge": judge.state_dict(), "wall_s": wall_s()}

    if saved is None:
        # Dropout and augmentation drawn in `loss` follow the trial, not the order in which
        # a reused actor ran trials before it. The same stream on every worker: their
        # evaluations, and so their decisions, must not differ.
        torch.manual_seed(stream_seed(hp.seed, hp.batch_size, TORCH_STREAM))
        loss, metrics = trial.evaluate()
        last = result(0, loss, metrics)
        report(last)
        step = 0
    else:
        step = trial.load_state_dict(saved)
        if "judge" in saved:
            judge.load_state_dict(saved["judge"])
        else:  # a checkpoint from before the judge: no record history, so no stall rule
            judge.initial_loss = float(saved.get("initial_loss", math.nan))
            judge.patience_steps = 0
        last = {keys.STEP: step, keys.TRIAL_STATUS: keys.RUNNING}
    while last[keys.TRIAL_STATUS] == keys.RUNNING:
        step += 1
        trial.step(step)
        if step % settings.eval_every == 0 or step >= trial.max_steps:
            loss, metrics = trial.evaluate()
            last = result(step, loss, metrics)
            if (
                checkpoints is not None
                and last[keys.TRIAL_STATUS] == keys.RUNNING
                and trial.checkpoint_due(step)
            ):
                checkpoints.report(last, functools.partial(state, step))
            else:
                report(last)
    return last
