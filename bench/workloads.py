"""Workloads written for the bench only, which no strategy was tuned on
(`bench.workloads:NAME` in a spec, run from the repository root).

- `teacher_student`: a classifier learning a deeper teacher than the built-in
  teacher_mlp's (a 3-layer ReLU teacher on inputs with correlated features, 6 classes,
  labels drawn from the teacher's softmax), a one-hidden-layer GELU student with
  LayerNorm, eval cross-entropy as the loss the target reads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from trainables import Workload


def _teacher_data(
    n: int, dim: int, classes: int, generator: torch.Generator, teacher: list[torch.Tensor]
) -> TensorDataset:
    mixing = teacher[0]
    x = torch.randn(n, dim, generator=generator) @ mixing
    h = x
    for weight in teacher[1:-1]:
        h = torch.relu(h @ weight)
    logits = 3.0 * h @ teacher[-1]
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
    return TensorDataset(x, labels)


def teacher_student(args: dict[str, Any]) -> Workload:
    """See the module docstring; args: dim (16), classes (6), width (96), n_train (65536)."""
    dim, classes = int(args.get("dim", 16)), int(args.get("classes", 6))
    width, n_train = int(args.get("width", 96)), int(args.get("n_train", 65536))
    seed = int(args.get("seed", 0))
    fixed = torch.Generator().manual_seed(1234)  # the task is the same for every seed
    mixing = torch.eye(dim) + 0.5 * torch.randn(dim, dim, generator=fixed) / dim**0.5
    hidden = [torch.randn(dim, 48, generator=fixed) / dim**0.5]
    hidden.append(torch.randn(48, 48, generator=fixed) * (2 / 48) ** 0.5)
    head = torch.randn(48, classes, generator=fixed) / 48**0.5
    teacher = [mixing, *hidden, head]
    train = _teacher_data(n_train, dim, classes, torch.Generator().manual_seed(seed + 1), teacher)
    evaluation = _teacher_data(4096, dim, classes, torch.Generator().manual_seed(10_007), teacher)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, width),
        torch.nn.LayerNorm(width),
        torch.nn.GELU(),
        torch.nn.Linear(width, classes),
    )

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        x, y = evaluation.tensors
        with torch.no_grad():
            return {"accuracy": float((model(x).argmax(1) == y).float().mean())}

    return Workload(model=model, train_data=train, loss=loss, eval_data=evaluation, metrics=metrics)
