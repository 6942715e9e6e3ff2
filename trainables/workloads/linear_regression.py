"""Noisy anisotropic linear regression with exact noise statistics (DESIGN.md §1).

A fixed pool of `n_train` examples x = z·√λ (z ~ N(0, I), λ_i = i^-p), labels
y = x·w* + σ·ξ with w* ~ N(0, I), model `Linear(dim, 1, bias=False)` started at zero,
per-example loss ½(xᵀw − y)². Batches are drawn uniformly with replacement from the pool,
so the pool is also the eval set and the reported `loss` is the exact expected loss.

`metrics(model)` returns the exact gradient-noise statistics of that sampling
distribution at the current weights (DESIGN.md §1: G, Σ, H, B_simple, B_noise, ε_max),
in float64, at O(d²) per call; the reported loss is exact the same way (`eval_loss`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from trainables import keys
from trainables.workload import Workload
from trainables.workloads._args import float_arg, int_arg, merge_args

DEFAULTS: dict[str, Any] = {
    "dim": 100,
    "noise": 1.0,
    "spectrum_power": 1.0,
    "n_train": 65536,
    "seed": 0,
}

# Names of the metrics `metrics(model)` reports: "true_" + the estimator's own key.
TRUE_G2 = f"true_{keys.G2}"
TRUE_TRACE_SIGMA = f"true_{keys.TRACE_SIGMA}"
TRUE_B_SIMPLE = f"true_{keys.B_SIMPLE}"
TRUE_GHG = f"true_{keys.GHG}"
TRUE_TRACE_H_SIGMA = f"true_{keys.TRACE_H_SIGMA}"
TRUE_B_NOISE = f"true_{keys.B_NOISE}"
TRUE_EPS_MAX = f"true_{keys.EPS_MAX}"
METRIC_NAMES = (
    TRUE_G2,
    TRUE_TRACE_SIGMA,
    TRUE_B_SIMPLE,
    TRUE_GHG,
    TRUE_TRACE_H_SIGMA,
    TRUE_B_NOISE,
    TRUE_EPS_MAX,
)


def _check_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return merge_args("linear_regression", DEFAULTS, args)


_int_arg = partial(int_arg, "linear_regression")
_float_arg = partial(float_arg, "linear_regression")


def _ratio(num: float, den: float) -> float:
    """num/den, with inf for x/0 (x > 0) and nan for 0/0."""
    if den > 0.0:
        return num / den
    return math.inf if num > 0.0 else math.nan


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    prediction: torch.Tensor = model(x)
    loss: torch.Tensor = (prediction.squeeze(-1) - y).pow(2).mean() / 2
    return loss


class _Quadratic:
    """mean_i s_i·(x_iᵀw − y_i)² as wᵀAw − 2wᵀb + c, with A = Xᵀdiag(s)X/n, b = Xᵀ(s∘y)/n,
    c = mean s_i y_i²: exact, and O(d²) per call instead of O(n·d)."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, s: np.ndarray, a: np.ndarray | None = None
    ) -> None:
        n = x.shape[0]
        self.a = (x * s[:, None]).T @ x / n if a is None else a
        self.b = x.T @ (s * y) / n
        self.c = float(s @ (y * y)) / n

    def __call__(self, w: np.ndarray) -> float:
        return float(w @ (self.a @ w) - 2.0 * (w @ self.b) + self.c)


class _ExactStats:
    """Exact loss and noise statistics of uniform sampling from a fixed pool (x_i, y_i).

    With r_i = x_iᵀw − y_i and g_i = x_i r_i (H = XᵀX/n, q_i = x_iᵀHx_i):
    L = ½ mean r_i², G = Xᵀr/n = Hw − Xᵀy/n, tr Σ = mean r_i²|x_i|² − |G|²,
    tr(HΣ) = mean r_i² q_i − GᵀHG. Every mean over the pool of r_i² times a fixed weight
    is a quadratic form in w (`_Quadratic`), so each call costs O(d²), whatever n is.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        n = x.shape[0]
        self.h = x.T @ x / n
        self.xty = x.T @ y / n
        self.mean_r2 = _Quadratic(x, y, np.ones(n), a=self.h)
        self.mean_r2_sq_norm = _Quadratic(x, y, np.einsum("ij,ij->i", x, x))
        self.mean_r2_q = _Quadratic(x, y, np.einsum("ij,ij->i", x @ self.h, x))

    @staticmethod
    def _weights(model: torch.nn.Module) -> np.ndarray:
        weight = next(model.parameters())
        return weight.detach().to("cpu", torch.float64).numpy().reshape(-1)

    def loss(self, model: torch.nn.Module) -> float:
        """The exact mean loss over the pool, ½ mean r_i²."""
        return 0.5 * self.mean_r2(self._weights(model))

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        w = self._weights(model)
        g = self.h @ w - self.xty
        g2 = float(g @ g)
        ghg = float(g @ (self.h @ g))
        trace_sigma = self.mean_r2_sq_norm(w) - g2
        trace_h_sigma = self.mean_r2_q(w) - ghg
        return {
            TRUE_G2: g2,
            TRUE_TRACE_SIGMA: trace_sigma,
            TRUE_B_SIMPLE: _ratio(trace_sigma, g2),
            TRUE_GHG: ghg,
            TRUE_TRACE_H_SIGMA: trace_h_sigma,
            TRUE_B_NOISE: _ratio(trace_h_sigma, ghg),
            TRUE_EPS_MAX: _ratio(g2, ghg),
        }


@functools.lru_cache(maxsize=2)
def _pool(
    dim: int, noise: float, power: float, n_train: int, seed: int
) -> tuple[TensorDataset, _ExactStats]:
    """The example pool and its exact statistics: built once per process and arguments
    (read-only afterwards), since trials in a reused actor share them."""
    eigenvalues = np.arange(1, dim + 1, dtype=np.float64) ** -power
    w_star = np.random.default_rng(seed).standard_normal(dim)
    data_rng = np.random.default_rng([seed, 1])
    x64 = data_rng.standard_normal((n_train, dim)) * np.sqrt(eigenvalues)
    y64 = x64 @ w_star + noise * data_rng.standard_normal(n_train)

    # The model trains on float32; the exact statistics use the same float32 values.
    x = torch.from_numpy(x64.astype(np.float32))
    y = torch.from_numpy(y64.astype(np.float32))
    stats = _ExactStats(x.numpy().astype(np.float64), y.numpy().astype(np.float64))
    return TensorDataset(x, y), stats


def build(args: Mapping[str, Any]) -> Workload:
    """Build the noisy linear-regression workload (DESIGN.md §1).

    args: dim (100), noise σ (1.0), spectrum_power p (1.0; λ_i = i^-p), n_train (65536),
    seed (0). w* = default_rng(seed).standard_normal(dim); inputs and label noise come
    from other streams of the same seed.
    """
    a = _check_args(args)
    dim = _int_arg("dim", a["dim"], 1)
    noise = _float_arg("noise", a["noise"], minimum=0.0)
    power = _float_arg("spectrum_power", a["spectrum_power"])
    n_train = _int_arg("n_train", a["n_train"], 1)
    seed = _int_arg("seed", a["seed"], 0)

    data, stats = _pool(dim, noise, power, n_train, seed)
    # Created on the meta device so that nn.Linear's own init draws nothing from the global RNG.
    model = torch.nn.Linear(dim, 1, bias=False, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        model.weight.zero_()

    return Workload(
        model=model,
        train_data=data,
        loss=_loss,
        eval_data=data,
        metrics=stats,
        eval_loss=stats.loss,
    )
