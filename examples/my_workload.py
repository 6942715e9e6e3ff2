"""A complete user workload: a small MLP regressing a fixed random function.

Referenced from a spec as `workload: examples.my_workload:build` when noisetune runs
from the repository root (the current directory is importable, as with `python -m`),
or as `my_workload:build` from inside examples/.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from trainables import Workload


def build(args: dict[str, Any]) -> Workload:
    """args: dim (inputs), width (hidden units), n_train, noise (label noise std), seed."""
    dim = int(args.get("dim", 8))
    width = int(args.get("width", 32))
    n_train = int(args.get("n_train", 16384))
    noise = float(args.get("noise", 0.3))
    generator = torch.Generator().manual_seed(int(args.get("seed", 0)))

    teacher = torch.randn(dim, generator=generator) / dim**0.5

    def make(n: int) -> TensorDataset:
        x = torch.randn(n, dim, generator=generator)
        y = torch.sin(3 * x @ teacher) + noise * torch.randn(n, generator=generator)
        return TensorDataset(x, y.unsqueeze(1))

    with torch.random.fork_rng():  # build the model without touching the caller's RNG
        torch.manual_seed(int(args.get("seed", 0)))
        model = torch.nn.Sequential(
            torch.nn.Linear(dim, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)
        )

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    eval_data = make(4096)

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        x, y = eval_data.tensors
        with torch.no_grad():
            explained = 1 - float(((model(x) - y) ** 2).mean() / y.var())
        return {"r2": explained}

    return Workload(
        model=model, train_data=make(n_train), loss=loss, eval_data=eval_data, metrics=metrics
    )
