"""Checks of a built-in workload's `workload_args`, each failure one clear line."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def merge_args(
    workload: str, defaults: Mapping[str, Any], args: Mapping[str, Any]
) -> dict[str, Any]:
    """The defaults updated with `args`; an unknown key is a ValueError naming it."""
    unknown = sorted(set(args) - set(defaults), key=str)
    if unknown:
        raise ValueError(
            f"{workload}: unknown argument {unknown[0]!r} (known: {', '.join(defaults)})"
        )
    return {**defaults, **args}


def int_arg(workload: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{workload}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def float_arg(workload: str, name: str, value: Any, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{workload}: {name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        bound = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"{workload}: {name} must be {bound}, got {value!r}")
    return number
