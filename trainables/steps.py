"""How one optimisation step's gradient is computed: the only module that knows whether a
trial runs in one process or on several DDP workers.

A step strategy runs the forward and backward passes of one global batch, leaving the
gradient of its mean loss in `.grad`, and on measured steps returns the squared gradient
norms at two batch sizes taken in that same backward pass (trainables.measure.noise_capture):

- `OneProcess`: one backward pass. On measured steps, either every example's gradient
  norm is taken by layer hooks in that same pass (`PerExampleStep`: b_small = 1, b_big =
  B; trainables.measure.per_example), or the batch is split into `micro_batches` whose
  gradients accumulate (`MicroBatched`): the `noise_method`, where "auto" takes per-example
  norms for a model whose every trainable parameter they cover. Where the batch is larger
  than `max_micro_batch` (gradient accumulation), every step is split into micro-batches
  of at most that size, and a measured step captures their norms on the way: the noise
  scale costs no extra forward or backward pass;
- `DataParallel`: the model in DDP. On measured steps, each worker's per-example norms
  against the all-reduced gradient (`PerExampleStep`), or its communication hook's
  norms of each worker's local and the all-reduced global gradient; a worker's share
  larger than `max_micro_batch` is accumulated without synchronising until its last
  micro-batch, and then the hook measures;
- `LocalSGD` (spec `sync.period` H > 1): each worker steps on its own share as
  `OneProcess` does (accumulation, per-example or micro-batch norms at b_big = the share),
  and the parameters are averaged over the workers every H steps (Stich 2019), after
  `sync.warmup_steps` steps whose gradients are all-reduced (post-local SGD, Lin et al.
  2020). An evaluation at a step between two averages averages first: evaluations, and
  the decisions taken from them, need the same weights on every worker.

After each optimiser step the loop calls `after_step`, where a strategy synchronises
the workers' parameters if due, and counts its synchronisations (`syncs`: gradient
all-reduces and parameter averages; a DDP trial's steps, none on one process).

A new way to compute a step is a new class here.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from trainables.errors import TrialInputError
from trainables.measure.noise_capture import (
    DDPNormState,
    MicroBatchNorms,
    NormPair,
    allreduce_with_norms,
)
from trainables.measure.noise_meter import NoiseMeter
from trainables.measure.per_example import PerExampleNorms, uncovered
from trainables.parts.batches import split_batch
from trainables.parts.forward import Forward
from trainables.parts.world import World

logger = logging.getLogger(__name__)

# What measured a trial's noise scale (its reports' `noise_method`).
PER_EXAMPLE = "per_example"  # every example's norm, by layer hooks (b_small = 1)
MICRO_BATCH = "micro_batch"  # the batch split into micro-batches (b_small = B/parts)
WORKER_BATCHES = "worker_batches"  # DDP: each worker's share against the global batch
NOT_MEASURED = "none"  # a batch of one example, or measure.noise_every 0

_PER_EXAMPLE_ACCUMULATED = (
    "measure.method per_example with several workers needs each worker's share "
    "in one micro-batch (the DDP hook measures an accumulated share): use auto"
)


@dataclass
class Captured:
    """What one step's backward gave: the mean training loss of the global batch (this
    worker's share on DDP), and on measured steps the norm pair and, on curvature steps,
    the small-batch gradient vectors (each micro-batch's, or this worker's local one)."""

    loss: torch.Tensor
    pair: NormPair | None = None
    small_grads: list[list[torch.Tensor | None]] | None = None


class StepStrategy(Protocol):
    """Computes the gradient of one global batch into `.grad` (see the module docstring)."""

    can_measure: bool  # whether a step can give two batch sizes (one example cannot)
    method: str  # what measures the norms now: PER_EXAMPLE, MICRO_BATCH, WORKER_BATCHES
    curvature_method: str  # what measures them on curvature steps (small-batch vectors)

    def resize(self, batch_size: int) -> None:
        """Global batches of `batch_size` examples from now on (a batch-size schedule)."""

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        """Gradient of the mean loss over the global batch; norms when `measure`, and
        with `keep_grads` the small-batch gradient vectors too (no extra backward)."""

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """Make the workers' noise-scale averages one (before reports and checkpoints)."""

    syncs: int  # the workers' synchronisations so far (gradient all-reduces, averages)
    local_steps: bool  # whether the workers step apart between synchronisations

    def after_step(self, step: int, evaluates: bool) -> bool:
        """After the optimiser's `step` (evaluated after it where `evaluates`): average
        the parameters where due; whether the workers are synchronised at this step."""

    def restart(self, step: int, syncs: int) -> None:
        """Continue after `step` of a checkpoint, `syncs` synchronisations made by then."""

    def gather_own_states(self, state: Any) -> list[Any] | None:
        """Every worker's `state` where the workers' differ (local SGD's optimiser states),
        for rank 0's checkpoint; None where they are one. Every worker calls it."""


def plain_backward(forward: Forward, batch: Any) -> Captured:
    """One forward and backward pass of the whole batch, nothing measured."""
    with forward.autocast():
        loss = forward.loss_fn(forward.model, batch)
    loss.backward()
    return Captured(loss)


def accumulation_parts(batch_size: int, max_micro_batch: int | None) -> int:
    """How many micro-batches a batch of `batch_size` takes, each at most
    `max_micro_batch` examples (1: no accumulation)."""
    if max_micro_batch is None or batch_size <= max_micro_batch:
        return 1
    return math.ceil(batch_size / max_micro_batch)


def weighted_backward(forward: Forward, micro: Any, weight: float) -> torch.Tensor:
    """Backward of one micro-batch's mean loss times `weight` (its share of the batch),
    accumulating into `.grad`; the weighted loss, detached."""
    with forward.autocast():
        loss = forward.loss_fn(forward.model, micro) * weight
    loss.backward()
    return loss.detach()


def accumulated_backward(
    forward: Forward,
    batch: Any,
    batch_size: int,
    parts: int,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Captured:
    """The batch's gradient accumulated over `parts` micro-batches (each loss weighted by
    its share of the batch), nothing measured; every micro-batch but the last runs
    inside `no_sync` (DDP's: the gradients are all-reduced once, after the last)."""
    losses = []
    micro_batches = split_batch(batch, parts)
    for i, (micro, size) in enumerate(micro_batches):
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else no_sync()
        with sync:
            losses.append(weighted_backward(forward, micro, size / batch_size))
    return Captured(torch.stack(losses).sum())


@dataclass
class MicroBatched:
    """The batch split into `parts` micro-batches whose gradients accumulate into `.grad`,
    the squared norms of the first `captured` of them (all: None) taken on the way (no
    extra backward pass). Each micro-batch is an i.i.d. draw, so any of them gives an
    unbiased |G_small|²; capturing fewer costs less, for more variance."""

    forward: Forward
    parts: int
    captured: int | None = None

    def backward(self, batch: Any, batch_size: int, keep_grads: bool) -> Captured:
        forward = self.forward
        norms = MicroBatchNorms(forward.params, keep_grads=keep_grads)
        micro_batches = split_batch(batch, min(self.parts, batch_size))
        count = len(micro_batches) if self.captured is None else self.captured
        losses = []
        with norms.capturing():
            for micro, size in micro_batches[:count]:
                with norms.micro_batch(size, size / batch_size):
                    losses.append(weighted_backward(forward, micro, size / batch_size))
        for micro, size in micro_batches[count:]:
            losses.append(weighted_backward(forward, micro, size / batch_size))
        pair = norms.pair(b_big=batch_size)
        return Captured(torch.stack(losses).sum(), pair, norms.take_grads() if keep_grads else None)


@dataclass
class PerExampleStep:
    """The batch's backward (accumulated over `parts` micro-batches), every example's
    squared gradient norm captured on the way by layer hooks: no extra pass. The first
    step also checks that the per-example gradients sum to the batch gradient;
    `problems` says what the hooks could not measure (then `backward` has no pair)."""

    forward: Forward
    parts: int
    max_rows: int | None = None  # examples measured per micro-batch (None: all)
    loose_check: bool = False  # bf16: autograd's own gradients are rounded
    verified: bool = False

    def __post_init__(self) -> None:
        model = _unwrapped(self.forward.model)
        self.norms = PerExampleNorms(model, self.forward.params, self.max_rows)
        self.names = {id(p): name for name, p in model.named_parameters()}

    @property
    def problems(self) -> list[str]:
        return self.norms.problems

    def backward(
        self,
        batch: Any,
        batch_size: int,
        b_big: int | None = None,
        reference: Callable[[], list[torch.Tensor | None]] | None = None,
    ) -> Captured:
        """The step on this process's `batch_size` examples; the pair against the
        gradient of `b_big` examples in `.grad` (default: batch_size; a DDP worker's
        global batch). The first step checks the per-example gradients against
        `reference()` (default: `.grad`; a DDP worker's local gradient)."""
        losses = []
        pieces = [(batch, batch_size)] if self.parts == 1 else split_batch(batch, self.parts)
        with self.norms.capturing(verify=not self.verified):
            for micro, size in pieces:
                with self.norms.micro_batch(size, size / batch_size):
                    losses.append(weighted_backward(self.forward, micro, size / batch_size))
        if not self.verified:
            dtype = torch.bfloat16 if self.loose_check else torch.float32
            given = None if reference is None else reference()
            # A non-finite gradient tells nothing: verify on the next measured step.
            self.verified = self.norms.verify(self.names, dtype, given)
        loss = torch.stack(losses).sum()
        if self.problems:
            return Captured(loss)
        return Captured(loss, self.norms.pair(b_big or batch_size))


class OneProcess:
    """A trial in one process: a plain step, its norms captured on measured steps per
    example or over micro-batches; with accumulation (`parts` > 1), every step
    micro-batched."""

    def __init__(
        self,
        forward: Forward,
        batch_size: int,
        micro_batches: int,
        max_micro_batch: int | None = None,
        noise_method: str = "auto",
        per_example_rows: int | None = None,
        loose_check: bool = False,
    ) -> None:
        self.forward = forward
        self.micro_batches, self.max_micro_batch = micro_batches, max_micro_batch
        self._size(batch_size)
        self.asked = noise_method
        self.per_example = per_example_step(
            forward, noise_method, self.parts, per_example_rows, loose_check
        )

    def _size(self, batch_size: int) -> None:
        """The batch size, its accumulation and its micro-batched measurement."""
        self.can_measure = batch_size >= 2  # two batch sizes need two examples
        self.batch_size = batch_size
        self.parts = accumulation_parts(batch_size, self.max_micro_batch)
        # Accumulating, a measured step captures `micro_batches` of its micro-batches.
        captured = self.micro_batches if self.parts > self.micro_batches else None
        self.micro_batched = MicroBatched(
            self.forward, max(self.micro_batches, self.parts), captured
        )

    def resize(self, batch_size: int) -> None:
        """Steps of `batch_size` examples from now on (a batch-size schedule): split into
        micro-batches of at most `max_micro_batch`, the norms' b_big the new size."""
        self._size(batch_size)
        if self.per_example is not None:
            self.per_example.parts = self.parts

    @property
    def method(self) -> str:
        """What measures this trial's noise scale now."""
        if not self.can_measure:
            return NOT_MEASURED
        return MICRO_BATCH if self.per_example is None else PER_EXAMPLE

    @property
    def curvature_method(self) -> str:
        return MICRO_BATCH if self.can_measure else NOT_MEASURED

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        # Curvature steps (keep_grads) need the small batches' gradient vectors.
        if measure and self.per_example is not None and not keep_grads:
            captured = self.per_example.backward(batch, self.batch_size)
            if self.per_example.problems:
                self._give_up_per_example(self.per_example.problems)
            return captured
        if measure:
            return self.micro_batched.backward(batch, self.batch_size, keep_grads)
        if self.parts > 1:
            return accumulated_backward(self.forward, batch, self.batch_size, self.parts)
        return plain_backward(self.forward, batch)

    def _give_up_per_example(self, problems: list[str]) -> None:
        """Measure with micro-batches from now on (auto), or stop the trial (asked for)."""
        give_up_per_example(self.asked, problems, "micro-batches")
        self.per_example = None

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """One process: nothing to merge."""

    syncs = 0  # nothing to synchronise
    local_steps = False

    def after_step(self, step: int, evaluates: bool) -> bool:
        return False

    def restart(self, step: int, syncs: int) -> None:
        """One process: no synchronisations to count."""

    def gather_own_states(self, state: Any) -> list[Any] | None:
        return None


class DataParallel:
    """A trial on several DDP workers. Each worker's per-example norms against the
    all-reduced gradient measure the norms (`PerExampleStep`, b_small = 1, b_big = B), or
    the comm hook does (each worker's share against the global batch); with gradient
    accumulation, always the comm hook."""

    def __init__(
        self,
        forward: Forward,
        world: World,
        device: torch.device,
        local_batch: int,
        max_micro_batch: int | None = None,
        noise_method: str = "auto",
        per_example_rows: int | None = None,
        loose_check: bool = False,
    ) -> None:
        self.world, self.device, self.local_batch = world, device, local_batch
        self.syncs = 0
        self.can_measure = True  # local and global batch
        self.norms = DDPNormState(world.size)
        self.module = DistributedDataParallel(forward.model)
        self.module.register_comm_hook(self.norms, allreduce_with_norms)
        self.forward = Forward(self.module, forward.params, forward.loss_fn, forward.autocast)
        self.params = forward.params
        self.max_micro_batch = max_micro_batch
        self.parts = accumulation_parts(local_batch, max_micro_batch)
        self.asked = noise_method
        if self.parts > 1 and noise_method == PER_EXAMPLE:
            raise TrialInputError(_PER_EXAMPLE_ACCUMULATED)
        self.per_example = (
            None
            if self.parts > 1
            else per_example_step(self.forward, noise_method, 1, per_example_rows, loose_check)
        )

    @property
    def method(self) -> str:
        """What measures this trial's noise scale now."""
        return WORKER_BATCHES if self.per_example is None else PER_EXAMPLE

    def resize(self, batch_size: int) -> None:
        """Global batches of `batch_size` from now on (a batch-size schedule): each
        worker's share accumulated above `max_micro_batch`, and then measured by the DDP
        hook (per-example norms need the share in one micro-batch)."""
        self.local_batch = batch_size // self.world.size
        self.parts = accumulation_parts(self.local_batch, self.max_micro_batch)
        if self.parts > 1 and self.per_example is not None:
            if self.asked == PER_EXAMPLE:
                raise TrialInputError(_PER_EXAMPLE_ACCUMULATED)
            logger.info("a worker's share of %d is accumulated: the DDP hook measures", batch_size)
            self.per_example = None

    curvature_method = WORKER_BATCHES

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        # Curvature steps (keep_grads) need the worker's local gradient vector.
        if measure and self.per_example is not None and not keep_grads:
            return self._per_example_backward(batch, self.per_example)
        if measure:
            self.norms.start(self.device, keep_grads=keep_grads)
        if self.parts > 1:
            # The hook runs once, on the accumulated local gradient: the local norm is
            # this worker's whole share, as without accumulation.
            captured = accumulated_backward(
                self.forward, batch, self.local_batch, self.parts, self.module.no_sync
            )
        else:
            captured = plain_backward(self.forward, batch)
        if not measure:
            return captured
        small = [self.norms.local_grads(self.params)] if keep_grads else None
        return Captured(captured.loss, self.norms.local_pair(self.local_batch), small)

    def _per_example_backward(self, batch: Any, step: PerExampleStep) -> Captured:
        """This worker's per-example norms against the all-reduced gradient; the first
        step checks them against this worker's local gradient, which the comm hook keeps
        before the all-reduce."""
        reference = None
        if not step.verified:
            self.norms.start(self.device, keep_grads=True)

            def reference() -> list[torch.Tensor | None]:
                local = self.norms.local_grads(self.params)
                self.norms.stop()
                return local

        verifying = not step.verified
        b_big = self.local_batch * self.world.size
        captured = step.backward(batch, self.local_batch, b_big, reference)
        if verifying:
            # The check compares each worker's own gradients: the workers agree on its
            # outcome, so that they keep taking the same steps (and collectives).
            flags = torch.tensor([float(bool(step.problems)), float(not step.verified)])
            found, inconclusive = (self.world.mean(flags.to(self.device)) > 0).tolist()
            step.verified = not inconclusive
            if found and not step.problems:
                step.problems.append("another worker's per-example gradients failed the check")
        if step.problems:
            # Problems found by the hooks (shapes) are the same on every worker.
            give_up_per_example(self.asked, step.problems, "the DDP hook")
            self.per_example = None
        return captured

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """Between evaluations each DDP worker folds its own local |G_small|² into its own
        averages (`DDPNormState.local_pair`): no collective on a measured step. The
        two-batch estimates are linear in |G_small|² and every worker's moving averages
        take the same weights on the same steps (a non-finite pair, the only one skipped,
        is non-finite everywhere, as the all-reduced |G_big|² is), so the mean of the
        workers' averages equals the average of the workers' mean pairs: what one
        all-reduce per measured step gave, for one per evaluation."""
        meter.average_over(self.world, self.device)

    local_steps = False

    def after_step(self, step: int, evaluates: bool) -> bool:
        """Every step all-reduced its gradient (skipped or not): one synchronisation."""
        self.syncs += 1
        return True

    def restart(self, step: int, syncs: int) -> None:
        self.syncs = syncs

    def gather_own_states(self, state: Any) -> list[Any] | None:
        """The workers step alike from one gradient: their states are one."""
        return None


class LocalSGD:
    """A trial on several workers that step apart (module docstring): every step one
    `OneProcess` step on this worker's share of the global batch (the same share DDP
    gives it from the same batch stream), its gradient all-reduced during the first
    `warmup_steps` steps (post-local SGD, Lin et al. 2020), and after warmup the
    parameters averaged over the workers at every step that is a multiple of `period`
    (Stich 2019, "Local SGD converges fast and communicates little"), or that an
    evaluation follows. Each optimiser's state (momentum) stays its worker's own, as in
    torch's PostLocalSGDOptimizer; the floating buffers (a batch norm's statistics) are
    averaged with the parameters, so that an evaluation sees one model.

    torch's PeriodicModelAverager counts its period from the end of the warmup; the
    period here counts from step 0, so that evaluations every multiple of `period` steps
    fall on averages and cost no synchronisation of their own.

    The norms are each worker's own at b_big = its share, folded into its own noise
    averages and merged at evaluations and decisions (as DataParallel's): the two-batch
    estimates are unbiased from any pair of batch sizes (McCandlish et al. 2018, App. A.1).
    """

    local_steps = True

    def __init__(
        self,
        forward: Forward,
        world: World,
        device: torch.device,
        batch_size: int,
        period: int,
        warmup_steps: int,
        micro_batches: int,
        max_micro_batch: int | None = None,
        noise_method: str = "auto",
        per_example_rows: int | None = None,
        loose_check: bool = False,
    ) -> None:
        if period < 2 or world.size < 2:
            raise ValueError(f"local SGD needs period > 1 and workers > 1, got {period}, {world}")
        self.world, self.device = world, device
        self.period, self.warmup_steps = period, warmup_steps
        self.local = OneProcess(
            forward,
            batch_size // world.size,
            micro_batches,
            max_micro_batch,
            noise_method,
            per_example_rows,
            loose_check,
        )
        self.params = forward.params
        buffers = [b for b in forward.model.buffers() if b.is_floating_point()]
        self.averaged = [*forward.params, *buffers]
        self.syncs, self.steps_done = 0, 0
        # One model on every worker to start from, as DDP's constructor makes it.
        with torch.no_grad():
            for tensor in forward.model.state_dict().values():
                world.broadcast(tensor)

    @property
    def can_measure(self) -> bool:
        return self.local.can_measure

    @property
    def method(self) -> str:
        return self.local.method

    @property
    def curvature_method(self) -> str:
        return self.local.curvature_method

    def resize(self, batch_size: int) -> None:
        """Global batches of `batch_size` from now on: shares of batch_size/workers."""
        self.local.resize(batch_size // self.world.size)

    def warming_up(self, step: int) -> bool:
        return step <= self.warmup_steps

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        """This worker's share's gradient (and norms), all-reduced during the warmup."""
        captured = self.local.backward(batch, measure, keep_grads)
        if self.warming_up(self.steps_done + 1):
            grads = []
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
            mean_over_workers(grads, self.world)
            self.syncs += 1
        return captured

    def after_step(self, step: int, evaluates: bool) -> bool:
        """Average the parameters at a multiple of `period` after the warmup, or before
        an evaluation where the workers stepped apart since the last average."""
        self.steps_done = step
        if self.warming_up(step):
            return True  # its gradient was all-reduced
        if step % self.period and not evaluates:
            return False
        mean_over_workers(self.averaged, self.world)
        self.syncs += 1
        return True

    def restart(self, step: int, syncs: int) -> None:
        self.steps_done, self.syncs = step, syncs

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """Each worker's averages of its own share's norms, made one (as DataParallel's)."""
        meter.average_over(self.world, self.device)

    def gather_own_states(self, state: Any) -> list[Any] | None:
        """Every worker's own `state` (its optimiser's: momentum), on the CPU."""
        return self.world.gather_objects(_on_cpu(state))


def mean_over_workers(tensors: list[torch.Tensor], world: World) -> None:
    """Replace each tensor by its mean over the workers, in place: one all-reduce of the
    tensors flattened together per dtype (every worker gets the same sum, bit for bit)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = world.mean(torch.cat([t.reshape(-1) for t in group]))
            for tensor, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
                tensor.copy_(part.view_as(tensor))


def _on_cpu(value: Any) -> Any:
    """`value` (nested dicts, lists, tuples) with every tensor copied onto the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def per_example_step(
    forward: Forward,
    noise_method: str,
    parts: int,
    per_example_rows: int | None,
    loose_check: bool,
) -> PerExampleStep | None:
    """The per-example measurement `noise_method` asks for: None for micro_batch, or for
    auto where the model's layers do not allow it; per_example where they do not is
    bad input."""
    if noise_method == MICRO_BATCH:
        return None
    problems = uncovered(_unwrapped(forward.model))
    if problems and noise_method == PER_EXAMPLE:
        raise TrialInputError(_cannot_measure(problems))
    if problems:
        return None
    return PerExampleStep(forward, parts, per_example_rows, loose_check)


def give_up_per_example(asked: str, problems: list[str], instead: str) -> None:
    """A trial whose per-example norms found `problems`: an error where per_example was
    asked for; under auto, a warning (the caller measures by `instead` from now on)."""
    if asked == PER_EXAMPLE:
        raise TrialInputError(_cannot_measure(problems))
    logger.warning("%s: measuring with %s instead", _cannot_measure(problems), instead)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, out of its DDP wrapper."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    return inner if isinstance(inner, torch.nn.Module) else model


def _cannot_measure(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"per-example gradient norms cannot measure this model: {problems[0]}{more}"


def step_strategy(
    forward: Forward,
    world: World,
    device: torch.device,
    batch_size: int,
    micro_batches: int,
    max_micro_batch: int | None = None,
    noise_method: str = "auto",
    per_example_rows: int | None = None,
    loose_check: bool = False,
    sync_period: int = 1,
    sync_warmup_steps: int = 0,
) -> OneProcess | DataParallel | LocalSGD:
    """The strategy for a trial of `batch_size` examples a step on `world`, each device
    computing at most `max_micro_batch` examples at once (None: no limit), measuring the
    noise scale by `noise_method` on one process (several: the DDP hook); several workers
    with `sync_period` > 1 take local steps (`LocalSGD`)."""
    if world.size > 1 and sync_period > 1:
        return LocalSGD(
            forward,
            world,
            device,
            batch_size,
            sync_period,
            sync_warmup_steps,
            micro_batches,
            max_micro_batch,
            noise_method,
            per_example_rows,
            loose_check,
        )
    if world.size > 1:
        local_batch = batch_size // world.size
        return DataParallel(
            forward,
            world,
            device,
            local_batch,
            max_micro_batch,
            noise_method,
            per_example_rows,
            loose_check,
        )
    return OneProcess(
        forward,
        batch_size,
        micro_batches,
        max_micro_batch,
        noise_method,
        per_example_rows,
        loose_check,
    )
