"""SGD-SaI: SGD with momentum and learning-rate Scaling at Initialization (Xu, Xiang, Cai,
Wen 2024, "No More Adam: Learning Rate Scaling at Initialization is All You Need",
arXiv:2412.11768, Algorithm 1; official code AnonymousAlethiometer/SGD_SaI v1.0.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import torch
from torch.optim.optimizer import ParamsT

GSNR_MAX = "gsnr_max"  # param-group key: max_q gsnr_q of the first step (None before it)


def gsnr(grad: torch.Tensor, eps: float) -> float:
    """g-SNR of one tensor's gradient (Algorithm 1, line 12): ‖g‖₂ / (std(g) + eps), the std
    (unbiased, as torch's default) over the tensor's entries; 0 for a single entry (the
    reference's `std().nan_to_num()`), so that tensor's g-SNR is |g|/eps."""
    if grad.is_sparse:
        raise RuntimeError("SGDSaI does not support sparse gradients")
    g = grad.detach()
    g = g if g.dtype in (torch.float32, torch.float64) else g.float()
    sigma = g.std().nan_to_num() if g.numel() > 1 else g.new_zeros(())
    return float(g.norm() / (sigma + eps))


class SGDSaI(torch.optim.Optimizer):
    """SGD-SaI (Xu et al. 2024, Algorithm 1). At the first step, per parameter tensor p
    with a gradient g:

        gsnr_p = ‖g‖₂ / (std(g) + eps),    scale_p = gsnr_p / max_q gsnr_q,

    frozen from then on: `state[p]["scale"]` (and `["gsnr"]`), the max in every param
    group's "gsnr_max", so `state_dict()` carries them and a resumed run does not
    recompute them from another gradient. Every step (lines 8-19):

        m ← g on the first step, else μ·m + (1 − μ)·g       (an EMA: m ≈ g, no 1/(1 − μ))
        p ← (1 − lr·λ)·p − lr·scale_p·m                     (decoupled weight decay)

    A tensor with no gradient at the first step is skipped then, as the reference does;
    where one arrives later its scale is computed from that first gradient against the
    first step's max (the reference keeps that max too, but fails with a KeyError there),
    so it can exceed 1. If every gradient of the first step is exactly zero, no step can
    move the weights but weight decay, and the scales wait for the first non-zero one
    (the reference divides 0 by 0 there).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float,
        weight_decay: float,
        eps: float = 1e-8,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"SGDSaI: lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGDSaI: momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"SGDSaI: weight_decay must be >= 0, got {weight_decay}")
        if not eps >= 0.0:
            raise ValueError(f"SGDSaI: eps must be >= 0, got {eps}")
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eps": eps,
            GSNR_MAX: None,
        }
        super().__init__(params, defaults)

    def gsnr_max(self) -> float | None:
        """The first step's max_q gsnr_q (None before the first step with a gradient)."""
        values = [g[GSNR_MAX] for g in self.param_groups if g.get(GSNR_MAX) is not None]
        return max(values) if values else None

    def _scale_first_step(self) -> float | None:
        """Every tensor's g-SNR and scale at the first step; the max, or None if there is
        no non-zero gradient yet."""
        found: list[tuple[torch.Tensor, float]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    found.append((p, gsnr(p.grad, group["eps"])))
        top = max((value for _, value in found), default=0.0)
        if not top > 0.0:
            return None
        for p, value in found:
            self.state[p]["gsnr"] = value
            self.state[p]["scale"] = value / top
        for group in self.param_groups:
            group[GSNR_MAX] = top
        return top

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update (the class docstring); `closure` re-evaluates the loss, as torch's."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        top = self.gsnr_max()
        if top is None:
            top = self._scale_first_step()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            decay = 1.0 - lr * group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "scale" not in state and top is not None:  # no gradient at the first step
                    state["gsnr"] = gsnr(p.grad, group["eps"])
                    state["scale"] = state["gsnr"] / top
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = p.grad.detach().clone()
                else:
                    buf.mul_(momentum).add_(p.grad, alpha=1.0 - momentum)
                if decay != 1.0:
                    p.mul_(decay)
                p.add_(buf, alpha=-lr * state.get("scale", 0.0))
        return loss
