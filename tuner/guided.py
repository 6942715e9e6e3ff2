"""The order trials start in under eps_opt pruning: a Tune Searcher over fixed candidates.

Ray Tune 2.60 stages every pending trial in the order the search algorithm created them,
so the order must come from the searcher. `GuidedCandidates` holds the sweep's
configurations (the grid, or random draws made up front with the spec's seed) and, each
time a slot opens, proposes the one the eps_opt state ranks first (`start_priority`):
before a model, the middle of each batch size's lr range, spread over batch sizes;
with one, the configuration nearest ε_opt(B). Trials that rule 1 of the scheduler then
stops early are the ones far from the optimum, which is where the savings come from.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from trainables import keys
from tuner.schedulers import SweepState, TrialRecord, middle_lrs, start_priority
from tuner.spec import Spec


def _draw(dim: Any, rng: np.random.Generator) -> float | int:
    if dim.categorical:
        points = dim.points()
        return points[int(rng.integers(len(points)))]
    lo, hi = dim.lo, dim.hi
    if dim.kind == "uniform":
        return float(rng.uniform(lo, hi))
    if dim.kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if dim.kind == "int_uniform":
        return int(rng.integers(lo, hi + 1))
    if dim.kind == "log_int_uniform":
        drawn = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return int(min(max(drawn, lo), hi))
    raise ValueError(f"unknown dimension kind {dim.kind!r}")


def candidates(spec: Spec) -> list[dict[str, Any]]:
    """Every configuration the sweep would run: the grid (ranges drawn per point) times
    num_samples, or num_samples random draws; reproducible from search.seed."""
    rng = np.random.default_rng(spec.search.seed)
    dims = spec.space.dimensions()
    if spec.search.algorithm != "grid":
        return [
            {name: _draw(dim, rng) for name, dim in dims.items()}
            for _ in range(spec.search.num_samples)
        ]
    axes = {name: dim.points() for name, dim in dims.items() if dim.categorical}
    configs = []
    for _ in range(spec.search.num_samples):
        for values in itertools.product(*axes.values()):
            point = dict(zip(axes, values, strict=True))
            for name, dim in dims.items():
                if name not in point:
                    point[name] = _draw(dim, rng)
            configs.append({name: point[name] for name in dims})
    return configs


def _record(config: dict[str, Any]) -> TrialRecord:
    return TrialRecord(
        batch_size=int(config[keys.BATCH_SIZE]),
        lr=float(config[keys.LR]),
        momentum=float(config.get(keys.MOMENTUM, 0.0)),
    )


class GuidedCandidates(Searcher):
    """Proposes the sweep's candidates in the order the eps_opt state prefers."""

    def __init__(self, configs: list[dict[str, Any]], state: SweepState) -> None:
        super().__init__(metric=keys.TARGET_VALUE, mode="min")
        self.remaining = list(configs)
        self.state = state
        self.middle = middle_lrs(_record(c) for c in configs)
        self.suggested: dict[int, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.remaining:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel
        model = self.state.model
        ranked = min(
            range(len(self.remaining)),
            key=lambda i: start_priority(
                _record(self.remaining[i]), self.suggested, self.middle, model
            ),
        )
        config = self.remaining.pop(ranked)
        batch_size = int(config[keys.BATCH_SIZE])
        self.suggested[batch_size] = self.suggested.get(batch_size, 0) + 1
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Nothing to learn here: the scheduler keeps the shared state."""
