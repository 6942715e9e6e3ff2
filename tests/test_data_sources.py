"""Batches from a stream (IterableDataset, no len) and from a DataLoader with worker
processes: the order, the DDP slices, the epochs, and a restart from a saved position."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from trainables.parts.batches import BatchSource
from trainables.parts.data_sources import LoaderBatches, StreamBatches, is_stream
from trainables.parts.world import World

CPU = torch.device("cpu")


class Counting(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """0, 1, ..., n-1 as (x, y) pairs, in order: a stream whose position is visible."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        return ((torch.tensor([float(i)]), torch.tensor(i)) for i in range(self.n))


class ShardedCounting(Counting):
    """With `shard(num_shards, index)`: shard k holds the examples i ≡ k (mod shards)."""

    def __init__(self, n: int, num_shards: int = 1, index: int = 0) -> None:
        super().__init__(n)
        self.num_shards, self.index = num_shards, index

    def shard(self, num_shards: int, index: int) -> ShardedCounting:
        return ShardedCounting(self.n, num_shards, index)

    def __iter__(self) -> Any:
        indices = range(self.index, self.n, self.num_shards)
        return ((torch.tensor([float(i)]), torch.tensor(i)) for i in indices)


def labels(batch: Any) -> list[int]:
    return [int(v) for v in batch[1]]


def test_what_is_a_stream() -> None:
    assert is_stream(Counting(3)) and not is_stream(TensorDataset(torch.zeros(3)))


def test_a_stream_is_read_in_order_and_starts_again_at_its_end() -> None:
    source = StreamBatches(Counting(10), 4, World(), CPU)
    assert [labels(source.next()) for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert source.state_dict() == {"position": 12}


def test_each_worker_keeps_its_slice_of_the_global_batch() -> None:
    slices = [StreamBatches(Counting(100), 6, World(rank, 3), CPU) for rank in range(3)]
    assert [labels(s.next()) for s in slices] == [[0, 1], [2, 3], [4, 5]]
    assert [labels(s.next()) for s in slices] == [[6, 7], [8, 9], [10, 11]]


def test_a_shardable_stream_is_read_one_shard_per_worker() -> None:
    slices = [StreamBatches(ShardedCounting(100), 4, World(rank, 2), CPU) for rank in range(2)]
    assert all(s.sharded for s in slices)
    assert [labels(s.next()) for s in slices] == [[0, 2], [1, 3]]
    assert [labels(s.next()) for s in slices] == [[4, 6], [5, 7]]
    assert not StreamBatches(ShardedCounting(100), 4, World(), CPU).sharded  # one worker


def test_a_restarted_stream_continues_where_it_was() -> None:
    source = StreamBatches(Counting(10), 4, World(), CPU)
    for _ in range(3):
        source.next()
    restored = StreamBatches(Counting(10), 4, World(), CPU)
    restored.load_state_dict(source.state_dict())
    assert labels(restored.next()) == labels(source.next()) == [2, 3, 4, 5]


def test_an_empty_stream_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="no examples"):
        StreamBatches(Counting(0), 4, World(), CPU).next()


class Slow(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A map-style dataset whose __getitem__ computes its example."""

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([float(i)]).sqrt(), torch.tensor(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_draws_the_batches_the_in_process_source_draws(workers: int) -> None:
    plain = BatchSource(Slow(), 8, torch.Generator().manual_seed(3), World(), CPU)
    loaded = LoaderBatches(
        BatchSource(Slow(), 8, torch.Generator().manual_seed(3), World(), CPU), workers, False, 2
    )
    try:
        for _ in range(5):
            assert labels(loaded.next()) == labels(plain.next())
        # Saved after 5 batches although the loader has prefetched beyond them.
        state = loaded.state_dict()
        assert torch.equal(state, plain.state_dict())
        again = LoaderBatches(
            BatchSource(Slow(), 8, torch.Generator(), World(), CPU), workers, False, 2
        )
        again.load_state_dict(state)
        assert labels(again.next()) == labels(plain.next())
        again.close()
    finally:
        loaded.close()


def test_a_loader_leaves_the_trial_s_torch_stream_alone() -> None:
    """Dropout draws from torch's global generator: starting the loader's workers must
    not draw from it."""
    loaded = LoaderBatches(
        BatchSource(Slow(), 8, torch.Generator().manual_seed(3), World(), CPU), 2, False, 2
    )
    torch.manual_seed(5)
    before = torch.get_rng_state()
    try:
        loaded.next()
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        loaded.close()


def test_a_loader_gives_each_worker_its_slice() -> None:
    whole = BatchSource(Slow(), 8, torch.Generator().manual_seed(4), World(), CPU)
    parts = [
        LoaderBatches(
            BatchSource(Slow(), 8, torch.Generator().manual_seed(4), World(r, 2), CPU), 0, False, 2
        )
        for r in range(2)
    ]
    assert labels(parts[0].next()) + labels(parts[1].next()) == labels(whole.next())


# --- whole trials ------------------------------------------------------------------------------


def _trial(
    workload: str, args: dict[str, Any], lr: float = 0.1, **fields: Any
) -> list[dict[str, Any]]:
    from _helpers import spec_trial_settings

    from trainables import keys
    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters

    s = spec_trial_settings(
        workload=f"tests.user_workloads:{workload}",
        workload_args=args,
        target_value=0.3,
        max_steps=300,
        eval_every=10,
        noise_every=2,
        **fields,
    )
    reports: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(32, lr, 0.0, 0), reports.append)
    assert reports[-1][keys.TRIAL_STATUS] == keys.REACHED, [r[keys.LOSS] for r in reports]
    return reports


def test_a_trial_trains_on_a_stream_through_its_epochs() -> None:
    """2,000 examples a pass, 32 a step: the stream starts again every 62 steps."""
    from trainables import keys

    reports = _trial("streaming", {"n_train": 2000}, lr=0.01)
    assert reports[-1][keys.STEP] > 62
    assert reports[-1][keys.B_SIMPLE] > 0  # the noise scale from the stream's batches


def test_a_loader_with_worker_processes_trains_as_the_trial_s_own_process() -> None:
    from trainables import keys

    plain = _trial("computed_items", {})
    loaded = _trial("computed_items", {}, loader_workers=2, prefetch_factor=4)
    assert [r[keys.LOSS] for r in plain] == [r[keys.LOSS] for r in loaded]


def _ddp_stream_worker(rank: int, world: int, port: int, shardable: bool, queue: Any) -> None:
    import tempfile

    import torch.distributed as dist
    from _helpers import spec_trial_settings

    from trainables import keys
    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-stream-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        s = spec_trial_settings(
            workload="tests.user_workloads:streaming",
            workload_args={"shardable": shardable},
            target_value=0.3,
            max_steps=200,
            eval_every=10,
            noise_every=2,
        )
        reports: list[dict[str, Any]] = []
        run_trial(s, Hyperparameters(32, 0.1, 0.0, 0), reports.append, world=World(rank, world))
        queue.put((rank, [(r[keys.LOSS], r[keys.TRIAL_STATUS]) for r in reports]))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("shardable", [False, True])
def test_two_ddp_workers_train_on_a_stream(shardable: bool) -> None:
    from _helpers import run_gloo_workers

    from trainables import keys

    outputs = dict(run_gloo_workers(_ddp_stream_worker, 2, shardable))
    assert outputs[0] == outputs[1]  # one decision on both workers
    assert outputs[0][-1][1] == keys.REACHED
