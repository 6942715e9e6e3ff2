"""Record a spec's full grid of learning curves once, for tabular replay.

    python bench/curves.py --spec bench/specs/linear_regression.yaml

Every configuration of the spec's (categorical) grid is trained with the real loop
(`trainables.loop.run_trial`, the code a Tune trial runs, same seed, same reports) in a
pool of plain processes, until it reaches the target, exhausts its budget or diverges.
Every report is kept, with its wall time. The curves land in
`bench/curves/<spec name>.parquet`, one row per report, tagged with what they depend on
(`recipe`: the spec less its name, storage, pruning and resources), so that curves under
a name whose spec has changed are recorded again, not reused; `bench/search_efficiency.py`
replays search strategies on them (the tabular-benchmark method of HPO research).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import keys
from tuner.config.spec import Spec, SpecError, load_spec, parse_spec
from tuner.config.trial_settings import trial_settings
from tuner.strategy.candidates import draw_candidates

CURVES_DIR = Path(__file__).resolve().parent / "curves"
CONFIG_COLUMNS = list(keys.HYPERPARAMETERS)
# What the strategies and the prediction table read of each report.
REPORT_COLUMNS = [
    keys.STEP,
    keys.EXAMPLES,
    keys.LOSS,
    keys.TARGET_VALUE,
    keys.TRIAL_STATUS,
    keys.STEPS_TO_TARGET,
    keys.EXAMPLES_TO_TARGET,
    keys.B_SIMPLE,
    keys.B_NOISE,
    keys.EPS_MAX,
    keys.WALL_S,
    "true_b_simple",  # linear_regression's exact statistics
    "true_b_noise",
    "true_eps_max",
]


RECIPE_KEY = b"noisetune.recipe"  # the parquet metadata entry `recipe` is kept under


def curves_path(spec: Spec) -> Path:
    return CURVES_DIR / f"{spec.name}.parquet"


def recipe(spec: Spec) -> str:
    """What the recorded curves depend on: the spec without its name, storage, pruning,
    resources and search (but the search seed, which seeds every trial), as JSON."""
    data = spec.to_yaml_dict()
    kept = {k: v for k, v in data.items() if k not in ("name", "storage", "pruning", "resources")}
    kept["search"] = {"seed": data["search"]["seed"]}
    return json.dumps(kept, sort_keys=True)


def same_recipe(recorded: str | None, spec: Spec) -> bool:
    """Whether curves recorded under `recorded` are this spec's: compared as specs of
    today's schema, so that a field added since (at its default, which keeps the old
    behaviour) does not make a recording stale."""
    if recorded is None:
        return False
    if recorded == recipe(spec):
        return True
    data = json.loads(recorded)
    try:
        then = parse_spec({**data, "name": spec.name, "search": data.get("search", {})})
    except SpecError:
        return False
    return recipe(then) == recipe(spec)


def recorded_recipe(path: Path) -> str | None:
    metadata = pq.read_schema(path).metadata or {}
    value = metadata.get(RECIPE_KEY)
    return value.decode() if value is not None else None


def save(frame: pd.DataFrame, spec: Spec, path: Path) -> None:
    """Write the curves with their spec's `recipe` (through a temporary file)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), RECIPE_KEY: recipe(spec)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def _train(job: tuple[Spec, dict[str, Any]]) -> list[dict[str, Any]]:
    import torch

    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters

    torch.set_num_threads(1)
    spec, config = job
    rows: list[dict[str, Any]] = []
    run_trial(trial_settings(spec, Path(".")), Hyperparameters.from_config(config), rows.append)
    return [{**row, **config} for row in rows]  # the config lr, not the warmup lr


def record(spec: Spec, processes: int, seed: int = 0) -> pd.DataFrame:
    """Every grid configuration's reports, in grid order, with training seed `seed`
    (every configuration's `keys.SEED`; 0 leaves the configurations as the grid has them)."""
    configs = draw_candidates(spec)
    if seed:
        configs = [{**config, keys.SEED: seed} for config in configs]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        for done, trial_rows in enumerate(pool.imap(_train, [(spec, c) for c in configs]), start=1):
            rows.extend(trial_rows)
            if done % 20 == 0 or done == len(configs):
                elapsed = time.perf_counter() - started
                print(f"  {done}/{len(configs)} configurations, {elapsed:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    return frame[[c for c in CONFIG_COLUMNS + REPORT_COLUMNS if c in frame.columns]]


def seed_path(spec: Spec, seed: int) -> Path:
    """Where the grid trained with training seed `seed` is kept (seed 0: `curves_path`)."""
    path = curves_path(spec)
    return path if seed == 0 else path.with_name(f"{path.stem}-seed{seed}.parquet")


def load_or_record(
    spec: Spec, processes: int, rerecord: bool = False, seed: int = 0
) -> pd.DataFrame:
    """The spec's recorded curves (trained with training seed `seed`), recorded first
    where there are none, or where those under its name were recorded from another spec
    (a changed grid, workload or target)."""
    path = seed_path(spec, seed)
    if path.exists() and not rerecord:
        if same_recipe(recorded_recipe(path), spec):
            return pd.read_parquet(path)
        print(f"{path} was recorded from another spec than {spec.name}'s: recording again")
    print(f"recording {len(draw_candidates(spec))} configurations of {spec.name} -> {path}")
    frame = record(spec, processes, seed)
    save(frame, spec, path)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    frame = load_or_record(load_spec(args.spec), args.processes, rerecord=True)
    last = frame.groupby(CONFIG_COLUMNS).tail(1)
    print(last[keys.TRIAL_STATUS].value_counts().to_string())


if __name__ == "__main__":
    main()
