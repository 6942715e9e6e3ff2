"""A trial's evaluation: the loss (over eval_data, the workload's own, or the training
loss since the last evaluation), the workload's metrics, and the target metric's value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from trainables import keys
from trainables.errors import TrialInputError
from trainables.parts.batches import fetch_batch, to_device
from trainables.parts.data_sources import StreamBatches, is_stream
from trainables.parts.side_effects import side_effects_undone
from trainables.parts.streams import EVAL_SUBSET_STREAM, INITIAL_LOSS_STREAM, seeded_generator
from trainables.parts.world import World
from trainables.workload import Workload

EVAL_CHUNK = 8192  # examples per forward pass of an evaluation (spec: eval.batch_size)
INITIAL_LOSS_EXAMPLES = 1024  # at most this many training examples


def eval_indices(n: int, max_examples: int | None) -> torch.Tensor:
    """The eval examples every evaluation of every trial uses: all `n`, or the same
    `max_examples` of them drawn without replacement by one fixed stream (in order), so
    that trials are compared on one subset."""
    if max_examples is None or max_examples >= n:
        return torch.arange(n)
    drawn = torch.randperm(n, generator=seeded_generator(EVAL_SUBSET_STREAM))[:max_examples]
    return drawn.sort().values


@dataclass
class TrainLossWindow:
    """Mean training loss since the last evaluation, kept on the device (no host sync)."""

    total: torch.Tensor
    count: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().double()
        self.count += 1

    def take(self, world: World) -> float:
        if self.count == 0:  # every evaluation after step 0 follows a step
            raise RuntimeError("no training loss since the last evaluation")
        mean = world.mean(self.total / self.count)
        self.total = torch.zeros_like(self.total)
        self.count = 0
        return float(mean)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: the loss, the workload's metrics and the target metric's value."""

    loss: float
    metrics: dict[str, float]
    target_value: float


class Evaluator:
    """Evaluates a trial's model; every worker of a trial gets the same numbers."""

    def __init__(
        self,
        workload: Workload,
        model: torch.nn.Module,
        target_metric: str,
        seed: int,
        world: World,
        device: torch.device,
        max_examples: int | None = None,
        batch_size: int = EVAL_CHUNK,
    ) -> None:
        self.workload, self.model, self.target_metric = workload, model, target_metric
        self.seed, self.world, self.device = seed, world, device
        self.batch_size = batch_size
        self.train_loss = TrainLossWindow(torch.zeros((), dtype=torch.float64, device=device))
        eval_data = workload.eval_data
        self.eval_indices = (
            eval_indices(len(eval_data), max_examples)  # type: ignore[arg-type]
            if eval_data is not None
            else None
        )

    def add_train_loss(self, loss: torch.Tensor) -> None:
        """Keep the training loss only where it is reported (no eval_data): it costs a
        few µs a step, 1-2% of a small-batch step."""
        if self.workload.eval_data is None:
            self.train_loss.add(loss)

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Loss over eval_data, else the recent training loss; the workload's metrics."""
        eval_data = self.workload.eval_data
        initial = None
        if self.workload.eval_loss is None and eval_data is None and self.train_loss.count == 0:
            initial = self.initial_train_loss()  # in train mode, as the later windows are
        self.model.eval()
        try:
            if self.workload.eval_loss is not None:
                loss = float(self.workload.eval_loss(self.model))
            elif initial is not None:
                loss = initial
            elif eval_data is None or self.eval_indices is None:  # the one implies the other
                loss = self.train_loss.take(self.world)
            else:
                loss = self.shared_mean_loss(eval_data, self.eval_indices)
            metrics = dict(self.workload.metrics(self.model)) if self.workload.metrics else {}
        finally:
            self.model.train()
        reserved = sorted(name for name in metrics if keys.is_reserved(name))
        if reserved:
            raise TrialInputError(
                f"workload metric(s) {', '.join(map(repr, reserved))} would overwrite what "
                "noisetune reports under that name: rename them"
            )
        floats = {k: float(v) for k, v in metrics.items()}
        return Evaluation(loss, floats, self.target_value(loss, floats))

    def target_value(self, loss: float, metrics: Mapping[str, float]) -> float:
        name = self.target_metric
        if name == keys.LOSS:
            return loss
        if name not in metrics:
            known = ", ".join(sorted([keys.LOSS, *metrics]))
            raise TrialInputError(f"target metric {name!r} is not reported (known: {known})")
        return metrics[name]

    def mean_loss(self, dataset: Dataset[Any], indices: torch.Tensor) -> float:
        """The mean loss over `dataset` at `indices`, in chunks of `batch_size`."""
        total = 0.0
        for lo in range(0, len(indices), self.batch_size):
            chunk = indices[lo : lo + self.batch_size]
            batch = to_device(fetch_batch(dataset, chunk), self.device)
            total += float(self.workload.loss(self.model, batch)) * len(chunk)
        return total / len(indices)

    def shared_mean_loss(self, dataset: Dataset[Any], indices: torch.Tensor) -> float:
        """The mean loss at `indices`, each worker computing its share and the workers'
        sums added: every worker gets the whole mean for 1/world of the work."""
        if self.world.size == 1:
            return self.mean_loss(dataset, indices)
        share = indices.tensor_split(self.world.size)[self.world.rank]
        total = self.mean_loss(dataset, share) * len(share) if len(share) else 0.0
        summed = self.world.sum(torch.tensor([total], dtype=torch.float64, device=self.device))
        return float(summed[0]) / len(indices)

    def initial_train_loss(self) -> float:
        """Without eval_data, the step-0 loss: the mean training loss at the initial
        weights over the whole training set when it holds at most INITIAL_LOSS_EXAMPLES,
        else over that many examples drawn from a stream of the training seed alone (every
        trial of a seed starts from the same value whatever its batch size). Each worker
        takes its share of the examples; the workers' sums are added. Taken as the
        training losses after it are (train mode: dropout, batch statistics), with no
        gradient, and with the torch RNG and the module buffers as they were before."""
        with side_effects_undone(self.model, self.device), torch.no_grad():
            return self._initial_train_loss()

    def _initial_train_loss(self) -> float:
        train_data = self.workload.train_data
        if is_stream(train_data):  # the stream's first examples, each worker its slice
            count = INITIAL_LOSS_EXAMPLES - INITIAL_LOSS_EXAMPLES % self.world.size
            batch = StreamBatches(train_data, count, self.world, self.device).next()
            local = self.workload.loss(self.model, batch).double() * (count // self.world.size)
            return float(self.world.sum(local.reshape(1))[0]) / count
        n = len(train_data)  # type: ignore[arg-type]
        if n <= INITIAL_LOSS_EXAMPLES:
            indices = torch.arange(n)
        else:
            generator = seeded_generator(self.seed, INITIAL_LOSS_STREAM)
            indices = torch.randint(n, (INITIAL_LOSS_EXAMPLES,), generator=generator)
        return self.shared_mean_loss(self.workload.train_data, indices)
