"""Gradient norms at two batch sizes: hooks per micro-batch, and a DDP comm hook."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _helpers import run_gloo_workers
from _helpers import tiny_batch as _batch
from _helpers import tiny_loss as _loss
from _helpers import tiny_model as _model
from torch.nn.parallel import DistributedDataParallel

from trainables.measure.noise_capture import (
    DDPNormState,
    MicroBatchNorms,
    NormPair,
    allreduce_with_norms,
    grad_sq_norm,
)
from trainables.parts.batches import split_batch


def _sq(grads: tuple[torch.Tensor, ...]) -> float:
    return float(sum((g.double() ** 2).sum() for g in grads))


def micro_batch_pair(batch_size: int, parts: int) -> tuple[NormPair, list[float], float]:
    """The capture's NormPair, and explicit per-micro-batch and full-batch |g|²."""
    model = _model()
    params = list(model.parameters())
    batch = _batch(batch_size)
    explicit = [
        _sq(torch.autograd.grad(_loss(model, micro), params))
        for micro, _ in split_batch(batch, parts)
    ]
    full = _sq(torch.autograd.grad(_loss(model, batch), params))
    norms = MicroBatchNorms(params)
    with norms.capturing():
        for micro, size in split_batch(batch, parts):
            weight = size / batch_size
            with norms.micro_batch(size, weight):
                (_loss(model, micro) * weight).backward()
    return norms.pair(), explicit, full


@pytest.mark.parametrize(("batch_size", "parts"), [(8, 2), (12, 3), (9, 2), (64, 4)])
def test_micro_batch_hooks_match_explicit_gradients(batch_size: int, parts: int) -> None:
    pair, explicit, full = micro_batch_pair(batch_size, parts)
    sizes = [size for _, size in split_batch(_batch(batch_size), parts)]
    assert pair.sq_small == pytest.approx(sum(explicit) / len(explicit), rel=1e-5)
    assert pair.sq_big == pytest.approx(full, rel=1e-5)
    assert pair.b_big == batch_size
    assert pair.b_small == pytest.approx(len(sizes) / sum(1 / n for n in sizes))


def test_grad_sq_norm_sums_all_parameters() -> None:
    model = _model()
    _loss(model, _batch(4)).backward()
    expected = sum(float((p.grad.double() ** 2).sum()) for p in model.parameters())
    assert float(grad_sq_norm(list(model.parameters()))) == pytest.approx(expected, rel=1e-6)


def _ddp_worker(rank: int, world: int, port: int, batch_size: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(_model())
        state = DDPNormState(world)
        model.register_comm_hook(state, allreduce_with_norms)
        local = batch_size // world
        x, y = _batch(batch_size)
        state.start(torch.device("cpu"))
        _loss(
            model, (x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local])
        ).backward()
        pair = state.pair(local)
        grads = [p.grad.numpy().copy() for p in model.module.parameters()]
        queue.put((rank, pair, grads))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_agree_with_single_process_micro_batches() -> None:
    """The DDP comm hook and the micro-batch hooks see the same two batch sizes."""
    batch_size, world = 16, 2
    outputs = run_gloo_workers(_ddp_worker, world, batch_size)
    single, _, _ = micro_batch_pair(batch_size, world)
    for _, pair, _ in outputs:
        assert pair.b_small == single.b_small
        assert pair.b_big == single.b_big
        assert pair.sq_small == pytest.approx(single.sq_small, rel=1e-5)
        assert pair.sq_big == pytest.approx(single.sq_big, rel=1e-5)
        assert pair.g2() == pytest.approx(single.g2(), rel=1e-4)
        assert pair.trace_sigma() == pytest.approx(single.trace_sigma(), rel=1e-4)
    # The hook still averages the gradients as DDP's default would.
    model = _model()
    _loss(model, _batch(batch_size)).backward()
    for _, _, grads in outputs:
        for grad, p in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(torch.from_numpy(grad), p.grad, rtol=1e-5, atol=1e-6)
