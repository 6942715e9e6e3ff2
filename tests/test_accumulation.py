"""Gradient accumulation (`resources.max_micro_batch`): one optimiser step per global batch
computed over micro-batches of at most N examples, the noise scale from those micro-batches
for free; the same training as without, on one process and on two DDP workers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import run_gloo_workers, spec_trial_settings, tiny_batch, tiny_loss, tiny_model

from trainables import keys
from trainables.loop import run_trial
from trainables.parts.forward import Forward, autocast_for
from trainables.settings import Hyperparameters
from trainables.steps import OneProcess, accumulation_parts


def _forward(seed: int = 0) -> Forward:
    model = tiny_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    return Forward(model, params, tiny_loss, autocast_for("fp32", torch.device("cpu")))


def _grads(forward: Forward) -> list[torch.Tensor]:
    return [p.grad.clone() for p in forward.params if p.grad is not None]


@pytest.mark.parametrize(
    ("batch_size", "limit", "parts"),
    [(64, None, 1), (64, 64, 1), (64, 100, 1), (64, 16, 4), (64, 24, 3), (64, 1, 64), (7, 2, 4)],
)
def test_how_many_micro_batches(batch_size: int, limit: int | None, parts: int) -> None:
    assert accumulation_parts(batch_size, limit) == parts
    if limit is not None:
        assert math.ceil(batch_size / parts) <= limit  # every micro-batch fits


@pytest.mark.parametrize(("limit", "measure"), [(16, False), (24, False), (16, True), (5, True)])
def test_the_accumulated_gradient_is_the_batch_gradient(limit: int, measure: bool) -> None:
    batch = tiny_batch(64)
    plain, accumulated = _forward(), _forward()
    OneProcess(plain, 64, micro_batches=2).backward(batch, measure=False)
    captured = OneProcess(accumulated, 64, 2, max_micro_batch=limit).backward(batch, measure)
    for a, b in zip(_grads(plain), _grads(accumulated), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    if measure:  # the norms of the micro-batches that fit, no extra pass
        assert captured.pair is not None
        assert captured.pair.b_big == 64 and captured.pair.b_small <= limit


def _run(max_micro_batch: int | None, noise_every: int) -> list[dict[str, Any]]:
    s = spec_trial_settings(
        workload_args={"dim": 16, "noise": 0.5, "n_train": 8192},
        target_value=0.2,
        max_steps=200,
        eval_every=10,
        noise_every=noise_every,
        max_micro_batch=max_micro_batch,
    )
    reports: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(256, 0.3, 0.9, 10), reports.append)
    return reports


def test_an_accumulated_trial_trains_as_the_whole_batch_does() -> None:
    plain, accumulated = _run(None, 0), _run(32, 0)
    assert [r[keys.STEP] for r in plain] == [r[keys.STEP] for r in accumulated]
    assert plain[-1][keys.TRIAL_STATUS] == accumulated[-1][keys.TRIAL_STATUS] == keys.REACHED
    for a, b in zip(plain, accumulated, strict=True):
        assert b[keys.LOSS] == pytest.approx(a[keys.LOSS], rel=1e-4)


def test_an_accumulated_trial_measures_the_noise_scale_on_its_micro_batches() -> None:
    reports = _run(32, 4)
    b_simple = [r[keys.B_SIMPLE] for r in reports[1:]]
    assert all(math.isfinite(b) and b > 0 for b in b_simple)
    unmeasured = _run(32, 0)
    assert math.isnan(unmeasured[-1][keys.B_SIMPLE])
    # Measuring changes nothing of the training: the gradient is the same sum.
    for a, b in zip(reports, unmeasured, strict=True):
        assert a[keys.LOSS] == pytest.approx(b[keys.LOSS], rel=1e-6)


def _ddp_worker(rank: int, world: int, port: int, limit: int | None, queue: Any) -> None:
    import tempfile

    import torch.distributed as dist

    from trainables.parts.world import World

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-accumulation-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        s = spec_trial_settings(
            workload_args={"dim": 16, "noise": 0.5, "n_train": 8192},
            target_value=0.2,
            max_steps=60,
            eval_every=10,
            noise_every=2,
            max_micro_batch=limit,
            noise_method="micro_batch",  # the hook on both (accumulated shares: always)
        )
        reports: list[dict[str, Any]] = []
        run_trial(s, Hyperparameters(128, 0.3, 0.0, 0), reports.append, world=World(rank, world))
        queue.put((rank, [(r[keys.LOSS], r[keys.B_SIMPLE]) for r in reports]))
    finally:
        dist.destroy_process_group()


def test_two_ddp_workers_accumulate_their_shares_and_measure_as_before() -> None:
    """Each worker's 64 examples in 4 micro-batches of 16, all-reduced once: the same
    losses, and the same noise scale (local share vs global batch), as without."""
    plain = dict(run_gloo_workers(_ddp_worker, 2, None))
    accumulated = dict(run_gloo_workers(_ddp_worker, 2, 16))
    assert np.array_equal(accumulated[0], accumulated[1], equal_nan=True)  # one decision
    for (loss_a, b_a), (loss_b, b_b) in zip(plain[0], accumulated[0], strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-4)
        if math.isfinite(b_a):
            assert b_b == pytest.approx(b_a, rel=1e-3)


@pytest.mark.parametrize("method", ["micro_batch", "per_example"])
@pytest.mark.parametrize("max_micro_batch", [32, 16])
def test_capturing_a_few_micro_batches_still_measures_the_true_noise_scale(
    max_micro_batch: int, method: str
) -> None:
    """B = 256 in 8 or 16 micro-batches, 2 of them captured a step (micro_batch) or the
    first per_example_rows examples of each (per_example): B_simple matches
    linear_regression's exact value where it is stationary (a tiny lr keeps the weights
    where they start), as the whole-batch split does."""
    s = spec_trial_settings(
        workload_args={"dim": 16, "noise": 0.5, "n_train": 8192},
        target_value=0.0,
        max_steps=300,
        eval_every=100,
        noise_every=1,
        patience_steps=0,
        max_micro_batch=max_micro_batch,
        noise_method=method,
    )
    reports: list[dict[str, Any]] = []
    run_trial(s, Hyperparameters(256, 1e-5, 0.0, 0), reports.append)
    last = reports[-1]
    assert (last[keys.STEP], last[keys.NOISE_METHOD]) == (300, method)
    assert last[keys.B_SIMPLE] == pytest.approx(last["true_b_simple"], rel=0.15)
