"""The optimisers a trial can train with, built from its hyperparameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trainables.errors import TrialInputError
from trainables.settings import Hyperparameters


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], hp: Hyperparameters
) -> torch.optim.Optimizer:
    """SGD with momentum from the space, or AdamW with beta1 = momentum."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, betas=(hp.momentum, 0.999))
    raise TrialInputError(f"unknown optimizer {name!r}")
