"""GᵀHG and tr(HΣ) from Hessian-vector products at two batch sizes (DESIGN.md §1).

The two-batch trick of the noise scale with the H-inner product (McCandlish et al. 2018,
App. A.1): for v the gradient of a batch of b examples, E[vᵀHv] = GᵀHG + tr(HΣ)/b, so the
quadratic forms of a small- and a big-batch gradient give unbiased GᵀHG and tr(HΣ) by the
formulas of |G|² and tr(Σ). H must be independent of v (E[vᵀHv] needs E[H | v] = H), so
it is the Hessian of the loss on a separate batch: one gradient with create_graph=True,
then one Hessian-vector product per v (Pearlmutter 1994). Nothing here touches `.grad`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainables.measure.noise_capture import NormPair
from trainables.parts.data_sources import BatchSource, LoaderBatches, StreamBatches
from trainables.parts.forward import Forward
from trainables.parts.side_effects import side_effects_undone
from tuner.theory import ghg_estimate, trace_h_sigma_estimate

# One gradient vector: a tensor per parameter (None where the parameter got no gradient).
GradVector = Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class CurvaturePair:
    """Mean vᵀHv over the small-batch gradients, the big-batch gradient's, and the sizes.

    As for `NormPair`, unequal small batches of sizes n_i have E[mean_i v_iᵀHv_i] =
    GᵀHG + tr(HΣ)·mean_i(1/n_i), so `b_small` is the harmonic mean of the n_i.
    """

    b_small: float
    b_big: float
    h_small: float
    h_big: float

    def ghg(self) -> float:
        """Unbiased GᵀHG = (b_big·v_bigᵀHv_big − b_small·v_smallᵀHv_small)/(b_big − b_small)."""
        return float(ghg_estimate(self.b_small, self.b_big, self.h_small, self.h_big))

    def trace_h_sigma(self) -> float:
        """Unbiased tr(HΣ) = (v_smallᵀHv_small − v_bigᵀHv_big)/(1/b_small − 1/b_big)."""
        return float(trace_h_sigma_estimate(self.b_small, self.b_big, self.h_small, self.h_big))

    def is_finite(self) -> bool:
        return math.isfinite(self.h_small) and math.isfinite(self.h_big)


def hessian_quadratic_forms(
    loss: torch.Tensor, params: Sequence[torch.Tensor], vectors: Sequence[GradVector]
) -> torch.Tensor:
    """vᵀHv for each v in `vectors`, H = ∇²loss w.r.t. `params`, as a float64 tensor.

    One gradient of `loss` with create_graph=True, then H·v = ∇(∇loss·v) by one more
    `torch.autograd.grad` per v. Uses `autograd.grad` only, so `.grad` is left unchanged.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    # A gradient that does not depend on the parameters is a zero row (and column) of H.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    forms = torch.zeros(len(vectors), dtype=torch.float64, device=loss.device)
    for k, vector in enumerate(vectors):
        used = [i for i in live if vector[i] is not None]
        if not used:
            continue
        hv = torch.autograd.grad(
            [grads[i] for i in used],
            params,
            grad_outputs=[vector[i] for i in used],
            retain_graph=k < len(vectors) - 1,
            allow_unused=True,
        )
        total = forms.new_zeros(())
        for v, h in zip(vector, hv, strict=True):
            if v is not None and h is not None:
                total += torch.dot(v.reshape(-1), h.reshape(-1).to(v.dtype)).double()
        forms[k] = total
    return forms


def curvature_pair(
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    small: Sequence[GradVector],
    big: GradVector,
    b_small: float,
    b_big: float,
    world_size: int = 1,
) -> CurvaturePair:
    """The quadratic forms of the small-batch gradients (averaged) and the big-batch one.

    One worker: `small` holds each micro-batch's gradient, `big` the accumulated one.
    N DDP workers: `small` holds this worker's local gradient, `big` the all-reduced one,
    `loss` this worker's slice of the Hessian batch; one all-reduce of two scalars then
    averages the forms over the workers (the mean of the slices' Hessians is the Hessian
    of the whole batch). Every worker must call it on the same steps.
    """
    forms = hessian_quadratic_forms(loss, params, [*small, big]).detach()
    local = torch.stack([forms[:-1].mean(), forms[-1]])
    if world_size > 1:
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        local /= world_size
    h_small, h_big = local.tolist()
    return CurvaturePair(b_small=b_small, b_big=b_big, h_small=h_small, h_big=h_big)


class CurvatureProbe:
    """Measures a step's quadratic forms vᵀHv, H from a fresh batch of its own stream.

    Runs before the optimizer step (same weights as the gradients), in fp32 without
    autocast, with `torch.autograd.grad` only (`.grad` stays as it is), the global RNG
    and the module buffers (BatchNorm statistics) restored afterwards. Each worker takes
    its slice of the Hessian batch (McCandlish et al. 2018, App. A.1).
    """

    def __init__(
        self,
        forward: Forward,
        hessian_batches: BatchSource | StreamBatches | LoaderBatches,
        world_size: int,
    ) -> None:
        self.forward, self.hessian_batches, self.world_size = forward, hessian_batches, world_size

    def measure(self, pair: NormPair, small: Sequence[GradVector]) -> CurvaturePair:
        """The forms of the step's small-batch gradients `small` and of `.grad`."""
        model, params = self.forward.model, self.forward.params
        batch = self.hessian_batches.next()
        big = [p.grad for p in params]
        with side_effects_undone(model, self.hessian_batches.device):
            loss = self.forward.loss_fn(model, batch)  # fp32: no autocast
            return curvature_pair(
                loss, params, small, big, pair.b_small, pair.b_big, self.world_size
            )
