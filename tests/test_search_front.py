"""eps_opt pruning replayed on whole grids (bench/replay.py): it must keep every batch
size's best configuration, on an optimum at the edge of the lr grid that starts last and
on every grid recorded with the real loop in bench/curves/."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _helpers import recorded_curve
from replay import Curves, Outcome, replay

from tuner import theory
from tuner.config.spec import parse_spec
from tuner.strategy.candidates import draw_candidates
from tuner.strategy.guided import GuidedCandidates
from tuner.strategy.records import SweepState
from tuner.strategy.schedulers import make_scheduler

BENCH = Path(__file__).resolve().parents[1] / "bench"
TARGET = math.exp(-3.0)


def decaying(batch_size: int, lr: float, steps_to_target: int, budget: int = 2000) -> list[dict]:
    """exp(−3t/S): the target exp(−3) is met at step S; reports every 10 steps."""
    return recorded_curve(
        batch_size,
        lr,
        steps_to_target,
        budget,
        lambda step: math.exp(-3.0 * step / steps_to_target),
        0.01,
    )


def eps_opt_sweep(spec_data: dict[str, Any], curves: Curves, seed: int, run_dir: Path) -> Outcome:
    """An eps_opt sweep of this grid, replayed (as bench/search_efficiency.py runs its
    eps_opt strategy)."""
    spec = parse_spec(spec_data)
    law = theory.LAW_OF_OPTIMIZER[spec.optimizer]
    configs = draw_candidates(spec)
    random.Random(seed).shuffle(configs)
    state = SweepState(law=law, target_mode=spec.target.mode)
    searcher = GuidedCandidates(configs, state.front_view(), spec.target.mode, law)
    scheduler = make_scheduler(spec, run_dir, state)
    assert scheduler is not None

    def suggest(trial_id: str) -> dict[str, Any] | None:
        config = searcher.suggest(trial_id)
        return None if config is None or config == "FINISHED" else config

    return replay(curves, suggest, scheduler, spec.search.max_concurrent)


def test_an_optimum_at_the_edge_that_starts_last_is_found(tmp_path: Path) -> None:
    """The best lr at every batch size is the grid's highest, which the middle-first
    start reaches last; the first trials' fit is flat. Steps fall as lr^(−½) up to it."""
    sizes, lrs = (16, 64, 256, 1024), [2.0**k for k in range(-4, 4)]
    rows = [
        row
        for b in sizes
        for lr in lrs
        for row in decaying(b, lr, int(10 * round(4000 / b**0.5 * (8.0 / lr) ** 0.5 / 10)))
    ]
    curves = Curves(pd.DataFrame(rows))
    spec = {
        "name": "edge",
        "workload": "linear_regression",
        "target": {"metric": "loss", "value": TARGET},
        "budget": {"max_steps": 2000},
        "space": {"batch_size": list(sizes), "lr": lrs, "momentum": [0.0]},
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "pruning": {"kind": "eps_opt", "mode": "fitted"},
    }
    for seed in range(3):
        outcome = eps_opt_sweep(spec, curves, seed, tmp_path / str(seed))
        assert outcome.front == curves.best_steps()
        assert outcome.total_examples < curves.total_examples() / 2  # it did prune


def _recorded() -> list[str]:
    """The bench specs whose grids are recorded in bench/curves/."""
    specs = sorted((BENCH / "specs").glob("*.yaml"))
    names = {p.stem: yaml.safe_load(p.read_text())["name"] for p in specs}
    return [stem for stem, name in names.items() if (BENCH / "curves" / f"{name}.parquet").exists()]


@pytest.mark.parametrize("name", _recorded())
def test_eps_opt_keeps_the_front_of_every_recorded_grid(name: str, tmp_path: Path) -> None:
    """Every batch size's best steps within 10% of the grid's, in 3 start orders: the curve
    rule (1b) and the lr rule never remove the front on the grids trained for real,
    while the sweep spends under half the grid's examples."""
    spec = yaml.safe_load((BENCH / "specs" / f"{name}.yaml").read_text())
    spec["pruning"] = {**spec.get("pruning", {}), "kind": "eps_opt"}
    if "curvature" not in name:
        spec["pruning"]["mode"] = "fitted"
    curves = Curves(pd.read_parquet(BENCH / "curves" / f"{spec['name']}.parquet"))
    reference = curves.best_steps()
    for seed in range(3):
        outcome = eps_opt_sweep(spec, curves, seed, tmp_path / str(seed))
        gaps = {b: outcome.front.get(b, math.inf) / steps - 1 for b, steps in reference.items()}
        assert max(gaps.values()) <= 0.10, (seed, gaps)
        # And it pruned: BENCHMARKS.md measures 3-44x less than the grid on these.
        assert outcome.total_examples < curves.total_examples() / 2
