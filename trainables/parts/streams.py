"""A trial's named random streams: each is seeded by (training seed, batch size, stream),
so measuring or evaluating never shifts the training batches of a trial."""

from __future__ import annotations

import numpy as np
import torch

HESSIAN_STREAM = 1  # the Hessian batches of the curvature measurement
INITIAL_LOSS_STREAM = 2  # the examples of the step-0 training loss (no eval_data)
TORCH_STREAM = 3  # the trial's torch RNG (dropout, augmentation drawn in `loss`)
EVAL_SUBSET_STREAM = 4  # the eval examples of `eval.max_examples`: one subset for every trial


def stream_seed(*entropy: int) -> int:
    """The seed of one random stream of a trial, named by its integers."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def seeded_generator(*entropy: int) -> torch.Generator:
    """A torch generator of the stream `stream_seed(*entropy)`."""
    return torch.Generator().manual_seed(stream_seed(*entropy))


def training_batch_generator(seed: int, batch_size: int) -> torch.Generator:
    """The training batches' stream. Common random numbers: every trial of one seed at
    one batch size sees the same batches, whatever its lr, momentum or warmup."""
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + batch_size)
