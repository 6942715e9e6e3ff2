"""What an evaluation computes its loss over (`eval: {max_examples, batch_size}`): one
fixed subset for every trial, any forward-pass size, and each DDP worker its share."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _helpers import run_gloo_workers
from user_workloads import classifier

from trainables.parts.evaluator import Evaluator, eval_indices
from trainables.parts.world import World


def test_the_subset_is_one_for_every_trial_and_all_when_large_enough() -> None:
    subset = eval_indices(1024, 300)
    assert len(subset) == 300 and len(set(subset.tolist())) == 300
    assert torch.equal(subset, eval_indices(1024, 300))  # no trial seed in it
    assert bool((subset[1:] > subset[:-1]).all())  # in order
    assert torch.equal(eval_indices(1024, None), torch.arange(1024))
    assert torch.equal(eval_indices(1024, 5000), torch.arange(1024))


def _reference(max_examples: int | None) -> float:
    workload = classifier({"classes": 10, "dim": 4})
    x, y = workload.eval_data.tensors  # type: ignore[union-attr]
    index = eval_indices(len(x), max_examples)
    with torch.no_grad():
        workload.model.eval()
        return float(workload.loss(workload.model, (x[index], y[index])))


@pytest.mark.parametrize(("max_examples", "batch_size"), [(None, 8192), (None, 100), (300, 7)])
def test_the_loss_is_the_mean_over_the_subset_whatever_the_pass_size(
    max_examples: int | None, batch_size: int
) -> None:
    torch.manual_seed(0)  # the classifier's initial weights
    workload = classifier({"classes": 10, "dim": 4})
    evaluator = Evaluator(
        workload, workload.model, "loss", 0, World(), torch.device("cpu"), max_examples, batch_size
    )
    torch.manual_seed(0)
    assert evaluator.evaluate().loss == pytest.approx(_reference(max_examples), rel=1e-6)


def _worker(rank: int, world: int, port: int, queue: Any) -> None:
    import tempfile

    import torch.distributed as dist

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-eval-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        workload = classifier({"classes": 10, "dim": 4})
        evaluator = Evaluator(
            workload, workload.model, "loss", 0, World(rank, world), torch.device("cpu"), 301, 64
        )
        queue.put((rank, evaluator.evaluate().loss))
    finally:
        dist.destroy_process_group()


def test_ddp_workers_each_evaluate_their_share_and_agree() -> None:
    losses = dict(run_gloo_workers(_worker, 2))
    torch.manual_seed(0)
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx(_reference(301), rel=1e-6)
