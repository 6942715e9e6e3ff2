"""How one optimisation step's gradient is computed: the only module that knows whether a
trial runs in one process or on several DDP workers.

A step strategy runs the forward and backward passes of one global batch, leaving the
gradient of its mean loss in `.grad`, and on measured steps returns the squared gradient
norms at two batch sizes taken in that same backward pass (trainables.measure.noise_capture):

- `OneProcess`: one backward pass; on measured steps the batch is split into
  `micro_batches` whose gradients accumulate (`MicroBatched`). Where the batch is larger
  than `max_micro_batch` (gradient accumulation), every step is split into micro-batches
  of at most that size, and a measured step captures their norms on the way: the noise
  scale costs no extra forward or backward pass;
- `DataParallel`: the model in DDP, whose communication hook measures each worker's
  local and the all-reduced global norm; a worker's share larger than `max_micro_batch`
  is accumulated without synchronising until its last micro-batch.

A new way to compute a step (per-example norms, say) is a new class here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from trainables.measure.noise_capture import (
    DDPNormState,
    MicroBatchNorms,
    NormPair,
    allreduce_with_norms,
)
from trainables.measure.noise_meter import NoiseMeter
from trainables.parts.batches import split_batch
from trainables.parts.forward import Forward
from trainables.parts.world import World


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

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        """Gradient of the mean loss over the global batch; norms when `measure`, and
        with `keep_grads` the small-batch gradient vectors too (no extra backward)."""

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """Make the workers' noise-scale averages one (before reports and checkpoints)."""


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


class OneProcess:
    """A trial in one process: a plain step, micro-batched on measured steps; with
    accumulation (`parts` > 1), every step micro-batched, its norms captured when
    measured."""

    def __init__(
        self,
        forward: Forward,
        batch_size: int,
        micro_batches: int,
        max_micro_batch: int | None = None,
    ) -> None:
        self.can_measure = batch_size >= 2  # two micro-batches need two examples
        self.forward, self.batch_size = forward, batch_size
        self.parts = accumulation_parts(batch_size, max_micro_batch)
        # Accumulating, a measured step captures `micro_batches` of its micro-batches.
        captured = micro_batches if self.parts > micro_batches else None
        self.micro_batched = MicroBatched(forward, max(micro_batches, self.parts), captured)

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
        if measure:
            return self.micro_batched.backward(batch, self.batch_size, keep_grads)
        if self.parts > 1:
            return accumulated_backward(self.forward, batch, self.batch_size, self.parts)
        return plain_backward(self.forward, batch)

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """One process: nothing to merge."""


class DataParallel:
    """A trial on several DDP workers; the comm hook measures the norms."""

    def __init__(
        self,
        forward: Forward,
        world: World,
        device: torch.device,
        local_batch: int,
        max_micro_batch: int | None = None,
    ) -> None:
        self.world, self.device, self.local_batch = world, device, local_batch
        self.can_measure = True  # local and global batch
        self.norms = DDPNormState(world.size)
        self.module = DistributedDataParallel(forward.model)
        self.module.register_comm_hook(self.norms, allreduce_with_norms)
        self.forward = Forward(self.module, forward.params, forward.loss_fn, forward.autocast)
        self.params = forward.params
        self.parts = accumulation_parts(local_batch, max_micro_batch)

    def backward(self, batch: Any, measure: bool, keep_grads: bool = False) -> Captured:
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

    def merge_worker_averages(self, meter: NoiseMeter) -> None:
        """Between evaluations each DDP worker folds its own local |G_small|² into its own
        averages (`DDPNormState.local_pair`): no collective on a measured step. The
        two-batch estimates are linear in |G_small|² and every worker's moving averages
        take the same weights on the same steps (a non-finite pair, the only one skipped,
        is non-finite everywhere, as the all-reduced |G_big|² is), so the mean of the
        workers' averages equals the average of the workers' mean pairs: what one
        all-reduce per measured step gave, for one per evaluation."""
        meter.average_over(self.world, self.device)


def step_strategy(
    forward: Forward,
    world: World,
    device: torch.device,
    batch_size: int,
    micro_batches: int,
    max_micro_batch: int | None = None,
) -> OneProcess | DataParallel:
    """The strategy for a trial of `batch_size` examples a step on `world`, each device
    computing at most `max_micro_batch` examples at once (None: no limit)."""
    if world.size > 1:
        return DataParallel(forward, world, device, batch_size // world.size, max_micro_batch)
    return OneProcess(forward, batch_size, micro_batches, max_micro_batch)
