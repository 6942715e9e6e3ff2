"""The optimisers a trial can train with, built from its hyperparameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trainables.errors import TrialInputError
from trainables.parts.sgd_sai import SGDSaI
from trainables.settings import Hyperparameters


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], hp: Hyperparameters
) -> torch.optim.Optimizer:
    """SGD with momentum and (L2) weight decay; AdamW with beta1 = momentum, beta2 and
    decoupled weight decay; or SGD-SaI (trainables.parts.sgd_sai) with its EMA momentum and
    decoupled weight decay. Every value from the trial's hyperparameters, none implied."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=hp.lr, betas=(hp.momentum, hp.beta2), weight_decay=hp.weight_decay
        )
    if name == "sgd_sai":
        return SGDSaI(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    raise TrialInputError(f"unknown optimizer {name!r}")
