"""The peer: AdaptDL 0.2.11's `GradientNoiseScale`, attached to a trial's optimiser.

Install it without its scheduler: `pip install adaptdl==0.2.11 --no-deps`. Its module is
loaded from its file, so that `adaptdl.torch`'s package import (which starts its
scheduler's client and needs portpicker, requests and pkg_resources) is not run; the
module itself needs only numpy, torch and `adaptdl.utils`.

On one replica without accumulation AdaptDL measures on every step by differencing:
|g|² of this step's and the previous step's gradients, and of their mean, as two batch
sizes (B and 2B), moving averages with weight 0.999^2 per step. Its var_avg is in units
of one batch (its scale 1), so `b_simple` is B·var_avg/sqr_avg, the same
B_simple = tr(Σ)/|G|² (in examples) noisetune reports.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

LABEL = "adaptdl"


def _module() -> ModuleType:
    import adaptdl  # an optional peer, not a dependency

    path = Path(adaptdl.__file__).parent / "torch" / "gradient_noise_scale.py"
    spec = importlib.util.spec_from_file_location("adaptdl_gradient_noise_scale", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def available() -> bool:
    """Whether adaptdl is installed."""
    return importlib.util.find_spec("adaptdl") is not None


class _OneReplica:
    """What GradientNoiseScale asks of AdaptiveDataParallel: every backward syncs."""

    require_backward_grad_sync = True


def attach(optimizer: torch.optim.Optimizer) -> Any:
    """AdaptDL's GradientNoiseScale on `optimizer`'s parameters: one replica, no
    accumulation (its hooks measure every backward pass from then on)."""
    gns = _module().GradientNoiseScale(_OneReplica(), optimizer, num_replicas=1, accum_scale=1)

    def zero_grad(*_args: Any, **_kwargs: Any) -> None:
        # What AdaptiveDataParallel puts in the optimiser's place: a new step resets the
        # peer's accumulation (its local |g|² sum) and zeroes the gradients.
        gns.reset_accumulation()

    optimizer.zero_grad = zero_grad  # type: ignore[method-assign]
    return gns


def b_simple(gns: Any, batch_size: int) -> float:
    """AdaptDL's estimate of tr(Σ)/|G|² in examples: its var_avg is the noise of one
    batch of `batch_size` (its scale unit), so B·var_avg/sqr_avg (nan where its |G|²
    average, clipped at 0, is 0: noisetune leaves such an estimate empty too)."""
    signal = float(gns.sqr_avg())
    return trace_sigma(gns, batch_size) / signal if signal > 0 else math.nan


def trace_sigma(gns: Any, batch_size: int) -> float:
    """AdaptDL's tr(Σ) per example: B times its per-batch var_avg."""
    return batch_size * float(gns.var_avg())
