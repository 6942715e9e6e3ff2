"""Search efficiency: examples each strategy spends until its front matches the grid's.

    python bench/search_efficiency.py --spec bench/specs/linear_regression.yaml
    python bench/search_efficiency.py --spec bench/specs/teacher_mlp.yaml
    python bench/search_efficiency.py --spec my_spec.yaml --seeds 20   # any workload

The reference is the spec's exhaustive grid over batch size x lr x momentum x warmup (the
Shallue et al. protocol), trained once with the real loop and recorded
(`bench/curves.py`; reused from bench/curves/ if already there). Every strategy is then
replayed on those curves (`bench/replay.py`) with its real searcher and scheduler, two
trials at a time, once per seed:

- grid: every configuration, in a seeded random order, no pruning;
- grid+asha: the same under noisetune's `pruning: asha` (Tune's ASHAScheduler, one per
  batch size: grace `pruning.grace_steps`, reduction factor 4);
- hyperband: the same under `pruning: hyperband` (asynchronous Hyperband: that ASHA
  with 3 brackets);
- random: uniform draws from the grid (with replacement), no pruning;
- random+asha: the same draws under `pruning: asha`;
- tpe: noisetune's Optuna TPE searcher (`search.algorithm: optuna-tpe`), no pruning;
- tpe+median: the same with Tune's MedianStoppingRule (grace `pruning.grace_steps`,
  hard stop);
- eps_opt: the grid in noisetune's guided order with `pruning: eps_opt`;
- eps_opt-oracle: the same, but the ε_opt(B) model is known from the start (fitted to
  the grid's best lr per batch size): what eps_opt could save if it knew ε_opt;
- eps-guided: `search.algorithm: eps-guided` with `pruning: eps_opt`.

Random and eps-guided draw twice the grid's number of trials, TPE as many (its
suggestions cost O(n) each). "To front" is the examples
spent (interpolated over running trials) until the per-batch-size best steps to the
target first come within 10% of the grid's at every batch size; "total" is everything the
strategy ran. Ratios are the grid's total examples over the strategy's median.

With --heldout-seeds K every strategy's pick per batch size (the configuration behind its
front) is also scored on the grid retrained with training seeds 1 … K (recorded once,
beside the seed-0 curves): its mean steps to the target there over those of the
configuration best on average (`bench/heldout.py`, the worst batch size; the grid's own
pick is scored the same way). The grid rerun with another training seed misses its own
front by more than 10% in 31 of 36 ordered pairs of seeds over the six recorded grids, by
up to +144% (`bench/front_noise.py`), so "within 10%" alone rewards one seed's luck.

With --live the strategies run for real instead (`LIVE_STRATEGIES` of them), each a
`noisetune` sweep on an embedded Ray (2 CPUs, the spec's concurrency): the grid once (its
seed only orders it), every other strategy once per seed. Each sweep's total examples,
wall time and final front are compared with the live grid's; the oracle is what the
grid's best trial at every batch size cost (running only those). eps-guided and TPE
draw as many trials as the grid has configurations.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.runtime.ray_runtime import keep_local_ray_on_loopback

# Before Ray is imported: the embedded Ray this script may start stays on 127.0.0.1.
keep_local_ray_on_loopback()

import numpy as np
import yaml
from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curves import load_or_record
from heldout import HeldOut
from replay import ConfigKey, Curves, Outcome, config_key, replay

from trainables import keys
from tuner import theory
from tuner.config.spec import Spec, parse_spec
from tuner.runtime.runner import search_plan
from tuner.strategy import guided, schedulers, search
from tuner.strategy.candidates import draw_candidates
from tuner.strategy.records import SweepState

STRATEGIES = (
    "grid",
    "grid+asha",
    "hyperband",
    "random",
    "random+asha",
    "tpe",
    "tpe+median",
    "eps_opt",
    "eps_opt-oracle",
    "eps-guided",
)


def variant(base: dict[str, Any], algorithm: str, pruning: str, seed: int, samples: int) -> Spec:
    data = {**base, "search": {**base["search"], "algorithm": algorithm, "seed": seed}}
    if algorithm != "grid":
        data["search"]["num_samples"] = samples
    data["pruning"] = {**base.get("pruning", {}), "kind": pruning}
    return parse_spec(data)


def _searcher_suggest(
    searcher: Searcher, num_samples: int | None = None
) -> Callable[[str], dict[str, Any] | None]:
    """`searcher.suggest` until it is finished or, for a searcher that never finishes by
    itself (Tune's OptunaSearch: Tune's own SearchGenerator counts num_samples), until
    `num_samples` trials."""
    suggested = 0

    def suggest(trial_id: str) -> dict[str, Any] | None:
        nonlocal suggested
        if num_samples is not None and suggested >= num_samples:
            return None
        config = searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return None
        suggested += 1
        return config

    return suggest


def _list_suggest(configs: list[dict[str, Any]]) -> Callable[[str], dict[str, Any] | None]:
    queue = list(configs)
    return lambda _trial_id: queue.pop(0) if queue else None


def run_strategy(
    name: str, base: dict[str, Any], curves: Curves, seed: int, run_dir: Path
) -> Outcome:
    grid = parse_spec(base)
    n_grid = len(draw_candidates(grid))
    concurrency = grid.search.max_concurrent
    shuffled = draw_candidates(grid)
    random.Random(seed).shuffle(shuffled)
    if name == "grid":
        return replay(curves, _list_suggest(shuffled), FIFOScheduler(), concurrency)
    if name in ("grid+asha", "hyperband"):
        spec = variant(base, "grid", "asha" if name == "grid+asha" else "hyperband", seed, n_grid)
        np.random.seed(seed)  # Tune's ASHA draws a trial's bracket from numpy's global RNG
        scheduler = schedulers.make_scheduler(spec, run_dir) or FIFOScheduler()
        return replay(curves, _list_suggest(shuffled), scheduler, concurrency)
    if name in ("random", "random+asha"):
        spec = variant(
            base, "random", "asha" if name == "random+asha" else "none", seed, 2 * n_grid
        )
        scheduler = schedulers.make_scheduler(spec, run_dir) or FIFOScheduler()
        return replay(curves, _list_suggest(draw_candidates(spec)), scheduler, concurrency)
    if name in ("tpe", "tpe+median"):
        spec = variant(base, "optuna-tpe", "none", seed, n_grid)
        searcher = search.optuna_search(spec)
        stopper: TrialScheduler = FIFOScheduler()
        if name == "tpe+median":
            stopper = MedianStoppingRule(
                time_attr=keys.STEP,
                metric=keys.TARGET_VALUE,
                mode="min",
                grace_period=spec.pruning.grace_steps,
                min_time_slice=math.inf,  # never pause (the replay, like Tune here, stops)
                hard_stop=True,
            )
        return replay(
            curves,
            _searcher_suggest(searcher, spec.search.num_samples),
            stopper,
            concurrency,
            on_result=searcher.on_trial_result,
            on_complete=lambda tid, row: searcher.on_trial_complete(tid, row),
        )
    if name in ("eps_opt", "eps_opt-oracle"):
        spec = variant(base, "grid", "eps_opt", seed, n_grid)
        law = theory.LAW_OF_OPTIMIZER[spec.optimizer]
        state = SweepState(law=law, target_mode=spec.target.mode)
        if name == "eps_opt-oracle":
            state.model = oracle_model(curves, law)
        searcher = guided.GuidedCandidates(shuffled, state.front_view(), spec.target.mode, law)
        scheduler = schedulers.make_scheduler(spec, run_dir, state)
    elif name == "eps-guided":
        spec = variant(base, "eps-guided", "eps_opt", seed, 2 * n_grid)
        plan = search_plan(spec, run_dir)
        searcher, scheduler = plan.search_alg, plan.scheduler
    else:
        raise ValueError(f"unknown strategy {name!r}")
    assert isinstance(scheduler, TrialScheduler)
    return replay(
        curves,
        _searcher_suggest(searcher),
        scheduler,
        concurrency,
        on_complete=lambda tid, row: searcher.on_trial_complete(tid, row),
    )


def oracle_model(curves: Curves, law: str = "sgd") -> theory.EpsOptFit:
    """The sweep's ε_opt(B) law fitted to the grid's best rate at every batch size."""
    best = curves.best_configs()
    sizes = [float(b) for b in best]
    rates = [theory.rate(law, key[1], key[2]) for key, _ in best.values()]
    steps = [steps for _, steps in best.values()]
    model = theory.law_model(law, "fitted", sizes, rates, steps)
    assert model is not None, "the grid reached the target at fewer than 2 batch sizes"
    return model


def _fmt(value: float) -> str:
    return "never" if math.isinf(value) else f"{value / 1e6:.2f}M"


def worst_gap(front: dict[int, float], reference: dict[int, float]) -> float:
    """The largest relative excess of the found best steps over the grid's (inf: a
    batch size never reached)."""
    return max(front.get(b, math.inf) / steps - 1 for b, steps in reference.items())


def regret_cell(regrets: list[float]) -> str:
    """Median and worst held-out regret over seeds (`bench/heldout.py`)."""
    ordered = sorted(regrets)
    return f"{statistics.median(ordered):.2f} (max {ordered[-1]:.2f})"


def summarize(
    name: str,
    outcomes: list[Outcome],
    grid_total: float,
    reference: dict[int, float],
    heldout: HeldOut | None = None,
) -> dict[str, Any]:
    to_front = [o.examples_to_front for o in outcomes]
    gaps = sorted(worst_gap(o.front, reference) for o in outcomes)
    totals = [o.total_examples for o in outcomes]
    found = [x for x in to_front if math.isfinite(x)]
    median = statistics.median(to_front) if len(found) * 2 > len(to_front) else math.inf
    return {
        "strategy": name,
        "seeds": len(outcomes),
        "front found": f"{len(found)}/{len(outcomes)}",
        "to front: median": _fmt(median),
        "min…max": f"{_fmt(min(to_front))}…{_fmt(max(to_front))}",
        "grid total / median": "-" if math.isinf(median) else f"{grid_total / median:.1f}x",
        "total: median": _fmt(statistics.median(totals)),
        "grid total / total": f"{grid_total / statistics.median(totals):.1f}x",
        "worst front gap at the end": f"{statistics.median(gaps):+.0%} (max {gaps[-1]:+.0%})",
        "trials: median": int(statistics.median(o.trials for o in outcomes)),
        "wall to front: median s": (
            "never"
            if math.isinf(median)
            else f"{statistics.median(o.wall_to_front_s for o in outcomes):.0f}"
        ),
        **(
            {"held-out regret": regret_cell([heldout.regret(o.picks) for o in outcomes])}
            if heldout
            else {}
        ),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


LIVE_STRATEGIES = ("grid", "grid+asha", "hyperband", "tpe", "eps_opt", "eps-guided")
LIVE_SPEC = {  # strategy: (search.algorithm, pruning.kind)
    "grid": ("grid", "none"),
    "grid+asha": ("grid", "asha"),
    "hyperband": ("grid", "hyperband"),
    "tpe": ("optuna-tpe", "none"),
    "eps_opt": ("grid", "eps_opt"),
    "eps-guided": ("eps-guided", "eps_opt"),
}


@dataclass(frozen=True)
class LiveSweep:
    """What one real sweep spent and found."""

    strategy: str
    seed: int
    total_examples: int
    wall_s: float
    trials: int
    front: dict[int, float]  # per batch size the fewest steps to the target
    picks: dict[int, ConfigKey]  # per batch size the configuration that took them
    oracle_examples: int  # the examples of the best trial at each batch size, summed


def live_sweep(base: dict[str, Any], strategy: str, seed: int, storage: str) -> LiveSweep:
    """One strategy run for real through noisetune's runner (embedded Ray)."""
    from tuner.runtime.runner import run_sweep

    algorithm, pruning = LIVE_SPEC[strategy]
    n_grid = len(draw_candidates(parse_spec(base)))
    name = f"{base['name']}-{strategy.replace('+', '-')}-{seed}"
    spec = variant({**base, "name": name, "storage": storage}, algorithm, pruning, seed, n_grid)
    started = time.perf_counter()
    tables = run_sweep(spec, progress=False).tables
    wall = time.perf_counter() - started
    front = tables.front.set_index(keys.BATCH_SIZE)
    return LiveSweep(
        strategy,
        seed,
        int(tables.summary["total_examples"]),
        wall,
        len(tables.trials),
        {int(b): float(v) for b, v in front["steps"].items()},
        {int(b): config_key({keys.BATCH_SIZE: b, **row}) for b, row in front.iterrows()},
        int(front["examples"].sum()),
    )


def live_rows(sweeps: list[LiveSweep], heldout: HeldOut | None = None) -> list[dict[str, Any]]:
    """Per strategy: medians over seeds against the live grid (the first sweep)."""
    grid = sweeps[0]
    rows = []
    for strategy in dict.fromkeys(s.strategy for s in sweeps):
        runs = [s for s in sweeps if s.strategy == strategy]
        gaps = sorted(worst_gap(s.front, grid.front) for s in runs)
        total = statistics.median(s.total_examples for s in runs)
        rows.append(
            {
                "strategy": strategy,
                "seeds": len(runs),
                "total: median": _fmt(total),
                "grid total / total": f"{grid.total_examples / total:.1f}x",
                "min…max": "…".join(
                    _fmt(x)
                    for x in (
                        min(s.total_examples for s in runs),
                        max(s.total_examples for s in runs),
                    )
                ),
                "front within 10%": f"{sum(g <= 0.10 for g in gaps)}/{len(runs)}",
                "worst front gap": f"{statistics.median(gaps):+.0%} (max {gaps[-1]:+.0%})",
                "trials: median": int(statistics.median(s.trials for s in runs)),
                "wall: median s": f"{statistics.median(s.wall_s for s in runs):.0f}",
                **(
                    {"held-out regret": regret_cell([heldout.regret(s.picks) for s in runs])}
                    if heldout
                    else {}
                ),
            }
        )
    oracle = grid.oracle_examples
    rows.append(
        {
            "strategy": "oracle (best lr per B only)",
            "seeds": 1,
            "total: median": _fmt(oracle),
            "grid total / total": f"{grid.total_examples / oracle:.1f}x",
            "min…max": "",
            "front within 10%": "1/1",
            "worst front gap": "+0%",
            "trials: median": len(grid.front),
            "wall: median s": "",
            **({"held-out regret": regret_cell([heldout.regret(grid.picks)])} if heldout else {}),
        }
    )
    return rows


def run_live(
    base: dict[str, Any], strategies: list[str], seeds: int, heldout: HeldOut | None = None
) -> list[dict[str, Any]]:
    """Every strategy for real: the grid once, the others once per seed."""
    from tuner.runtime.ray_runtime import init_ray

    unknown = [s for s in strategies if s not in LIVE_SPEC]
    if unknown:
        sys.exit(f"--live runs {', '.join(LIVE_STRATEGIES)}; not {unknown[0]}")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables between our lines
    init_ray(num_cpus=2)
    sweeps: list[LiveSweep] = []
    with tempfile.TemporaryDirectory(prefix="noisetune-se-live-") as storage:
        for strategy in ["grid", *(s for s in strategies if s != "grid")]:
            for seed in range(1 if strategy == "grid" else seeds):
                sweep = live_sweep(base, strategy, seed, storage)
                sweeps.append(sweep)
                print(
                    f"    live {strategy} seed {seed}: {sweep.total_examples:,} examples, "
                    f"{sweep.trials} trials, {sweep.wall_s:.0f} s, front "
                    + ", ".join(f"{b}: {v:.0f}" for b, v in sorted(sweep.front.items())),
                    flush=True,
                )
    return live_rows(sweeps, heldout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--strategies", default="", help="default: all of them")
    parser.add_argument("--processes", type=int, default=2, help="for recording the grid")
    parser.add_argument(
        "--live", action="store_true", help="run the strategies for real instead of replaying"
    )
    parser.add_argument(
        "--heldout-seeds",
        type=int,
        default=0,
        help="also score each pick on the grid retrained with training seeds 1..K "
        "(recorded once, bench/heldout.py)",
    )
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.spec).read_text())
    base.setdefault("search", {})["algorithm"] = "grid"
    grid = parse_spec(base)
    ranges = [name for name, dim in grid.space.dimensions().items() if not dim.categorical]
    if ranges:
        sys.exit(f"{args.spec}: space.{ranges[0]} must be a list of values (a grid) here")
    heldout = (
        HeldOut(
            [
                Curves(load_or_record(grid, args.processes, seed=seed))
                for seed in range(1, args.heldout_seeds + 1)
            ],
            grid.budget.max_steps,
        )
        if args.heldout_seeds > 0
        else None
    )
    if args.live:
        strategies = args.strategies.split(",") if args.strategies else list(LIVE_STRATEGIES)
        print(f"{grid.name}: {len(draw_candidates(grid))} configurations, live", flush=True)
        print(markdown(run_live(base, strategies, args.seeds, heldout)))
        return
    curves = Curves(load_or_record(grid, args.processes))
    grid_total = curves.total_examples()
    best = curves.best_steps()
    print(
        f"{grid.name}: {len(curves.reports)} configurations, grid total {grid_total:,} examples",
        flush=True,
    )
    print("grid best steps per B: " + ", ".join(f"{b}: {s:.0f}" for b, s in sorted(best.items())))
    rows = []
    with tempfile.TemporaryDirectory(prefix="noisetune-se-") as tmp:
        for name in args.strategies.split(",") if args.strategies else STRATEGIES:
            started = time.perf_counter()
            outcomes = []
            for seed in range(args.seeds):
                outcome = run_strategy(name, base, curves, seed, Path(tmp) / f"{name}-{seed}")
                outcomes.append(outcome)
                print(
                    f"    {name} seed {seed}: to front {_fmt(outcome.examples_to_front)}, "
                    f"total {_fmt(outcome.total_examples)}, {outcome.trials} trials, "
                    f"{time.perf_counter() - started:.0f} s",
                    flush=True,
                )
            rows.append(summarize(name, outcomes, grid_total, best, heldout))
            elapsed = time.perf_counter() - started
            print(f"  {name}: {elapsed:.1f} s to replay; {rows[-1]}", flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
