"""What a step's forward pass runs, and in which precision."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
Autocast = Callable[[], AbstractContextManager[Any]]


def autocast_for(precision: str, device: torch.device) -> Autocast:
    """The forward pass's autocast context for the trial's precision."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


@dataclass(frozen=True)
class Forward:
    """What a step's forward pass runs: the model (or its DDP wrapper), its trainable
    parameters, the workload's loss and the autocast of the trial's precision."""

    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    loss_fn: LossFn
    autocast: Autocast
