"""Squared gradient norms at two batch sizes, taken on the same weights in the same step.

Two ways, both without an extra backward pass (DESIGN.md §1, pitfall 5; a third, every
example's own norm, is trainables.measure.per_example):
- one worker: the batch is split into micro-batches whose gradients accumulate into
  `.grad`; per-parameter tensor hooks see each micro-batch's own gradient before it is
  accumulated, so |g_i|² is summed there and |g|² is read from `.grad` afterwards;
- N DDP workers: a communication hook sums each bucket's squared norm before (local
  batch) and after (global batch) the all-reduce; `local_pair` gives this worker's own
  pair without a collective (the loop averages over workers once per evaluation),
  `pair` averages the local norms over workers with one scalar all-reduce.
Either gives a `NormPair` for tuner.theory's two-batch estimators. With `keep_grads`
(curvature steps only) they also keep the small-batch gradient vectors themselves (each
micro-batch's, or the worker's local one) for the Hessian-vector products of
trainables.measure.curvature.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from tuner.theory import g2_estimate, trace_sigma_estimate


@dataclass(frozen=True)
class NormPair:
    """Mean |G_small|² over the small batches, |G_big|², and their batch sizes.

    With unequal small batches of sizes n_i, E[mean_i |g_i|²] = |G|² + tr(Σ)·mean_i(1/n_i),
    so `b_small` is the harmonic mean of the n_i.
    """

    b_small: float
    b_big: float
    sq_small: float
    sq_big: float

    def g2(self) -> float:
        """Unbiased |G|² (McCandlish et al. 2018, eq. A.2)."""
        return float(g2_estimate(self.b_small, self.b_big, self.sq_small, self.sq_big))

    def trace_sigma(self) -> float:
        """Unbiased tr(Σ) (McCandlish et al. 2018, eq. A.3)."""
        return float(trace_sigma_estimate(self.b_small, self.b_big, self.sq_small, self.sq_big))


@contextmanager
def removed_after(handles: "list[RemovableHandle]") -> "Iterator[None]":
    """Hooks registered for a block: removed when it ends, however it ends."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def grad_sq_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_p |p.grad|² as a float64 scalar tensor (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    norms = torch._foreach_norm(grads)
    return torch.stack([n.double() for n in norms]).pow(2).sum()


@dataclass
class MicroBatchNorms:
    """Per-micro-batch squared gradient norms, captured by parameter hooks.

    `with capture.capturing():` registers the hooks once for the step; inside it,
    `with capture.micro_batch(size, weight):` goes around each micro-batch's backward,
    where `weight` is the factor its mean loss was scaled by (n_i/B); then `pair()`.
    The hooks only collect the gradients; their norms are taken once per micro-batch
    with one fused call, and `pair()` reads every number back in one host sync. With
    `keep_grads`, `take_grads()` returns each micro-batch's own gradient g_i (a tensor
    per parameter in `params` order, None where it got none).
    """

    params: Sequence[torch.Tensor]
    keep_grads: bool = False
    _current: list[torch.Tensor] = field(default_factory=list)
    _kept: list[torch.Tensor | None] = field(default_factory=list)
    _weight: float = 1.0
    _per_batch: list[torch.Tensor] = field(default_factory=list)
    _sizes: list[int] = field(default_factory=list)
    _grads: list[list[torch.Tensor | None]] = field(default_factory=list)

    def _hook_for(self, index: int) -> "Callable[[torch.Tensor], None]":
        def hook(grad: torch.Tensor) -> None:
            self._current.append(grad)
            if self.keep_grads:
                # A new tensor: `grad` itself may become `.grad` and be accumulated into.
                self._kept[index] = grad.detach() / self._weight

        return hook

    @contextmanager
    def capturing(self) -> "Iterator[None]":
        with removed_after(
            [
                p.register_hook(self._hook_for(i))
                for i, p in enumerate(self.params)
                if p.requires_grad
            ]
        ):
            yield

    @contextmanager
    def micro_batch(self, size: int, weight: float) -> "Iterator[None]":
        self._current, self._weight = [], weight
        self._kept = [None] * len(self.params)
        yield
        norms = torch._foreach_norm(self._current)
        # The hooks saw weight·g_i; undo the scaling to get |g_i|².
        self._per_batch.append(torch.stack(norms).double().pow(2).sum() / weight**2)
        self._current = []
        self._sizes.append(size)
        if self.keep_grads:
            self._grads.append(self._kept)

    def take_grads(self) -> list[list[torch.Tensor | None]]:
        """Each captured micro-batch's gradient g_i (with `keep_grads`), and forget them."""
        grads, self._grads = self._grads, []
        return grads

    def pair(self, b_big: float | None = None) -> NormPair:
        """Combine the captured micro-batches with the accumulated gradient in `.grad`,
        the gradient of `b_big` examples (default: the captured micro-batches' total)."""
        sq_small, sq_big = torch.stack(
            [torch.stack(self._per_batch).mean(), grad_sq_norm(self.params)]
        ).tolist()
        sizes = self._sizes
        b_small = len(sizes) / sum(1.0 / n for n in sizes)
        self._per_batch, self._sizes = [], []
        return NormPair(b_small, float(sum(sizes) if b_big is None else b_big), sq_small, sq_big)


@dataclass
class DDPNormState:
    """State of `allreduce_with_norms`; `measuring` switches capture on for one step.

    With `keep_grads` (set by `start`) the hook also copies this worker's local gradient
    out of each bucket before the all-reduce; `local_grads(params)` returns it.
    """

    world_size: int
    measuring: bool = False
    keep_grads: bool = False
    local_sq: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    global_sq: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    kept: dict[int, torch.Tensor] = field(default_factory=dict)  # by id(param)

    def start(self, device: torch.device, keep_grads: bool = False) -> None:
        self.measuring = True
        self.keep_grads = keep_grads
        self.kept = {}
        self.local_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.global_sq = torch.zeros((), dtype=torch.float64, device=device)

    def stop(self) -> None:
        """Stop capturing (without a pair)."""
        self.measuring = False

    def local_grads(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """This worker's local gradient kept by the hook, in `params` order, and forget it."""
        kept, self.kept, self.keep_grads = self.kept, {}, False
        return [kept.get(id(p)) for p in params]

    def local_pair(self, local_batch: int) -> "NormPair":
        """This worker's own |G_small|² with the all-reduced |G_big|², without a
        collective, and stop capturing. Its estimates are linear in sq_small, so their
        mean over the workers is the estimate from `pair` (the loop averages its moving
        averages over the workers instead, once per evaluation)."""
        self.measuring = False
        return NormPair(
            b_small=float(local_batch),
            b_big=float(local_batch * self.world_size),
            sq_small=float(self.local_sq),
            sq_big=float(self.global_sq),
        )

    def pair(self, local_batch: int) -> "NormPair":
        """Average the workers' local norms (one scalar all-reduce) and stop capturing."""
        local = self.local_sq.clone()
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        self.measuring = False
        return NormPair(
            b_small=float(local_batch),
            b_big=float(local_batch * self.world_size),
            sq_small=float(local) / self.world_size,
            sq_big=float(self.global_sq),
        )


def allreduce_with_norms(
    state: DDPNormState,
    bucket: dist.GradBucket,
) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: the default mean all-reduce, plus squared norms before and after.

    DDP checks these annotations at run time, so this module must not use
    `from __future__ import annotations`.
    """
    buffer = bucket.buffer()
    if state.measuring:
        state.local_sq += torch.linalg.vector_norm(buffer, dtype=torch.float32).double() ** 2
        if state.keep_grads:  # `gradients()` are views of `buffer`: copy before the division
            for param, grad in zip(bucket.parameters(), bucket.gradients(), strict=True):
                state.kept[id(param)] = grad.clone()
    buffer.div_(state.world_size)  # SUM of pre-divided grads = mean; ReduceOp.AVG is NCCL-only
    future: Any = dist.all_reduce(buffer, async_op=True).get_future()

    def record_global(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        reduced = fut.value()[0]
        if state.measuring:
            state.global_sq += torch.linalg.vector_norm(reduced, dtype=torch.float32).double() ** 2
        return reduced

    result: torch.futures.Future[torch.Tensor] = future.then(record_global)
    return result
