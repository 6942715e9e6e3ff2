"""Built-in joint search spaces, as plain dicts in the format of a spec's `space:` mapping.

A spec names one with `space: sgd_joint`; `tuner.config.spec.parse_spec` expands it.
"""

from __future__ import annotations

import copy
from typing import Any

POWERS_OF_TWO_16_4096: list[int] = [2**k for k in range(4, 13)]  # 16, 32, ..., 4096


def _lr_grid() -> list[float]:
    """2^k for k = -8, -7.5, ..., 1, rounded to 4 significant digits."""
    return [float(f"{2.0 ** (k / 2):.4g}") for k in range(-16, 3)]


_PRESETS: dict[str, dict[str, Any]] = {
    # SGD, the joint space the eps_opt pruner is made for.
    "sgd_joint": {
        "batch_size": POWERS_OF_TWO_16_4096,
        "lr": {"log_uniform": [1e-3, 4.0]},
        "momentum": [0.0, 0.9],
        "warmup_steps": [0],
    },
    # An exhaustive per-batch-size lr grid (Shallue et al. style); use with algorithm: grid.
    "sgd_lr_grid": {
        "batch_size": POWERS_OF_TWO_16_4096,
        "lr": _lr_grid(),
        "momentum": [0.0],
        "warmup_steps": [0],
    },
    # AdamW (momentum is beta1); use pruning asha or none, not eps_opt.
    "adamw_joint": {
        "batch_size": POWERS_OF_TWO_16_4096,
        "lr": {"log_uniform": [1e-5, 1e-1]},
        "momentum": [0.9],
        "warmup_steps": [0, 100],
    },
}


def names() -> list[str]:
    """The names of the built-in search spaces, sorted."""
    return sorted(_PRESETS)


def get(name: str) -> dict[str, Any]:
    """A copy of the named search space; KeyError listing the known names otherwise."""
    if name not in _PRESETS:
        raise KeyError(f"unknown search space {name!r} (choose from {', '.join(names())})")
    return copy.deepcopy(_PRESETS[name])


__all__ = ["get", "names"]
