"""Where a trial's batches come from, besides the in-process i.i.d. draw of `BatchSource`:

- `StreamBatches`: a streaming `IterableDataset` (no `len`), read in its own order. A
  global batch is the stream's next `batch_size` examples; each DDP worker keeps its
  slice of it. A dataset with a `shard(num_shards, index)` method (Hugging Face
  `datasets`' convention) is read sharded instead: each worker iterates its own shard and
  its next `batch_size / workers` examples are its slice, so no example is read twice. At
  the end of the stream it starts again (the next epoch). Shuffling is the dataset's.
- `LoaderBatches`: a map-style dataset whose `__getitem__` does real work (decoding,
  augmentation), fetched by a `torch.utils.data.DataLoader` with worker processes, pinned
  memory and prefetching. The indices are the same i.i.d. draw as `BatchSource`'s, from
  the same generator, so a trial trains on the same batches either way.

Both save and restore their position (`state_dict`), so a restarted trial continues with
the batches it would have seen.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.collate import default_collate

from trainables.parts.batches import BatchSource, to_device
from trainables.parts.world import World


def batch_source(
    dataset: Any,
    batch_size: int,
    generator: torch.Generator,
    world: World,
    device: torch.device,
    loader_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> BatchSource | StreamBatches | LoaderBatches:
    """The batches of `dataset`: a stream read in order, a DataLoader with
    `loader_workers` processes, or the in-process i.i.d. draw."""
    if is_stream(dataset):
        return StreamBatches(dataset, batch_size, world, device)
    draws = BatchSource(dataset, batch_size, generator, world, device)
    if loader_workers > 0:
        return LoaderBatches(draws, loader_workers, pin_memory, prefetch_factor)
    return draws


def is_stream(dataset: Any) -> bool:
    """Whether `dataset` is read as a stream (an IterableDataset, or anything without len)."""
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__")


class StreamBatches:
    """This worker's slices of global batches read in order from a stream (module doc)."""

    def __init__(self, dataset: Any, batch_size: int, world: World, device: torch.device) -> None:
        self.dataset, self.batch_size, self.world, self.device = dataset, batch_size, world, device
        self.local_batch = batch_size // world.size
        self.sharded = world.size > 1 and callable(getattr(dataset, "shard", None))
        self.position = 0  # examples this worker has taken from its stream
        self._iterator: Iterator[Any] | None = None

    @property
    def _per_batch(self) -> int:
        """Examples this worker reads from its stream per global batch."""
        return self.local_batch if self.sharded else self.batch_size

    def _source(self) -> Any:
        if self.sharded:
            return self.dataset.shard(num_shards=self.world.size, index=self.world.rank)
        return self.dataset

    def _take(self, count: int) -> list[Any]:
        examples: list[Any] = []
        fresh = False
        while len(examples) < count:
            if self._iterator is None:
                self._iterator, fresh = iter(self._source()), True
            got = list(itertools.islice(self._iterator, count - len(examples)))
            if not got:
                if fresh:
                    raise ValueError("the training stream yielded no examples")
                self._iterator = None  # the stream ended: the next epoch
                continue
            fresh = False
            examples.extend(got)
        self.position += count
        return examples

    def next(self) -> Any:
        """This worker's slice of the next global batch, collated, on the device."""
        examples = self._take(self._per_batch)
        if not self.sharded:
            lo = self.world.rank * self.local_batch
            examples = examples[lo : lo + self.local_batch]
        return to_device(default_collate(examples), self.device)

    def resize(self, batch_size: int) -> None:
        """Read global batches of `batch_size` from now on; the position (in examples this
        worker has read) is unchanged."""
        self.batch_size, self.local_batch = batch_size, batch_size // self.world.size

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip to `position`: the stream read again from its start (one pass over what
        was read; a stream that cannot seek is re-read)."""
        self._iterator, self.position = None, 0
        skip = int(state["position"])
        while skip:
            chunk = min(skip, 65_536)
            self._take(chunk)
            skip -= chunk


class _DrawnIndices:
    """The batch sampler of `LoaderBatches`: `BatchSource`'s index draws, its state before
    each draw kept until that batch is consumed (the loader prefetches ahead of the loop)."""

    def __init__(self, draws: BatchSource) -> None:
        self.draws = draws
        self.pending: collections.deque[torch.Tensor] = collections.deque()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            self.pending.append(self.draws.state_dict())
            yield self.draws.local_indices().tolist()


class LoaderBatches:
    """`BatchSource`'s batches fetched by a DataLoader's worker processes (module doc)."""

    def __init__(
        self, draws: BatchSource, workers: int, pin_memory: bool, prefetch_factor: int
    ) -> None:
        self.dataset, self.device = draws.dataset, draws.device
        self.sampler = _DrawnIndices(draws)
        self.options: dict[str, Any] = {
            "num_workers": workers,
            "pin_memory": pin_memory and draws.device.type == "cuda",
            "persistent_workers": workers > 0,
        }
        if workers > 0:
            self.options["prefetch_factor"] = prefetch_factor
        self._iterator: Iterator[Any] | None = None

    def next(self) -> Any:
        if self._iterator is None:
            # Its own generator for the workers' base seed: drawn from torch's global one,
            # it would shift the trial's dropout stream. Seeded by the position, so a
            # restarted trial's workers get the same seeds as the first run's there.
            state = self.sampler.draws.state_dict()
            seed = int(torch.randint(2**62, (1,), generator=torch.Generator().set_state(state)))
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                generator=torch.Generator().manual_seed(seed),
                **self.options,
            )
            self._iterator = iter(loader)
        batch = next(self._iterator)
        self.sampler.pending.popleft()
        return to_device(batch, self.device)

    def state_dict(self) -> torch.Tensor:
        """The generator's state before the next batch the loop has not taken."""
        if self.sampler.pending:
            return self.sampler.pending[0].clone()
        return self.sampler.draws.state_dict()

    def resize(self, batch_size: int) -> None:
        """Draw global batches of `batch_size` from now on: the batches prefetched at the
        old size are dropped and drawn again from the generator's state before them, so
        the indices are `BatchSource`'s."""
        state = self.state_dict()
        self.sampler.draws.resize(batch_size)
        self.load_state_dict(state)

    def load_state_dict(self, state: torch.Tensor) -> None:
        self._iterator = None  # its prefetched batches were drawn from the old state
        self.sampler.pending.clear()
        self.sampler.draws.load_state_dict(state)

    def close(self) -> None:
        self._iterator = None
