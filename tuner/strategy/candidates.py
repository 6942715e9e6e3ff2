"""The one sampler of a sweep's space, and the searcher that proposes what it drew.

Grid and random sweeps draw every configuration up front from `search.seed`
(`draw_candidates`: the grid's points, ranges drawn once per point, or random draws), once per
training seed; `Candidates` proposes them in that order, and
tuner.strategy.guided.GuidedCandidates in the order eps_opt prefers. eps-guided draws
from the same `draw`.
"""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from trainables import keys
from tuner.config.spec import Spec


def draw(dim: Any, rng: np.random.Generator) -> float | int:
    """One value of a spec dimension: a listed value, or a draw from its range."""
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


def draw_candidates(spec: Spec) -> list[dict[str, Any]]:
    """Every configuration the sweep would run: the grid (ranges drawn per point) times
    num_samples, or num_samples random draws (reproducible from search.seed), each once
    per training seed (`search.seeds`)."""
    configs = _configurations(spec)
    if spec.search.seeds == 1:
        return configs
    return [{**config, keys.SEED: seed} for config in configs for seed in range(spec.search.seeds)]


def _configurations(spec: Spec) -> list[dict[str, Any]]:
    rng = np.random.default_rng(spec.search.seed)
    dims = spec.space.dimensions()
    if spec.search.algorithm != "grid":
        return [
            {name: draw(dim, rng) for name, dim in dims.items()}
            for _ in range(spec.search.num_samples)
        ]
    axes = {name: dim.points() for name, dim in dims.items() if dim.categorical}
    configs = []
    for _ in range(spec.search.num_samples):
        for values in itertools.product(*axes.values()):
            point = dict(zip(axes, values, strict=True))
            for name, dim in dims.items():
                if name not in point:
                    point[name] = draw(dim, rng)
            configs.append({name: point[name] for name in dims})
    return configs


def in_grid_search_order(configs: list[dict[str, Any]], spec: Spec) -> list[dict[str, Any]]:
    """A grid's `draw_candidates` in the order Ray Tune's grid search generates its points
    (the first listed dimension varying fastest, each num_samples repeat in turn), the
    order a plain grid sweep starts them in."""
    dims = spec.space.dimensions()
    axes = {name: list(dim.points()) for name, dim in dims.items() if dim.categorical}
    per_repeat = math.prod(len(points) for points in axes.values())

    def position(item: tuple[int, dict[str, Any]]) -> tuple[int, ...]:
        index, config = item
        digits = [points.index(config[name]) for name, points in axes.items()]
        return (index // per_repeat, *reversed(digits))

    return [config for _, config in sorted(enumerate(configs), key=position)]


class Candidates(Searcher):
    """Proposes a sweep's drawn configurations, in `pick`'s order (here: as drawn)."""

    def __init__(self, configs: list[dict[str, Any]], mode: str = "min") -> None:
        super().__init__(metric=keys.TARGET_VALUE, mode=mode)
        self.remaining = list(configs)

    def pick(self) -> int:
        """The index in `remaining` of the configuration to propose next."""
        return 0

    def proposed(self, config: dict[str, Any]) -> None:
        """Told each configuration as it is proposed."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.remaining:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel
        config = self.remaining.pop(self.pick())
        self.proposed(config)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Nothing to learn: the configurations were drawn up front."""

    # What a resumed sweep needs (Tune saves it with every experiment snapshot).
    def get_state(self) -> dict[str, Any]:
        return {"remaining": self.remaining}

    def set_state(self, state: dict[str, Any]) -> None:
        self.remaining = state["remaining"]

    def save(self, checkpoint_path: str) -> None:
        write_pickle(self.get_state(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(read_pickle(checkpoint_path))


def write_pickle(state: dict[str, Any], path: str) -> None:
    with open(path, "wb") as handle:
        pickle.dump(state, handle)


def read_pickle(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)
