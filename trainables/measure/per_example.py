"""Each example's squared gradient norm, taken in the step's own backward pass.

Forward hooks on the covered layers (trainables.measure.layer_gradients) keep each call's
input and hook its output's gradient; in the backward pass the per-example squared norms
of the layer's parameters are formed from the two (a ghost norm where cheaper) and summed
over the parameters. A parameter used by several calls (a tied embedding and head, a layer
applied twice) has its per-example gradients instantiated for every use and summed before
the norm, at the end of the pass.

The norms feed the two-batch estimator with b_small = 1 and b_big = B (McCandlish et al.
2018, eqs. A.2–A.3): tr(Σ) from B samples per step instead of 2 micro-batches. They
assume what the estimator does: the loss is the mean over the batch of per-example losses
and examples do not interact (no BatchNorm in training mode). `uncovered` says why a
model cannot be measured this way; `PerExampleNorms.verify` checks once per trial that
the per-example gradients sum to the batch gradient (a parameter also used outside its
layer's forward would not).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainables.measure.layer_gradients import (
    chunks,
    covers,
    gradient_sum,
    gradients,
    parameter_names,
    square_norms,
)
from trainables.measure.noise_capture import NormPair, grad_sq_norm, removed_after

# How far the per-example gradients may sum from the batch gradient (relative norm) and
# still be called the same: float32 rounding is ~1e-6; bf16 autocast's own ~1e-2.
VERIFY_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 5e-2}


def uncovered(model: nn.Module) -> list[str]:
    """Why per-example norms cannot measure `model`: one line per parameter that no covered
    layer owns, and per layer that couples the examples of a batch; empty where they can."""
    problems = []
    covered: set[int] = set()
    for name, module in model.named_modules():
        where = name or type(model).__name__
        if isinstance(module, _BatchNorm) and module.training:
            problems.append(f"{where}: {type(module).__name__} couples the examples of a batch")
        own = parameter_names(module)
        reason = covers(module) if own else None
        if reason is not None:
            prefix = f"{name}." if name else ""
            problems += [f"{prefix}{p}: {reason}" for p in own]
        elif own:
            covered.update(id(getattr(module, p)) for p in own)
    for name, p in model.named_parameters():
        if (
            p.requires_grad
            and id(p) not in covered
            and not any(line.startswith(f"{name}:") for line in problems)
        ):
            problems.append(f"{name}: not owned by a layer with a per-example formula")
    return problems


@dataclass
class _Call:
    """One forward call of a covered layer whose parameter is shared: kept until the end
    of the pass, when every use's per-example gradients are summed."""

    module: nn.Module
    name: str
    x: torch.Tensor
    g: torch.Tensor


@dataclass
class PerExampleNorms:
    """Per-example squared gradient norms of `model`'s covered layers, captured by hooks.

    `with norms.capturing(verify=...):` registers the hooks for one step; inside it,
    `with norms.micro_batch(size, weight):` goes around each micro-batch's backward, where
    `weight` is the factor its mean loss was scaled by (size/B); then `pair(b_big)`. With
    `verify`, every example is measured and `verify(names)` compares the sum of the
    per-example gradients with `.grad`.
    """

    model: nn.Module
    params: Sequence[torch.Tensor]
    # Norms are taken for the first `max_rows` examples of each micro-batch (None: all):
    # they are i.i.d. draws, so any of them give an unbiased mean |g_i|², and the cost of
    # the layers over sequences stays bounded whatever B. A verified step sums the
    # gradients of all of them (chunked), for the comparison with `.grad`.
    max_rows: int | None = None
    _size: int = 0
    _rows: int = 0
    _scale: float = 1.0
    _uses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    _shared: dict[int, list[_Call]] = field(default_factory=lambda: defaultdict(list))
    _parts: list[torch.Tensor] = field(default_factory=list)  # [rows] per layer
    _per_example: list[torch.Tensor] = field(default_factory=list)
    _sums: dict[int, torch.Tensor] | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._layers = [
            (module, names)
            for module in self.model.modules()
            if (names := parameter_names(module)) and covers(module) is None
        ]

    @contextmanager
    def capturing(self, verify: bool = False) -> Iterator[None]:
        self._sums = {} if verify else None
        with removed_after(
            [
                module.register_forward_hook(self._forward_hook(names))
                for module, names in self._layers
            ]
        ):
            yield

    @contextmanager
    def micro_batch(self, size: int, weight: float) -> Iterator[None]:
        # The output gradient of example i is (weight/size)·∇ℓ_i: undo that factor.
        self._size, self._scale = size, (size / weight) ** 2
        self._rows = size if self.max_rows is None else min(size, self.max_rows)
        self._uses.clear()
        self._shared.clear()
        self._parts = []
        yield
        for calls in self._shared.values():
            self._add_shared(calls)
        self._shared.clear()
        if self._parts:
            total = torch.stack(self._parts).sum(0, dtype=torch.float64)
            self._per_example.append(total * self._scale)
        self._parts = []

    def _forward_hook(self, names: list[str]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            x = args[0] if args else None
            if not (
                isinstance(x, torch.Tensor)
                and x.dim() > 0
                and output.dim() > 0
                and x.shape[0] == output.shape[0] == self._size
            ):
                seen = (
                    f"{x.shape[0]} rows" if isinstance(x, torch.Tensor) and x.dim() else "no batch"
                )
                self.problems.append(
                    f"{type(module).__name__} called on {seen}, not batch-first on the "
                    f"{self._size} examples of the micro-batch"
                )
                return
            for name in names:
                self._uses[id(getattr(module, name))] += 1
            # Verifying, every row is kept for the sums; else only the rows measured.
            rows = self._size if self._sums is not None else self._rows
            x = x.detach()[:rows]
            output.register_hook(lambda g: self._backward(module, names, x, g[:rows]))

        return hook

    def _backward(
        self, module: nn.Module, names: list[str], x: torch.Tensor, g: torch.Tensor
    ) -> None:
        own = []
        for name in names:
            parameter = getattr(module, name)
            if self._uses[id(parameter)] > 1:
                self._shared[id(parameter)].append(_Call(module, name, x, g))
                continue
            own.append(name)
            if self._sums is not None:
                _add_sum(self._sums, parameter, gradient_sum(module, name, x, g))
        if own:
            rows = self._rows
            self._parts.append(square_norms(module, own, x[:rows], g[:rows]))

    def _add_shared(self, calls: list[_Call]) -> None:
        """A parameter used by several calls: each example's gradients summed over the
        calls, then its norm (a chunk of examples at a time)."""
        parameter = getattr(calls[0].module, calls[0].name)
        parts = []
        for rows in chunks(self._rows, parameter.numel()):
            summed = torch.stack(
                [gradients(c.module, c.name, c.x[rows], c.g[rows]) for c in calls]
            ).sum(0)
            parts.append(torch.linalg.vector_norm(summed.flatten(1), dim=1).square())
        self._parts.append(torch.cat(parts))
        if self._sums is not None:
            for c in calls:
                _add_sum(self._sums, parameter, gradient_sum(c.module, c.name, c.x, c.g))

    def verify(
        self,
        names: dict[int, str],
        dtype: torch.dtype = torch.float32,
        reference: Sequence[torch.Tensor | None] | None = None,
    ) -> bool:
        """After a verified step's backward: a problem for every parameter whose
        per-example gradients do not sum to its `.grad` (or to `reference`, the gradient
        of this process's own examples in `params` order: a DDP worker's local one).
        False where a gradient is not finite: nothing can be told from that step."""
        sums, self._sums = self._sums or {}, None
        tolerance = VERIFY_TOLERANCE.get(dtype, VERIFY_TOLERANCE[torch.bfloat16])
        grads = [p.grad for p in self.params] if reference is None else reference
        found = []
        for p, given in zip(self.params, grads, strict=True):
            grad = torch.zeros_like(p) if given is None else given
            total = sums.get(id(p), torch.zeros_like(grad, dtype=torch.float32))
            norms = (float(grad.float().norm()), float(total.norm()))
            if not all(math.isfinite(n) for n in norms):
                return False
            off = float((total - grad.float()).norm()) / max(*norms, 1e-30)
            if off > tolerance:
                found.append(
                    f"{names.get(id(p), 'a parameter')}: its per-example gradients sum to "
                    f"{off:.1%} off its gradient (used outside its layer's forward?)"
                )
        self.problems += found
        return True

    def pair(self, b_big: int) -> NormPair:
        """The step's mean per-example |g_i|² over the examples measured (b_small = 1)
        with |G|² of the `.grad` of `b_big` examples; one host sync."""
        per_example, self._per_example = self._per_example, []
        sq_small, sq_big = torch.stack(
            [torch.cat(per_example).mean(), grad_sq_norm(self.params)]
        ).tolist()
        return NormPair(1.0, float(b_big), sq_small, sq_big)


def _add_sum(sums: dict[int, torch.Tensor], parameter: torch.Tensor, total: torch.Tensor) -> None:
    key = id(parameter)
    sums[key] = total if key not in sums else sums[key] + total
