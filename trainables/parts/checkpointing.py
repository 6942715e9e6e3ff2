"""A trial's checkpoints: when they are due, and the one file that holds its state.

`Checkpoints` is where they go and come back from; the executors bind it to Ray Tune
(one worker) and Ray Train (several), the tests to memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

STATE_FILE = "trial_state.pt"  # a trial checkpoint's one file (`save_state`, `load_state`)


class Checkpoints(Protocol):
    """Where a trial's checkpoints go and come back from (Ray Tune, Ray Train, a test)."""

    def restore(self) -> dict[str, Any] | None:
        """The state of the latest checkpoint of this trial, or None to start afresh."""

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """Report `metrics` together with a checkpoint of `state()` (called only where
        the checkpoint is written: rank 0 of a multi-worker trial)."""


def checkpoint_due(step: int, checkpoint_every: int, eval_every: int) -> bool:
    """Every `checkpoint_every`-th evaluation (evaluations fall on multiples of
    eval_every); 0 turns checkpoints off."""
    every = checkpoint_every * eval_every
    return every > 0 and step > 0 and step % every == 0


def save_state(state: Mapping[str, Any], directory: str | Path) -> None:
    """Write a trial state (`TrainingRun.state_dict`) into a checkpoint directory."""
    torch.save(dict(state), Path(directory) / STATE_FILE)


def load_state(directory: str | Path) -> dict[str, Any]:
    """Read what `save_state` wrote, onto the CPU (RNG states must be there; loading
    the model and optimiser state dicts moves the rest onto the trial's device)."""
    state: dict[str, Any] = torch.load(
        Path(directory) / STATE_FILE, map_location="cpu", weights_only=True
    )
    return state
