"""Batches: drawn i.i.d. from a map-style dataset, collated, moved, split into micro-batches."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from trainables.parts.world import World


def fetch_batch(dataset: Dataset[Any], indices: torch.Tensor) -> Any:
    """A collated batch of `dataset` at `indices` (fast path for TensorDataset)."""
    if isinstance(dataset, TensorDataset):
        return tuple(t[indices] for t in dataset.tensors)
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return default_collate(getitems(indices.tolist()))
    return default_collate([dataset[i] for i in indices.tolist()])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def split_batch(batch: Any, parts: int) -> list[tuple[Any, int]]:
    """Split a collated batch along dim 0 into `parts` micro-batches with their sizes."""
    size = batch_len(batch)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [
        (slice_batch(batch, lo, hi), hi - lo) for lo, hi in itertools.pairwise(bounds) if hi > lo
    ]


def batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return batch_len(next(iter(batch.values())))
    return batch_len(batch[0])


def slice_batch(batch: Any, lo: int, hi: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, Mapping):
        return {k: slice_batch(v, lo, hi) for k, v in batch.items()}
    return type(batch)(slice_batch(v, lo, hi) for v in batch)


class BatchSource:
    """This worker's slices of global batches of `batch_size` examples drawn with
    replacement from `dataset` by `generator`: every worker draws the same global indices
    and takes its own slice, so the workers together train on the one global batch."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        generator: torch.Generator,
        world: World,
        device: torch.device,
    ) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.world, self.device = world, device
        self.local_batch = batch_size // world.size

    def next(self) -> Any:
        """This worker's slice of the next global batch, on the device."""
        return to_device(fetch_batch(self.dataset, self.local_indices()), self.device)

    def local_indices(self) -> torch.Tensor:
        """Draw the next global batch's indices; this worker's slice of them."""
        n = len(self.dataset)  # type: ignore[arg-type]
        indices = torch.randint(n, (self.batch_size,), generator=self.generator)
        lo = self.world.rank * self.local_batch
        return indices[lo : lo + self.local_batch]

    def resize(self, batch_size: int) -> None:
        """Draw global batches of `batch_size` from now on (a batch-size schedule): the
        same generator draws more indices a batch, so the trial stays one stream of i.i.d.
        draws whatever its batch sizes, and its position is still the generator's state."""
        self.batch_size, self.local_batch = batch_size, batch_size // self.world.size

    def state_dict(self) -> torch.Tensor:
        """Its position: the generator's state."""
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
