"""Workloads unlike the built-ins, written as a user would (`tests.user_workloads:NAME`).

- `no_eval`: noisy linear regression with a training set only (no eval_data), the
  reported loss being the mean training loss.
- `classifier`: a small MLP classifier with dropout whose target metric is an accuracy
  (higher is better).
- `failing_build`: a build that raises, as when its data is missing.
- `reserved_metric`: metrics named like a report key.
- `dead_net`: a classifier whose output is a constant (no parameter changes it): its loss
  stays at chance however it is trained.
- `streaming`: the regression of `no_eval` as an IterableDataset (no len), generated as
  it is read, `shardable` for one with a `shard(num_shards, index)` method; an eval set.
- `computed_items`: the same regression as a map-style dataset whose `__getitem__`
  computes each example (for a DataLoader with workers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from trainables import Workload


def _mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def no_eval(args: dict[str, Any]) -> Workload:
    """y = x·w* + noise, x ~ N(0, I_dim), a linear model from zero; no eval set."""
    dim, n = int(args.get("dim", 8)), int(args.get("n_train", 4096))
    generator = torch.Generator().manual_seed(int(args.get("seed", 0)))
    w = torch.randn(dim, 1, generator=generator)
    x = torch.randn(n, dim, generator=generator)
    y = x @ w + float(args.get("noise", 0.5)) * torch.randn(n, 1, generator=generator)
    model = torch.nn.Linear(dim, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return Workload(model=model, train_data=TensorDataset(x, y), loss=_mse)


def _blobs(n: int, classes: int, dim: int, generator: torch.Generator) -> TensorDataset:
    centres = 2.0 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(classes, (n,), generator=generator)
    return TensorDataset(centres[labels] + torch.randn(n, dim, generator=generator), labels)


def classifier(args: dict[str, Any]) -> Workload:
    """Gaussian blobs, an MLP with dropout; metrics: accuracy on the eval set."""
    classes, dim = int(args.get("classes", 4)), int(args.get("dim", 8))
    generator = torch.Generator().manual_seed(int(args.get("seed", 0)))
    train, evaluation = _blobs(4096, classes, dim, generator), _blobs(1024, classes, dim, generator)
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(32, classes),
    )

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        x, y = evaluation.tensors
        with torch.no_grad():
            return {"accuracy": float((model(x).argmax(1) == y).float().mean())}

    return Workload(model=model, train_data=train, loss=loss, eval_data=evaluation, metrics=metrics)


def failing_build(args: dict[str, Any]) -> Workload:
    raise FileNotFoundError("no dataset at /data/cifar10: download it first")


def reserved_metric(args: dict[str, Any]) -> Workload:
    """A regression that reports its own 'step' (and an 'accuracy') metric."""
    built = no_eval(args)
    return Workload(
        model=built.model,
        train_data=built.train_data,
        loss=built.loss,
        metrics=lambda model: {"step": 1.0, "accuracy": 0.5},
    )


class _Constant(torch.nn.Module):
    """Logits that no training changes: a parameter the output does not depend on."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.classes) + 0.0 * self.unused


def dead_net(args: dict[str, Any]) -> Workload:
    """Cross-entropy stuck at ln(classes) (chance), whatever the lr."""
    classes = int(args.get("classes", 10))
    generator = torch.Generator().manual_seed(0)
    data = _blobs(2048, classes, 4, generator)

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    return Workload(model=_Constant(classes), train_data=data, loss=loss, eval_data=data)


class _RegressionStream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """n examples of y = x·w + noise, generated as they are read, the same every pass;
    with `shards`, this stream is the examples i ≡ index (mod shards)."""

    def __init__(self, w: torch.Tensor, n: int, shards: int = 1, index: int = 0) -> None:
        self.w, self.n, self.shards, self.index = w, n, shards, index

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(11)
        dim = self.w.shape[0]
        for i in range(self.n):
            x = torch.randn(dim, generator=generator)
            y = x @ self.w + 0.5 * torch.randn(1, generator=generator)
            if i % self.shards == self.index:
                yield x, y


class _ShardableStream(_RegressionStream):
    def shard(self, num_shards: int, index: int) -> _ShardableStream:
        return _ShardableStream(self.w, self.n, num_shards, index)


def _regression_parts(args: dict[str, Any]) -> tuple[torch.Tensor, TensorDataset, Any]:
    dim = int(args.get("dim", 8))
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(dim, 1, generator=generator)
    x = torch.randn(1024, dim, generator=generator)
    evaluation = TensorDataset(x, x @ w + 0.5 * torch.randn(1024, 1, generator=generator))
    model = torch.nn.Linear(dim, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return w, evaluation, model


def streaming(args: dict[str, Any]) -> Workload:
    w, evaluation, model = _regression_parts(args)
    kind = _ShardableStream if args.get("shardable") else _RegressionStream
    stream = kind(w.squeeze(1), int(args.get("n_train", 2000)))
    return Workload(model=model, train_data=stream, loss=_mse, eval_data=evaluation)


class _Computed(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Example i computed on demand from its own seed (a stand-in for decoding a file)."""

    def __init__(self, w: torch.Tensor, n: int) -> None:
        self.w, self.n = w, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(self.w.shape[0], generator=generator)
        return x, x @ self.w + 0.5 * torch.randn(1, generator=generator)


def computed_items(args: dict[str, Any]) -> Workload:
    w, evaluation, model = _regression_parts(args)
    data = _Computed(w.squeeze(1), int(args.get("n_train", 4096)))
    return Workload(model=model, train_data=data, loss=_mse, eval_data=evaluation)
