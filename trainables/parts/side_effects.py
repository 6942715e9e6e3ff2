"""Forward passes off the training path leave no trace on the trial's training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def side_effects_undone(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Afterwards the global RNG and the module buffers (BatchNorm statistics) are as
    they were before: the step-0 loss and the Hessian batch do not shift training."""
    buffers = [b.detach().clone() for b in model.buffers()]
    devices = [] if device.type == "cpu" else [device]
    try:
        with torch.random.fork_rng(devices=devices, device_type=device.type):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
