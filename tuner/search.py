"""The spec's joint space -> Tune's param space and search algorithm."""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher

from tuner.spec import Spec


def _domain(dim: Any, grid: bool) -> Any:
    if dim.categorical:
        values = list(dim.points())
        return tune.grid_search(values) if grid else tune.choice(values)
    lo, hi = dim.lo, dim.hi
    if dim.kind == "uniform":
        return tune.uniform(lo, hi)
    if dim.kind == "log_uniform":
        return tune.loguniform(lo, hi)
    if dim.kind == "int_uniform":
        return tune.randint(lo, hi + 1)  # Tune's upper bound is exclusive
    if dim.kind == "log_int_uniform":
        return tune.lograndint(lo, hi + 1)
    raise ValueError(f"unknown dimension kind {dim.kind!r}")


def param_space(spec: Spec) -> dict[str, Any]:
    """Tune domains for batch_size, lr, momentum and warmup_steps.

    Under `grid`, every list is a grid axis and ranges are sampled once per grid point
    and repeat (Tune's semantics); otherwise every dimension is sampled.
    """
    grid = spec.search.algorithm == "grid"
    return {name: _domain(dim, grid) for name, dim in spec.space.dimensions().items()}


def search_algorithm(spec: Spec) -> Searcher | BasicVariantGenerator:
    """Random and grid: Tune's variant generator, seeded by the spec."""
    algorithm = spec.search.algorithm
    if algorithm in ("random", "grid"):
        # Tune ignores max_concurrent_trials for a variant generator; it limits itself.
        return BasicVariantGenerator(
            random_state=spec.search.seed, max_concurrent=spec.search.max_concurrent
        )
    raise NotImplementedError(f"search.algorithm {algorithm!r} is not available yet")


def expected_trials(spec: Spec) -> int | None:
    """How many trials a finished sweep has (None when the searcher decides)."""
    if spec.search.algorithm == "grid":
        axes = [len(d.points()) for d in spec.space.dimensions().values() if d.categorical]
        return math.prod(axes) * spec.search.num_samples
    return spec.search.num_samples
