"""A run directory -> the results tables of DESIGN.md §3, and their exports."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from trainables import keys
from trainables.settings import Target
from tuner import theory
from tuner.results import columns
from tuner.results.tune_state import (
    ERROR_FILE,
    TUNE_ERROR,
    TUNE_TERMINATED,
    TuneTrial,
    read_result_file,
    read_trials,
)

RESULTS_DIR = "results"
REPORTS_CACHE = "noisetune_reports.arrow"  # in a trial directory (`cache_trial_reports`)
_CACHE_SOURCE_BYTES = "noisetune.source_bytes"
_CACHE_LAST = "noisetune.last_report"
UNFINISHED = "unfinished"  # a trial an interrupted sweep has not finished yet
# The summary's count of the trials of each status, in the summary's order.
STATUS_COUNTS = {
    keys.REACHED: columns.N_REACHED,
    keys.PRUNED: columns.N_PRUNED,
    keys.DIVERGED: columns.N_DIVERGED,
    keys.EXHAUSTED: columns.N_EXHAUSTED,
    keys.STALLED: columns.N_STALLED,
    keys.ERROR: columns.N_ERROR,
    UNFINISHED: columns.N_UNFINISHED,
}

TRIAL_COLUMNS = [
    columns.TRIAL_ID, columns.STATUS, keys.BATCH_SIZE, keys.LR, keys.MOMENTUM,
    keys.WARMUP_STEPS, keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET, columns.FINAL_LOSS,
    keys.B_SIMPLE, keys.WALL_S, keys.REASON, columns.STEPS, keys.EXAMPLES,
    columns.EFFECTIVE_LR, keys.SEED, keys.STEPS_TO_TARGET_INTERP,
    keys.EXAMPLES_TO_TARGET_INTERP, keys.WEIGHT_DECAY, keys.BETA2, keys.SCHEDULE,
    keys.NOISE_METHOD,
]  # fmt: skip
# The order of the trials table: by configuration, then seed.
TRIAL_ORDER = [
    keys.BATCH_SIZE, keys.LR, keys.MOMENTUM, keys.WARMUP_STEPS, keys.WEIGHT_DECAY, keys.BETA2,
    keys.SCHEDULE, keys.SEED, columns.TRIAL_ID,
]  # fmt: skip
CURVE_COLUMNS = [
    columns.TRIAL_ID, keys.STEP, keys.EXAMPLES, keys.LOSS, keys.LR, keys.B_SIMPLE, keys.G2,
    keys.TRACE_SIGMA, keys.BATCH_SIZE_NOW, keys.SYNCS,
]  # fmt: skip
FRONT_COLUMNS = [
    keys.BATCH_SIZE, columns.STEPS, keys.EXAMPLES, columns.TRIAL_ID, keys.LR, keys.MOMENTUM,
    keys.WARMUP_STEPS, columns.PARETO, columns.STEPS_INTERP, columns.EXAMPLES_INTERP,
    columns.SEEDS_REACHED, columns.SEEDS, columns.STEPS_LO, columns.STEPS_HI,
    keys.WEIGHT_DECAY, keys.BETA2, keys.SCHEDULE,
]  # fmt: skip
ADAM_LAW_TEXT = "Adam: eps_opt(B) = eps_max/(0.5(sqrt(B_noise/B) + sqrt(B/B_noise))) on lr"
SGD_EMA_LAW_TEXT = "SGD with EMA momentum (SGD-SaI): eps_opt(B) = eps_max/(1 + B_noise/B) on lr"
GROWN_BATCH_FIT_NOTE = (
    "trials whose batch size grew (batch_step, adaptive_batch) are on the front but out of "
    "the B_crit fit and the lr law"
)
ALL_GROWN_NOTE = (
    "every trial that reached the target grew its batch size (batch_step, adaptive_batch): "
    "S(B) = S_min(1 + B_crit/B) is a law of a batch size held fixed, so there is no fit"
)
# A front this coarse next to eval_every gets a note (steps round up to evaluations).
COARSE_EVALUATIONS = 10

# Keys of a report that are bookkeeping, not curves: ours and the ones Tune adds.
_NOT_CURVES = {
    keys.TARGET_VALUE, keys.TRIAL_STATUS, keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET,
    keys.STEPS_TO_TARGET_INTERP, keys.EXAMPLES_TO_TARGET_INTERP, keys.REASON, keys.WALL_S,
    keys.OBJECTIVE, keys.WEIGHT_DECAY, keys.BETA2, keys.SCHEDULE, keys.NOISE_METHOD,
    *keys.TUNE_KEYS,
}  # fmt: skip


RECIPE = (keys.WEIGHT_DECAY, keys.BETA2, keys.SCHEDULE)  # searched, or fixed for the sweep


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _bookkeeping(name: str) -> bool:
    return name in _NOT_CURVES or name.startswith("time_")


@dataclass(frozen=True)
class Tables:
    """Everything `results/` holds, as data."""

    trials: pd.DataFrame
    curves: pd.DataFrame
    front: pd.DataFrame
    summary: dict[str, Any]


def results_dir(run_dir: Path) -> Path:
    return run_dir / RESULTS_DIR


def _trial_status(trial: TuneTrial, last: dict[str, Any]) -> tuple[str, str]:
    """Our status and reason for a trial, from Tune's status and its last report."""
    reported = last.get(keys.TRIAL_STATUS, keys.RUNNING)
    reason = str(last.get(keys.REASON, "") or "")
    if trial.status == TUNE_ERROR and reported == keys.RUNNING:
        return keys.ERROR, f"error: {trial.error}" if trial.error else "error"
    if reported != keys.RUNNING:
        return str(reported), reason
    if trial.status == TUNE_TERMINATED:
        step = last.get(keys.STEP, 0)
        return keys.PRUNED, reason or f"pruned: stopped by the scheduler at step {step}"
    return UNFINISHED, ""


def _trial_row(trial: TuneTrial, reasons: dict[str, str], last: dict[str, Any]) -> dict[str, Any]:
    status, reason = _trial_status(trial, last)
    if status == keys.PRUNED and trial.trial_id in reasons:
        reason = reasons[trial.trial_id]
    config = trial.config
    # The recipe as the trial reported it (a run from before it did: empty).
    recipe = {key: config.get(key, last.get(key)) for key in RECIPE}
    momentum = float(config.get(keys.MOMENTUM, 0.0))
    lr = float(config.get(keys.LR, math.nan))
    return {
        columns.TRIAL_ID: trial.trial_id,
        columns.STATUS: status,
        keys.BATCH_SIZE: int(config.get(keys.BATCH_SIZE, 0)),
        keys.LR: lr,
        keys.MOMENTUM: momentum,
        keys.WARMUP_STEPS: int(config.get(keys.WARMUP_STEPS, 0)),
        keys.STEPS_TO_TARGET: last.get(keys.STEPS_TO_TARGET, math.nan),
        keys.EXAMPLES_TO_TARGET: last.get(keys.EXAMPLES_TO_TARGET, math.nan),
        columns.FINAL_LOSS: last.get(keys.LOSS, math.nan),
        keys.B_SIMPLE: last.get(keys.B_SIMPLE, math.nan),
        keys.WALL_S: last.get(keys.WALL_S, math.nan),
        keys.REASON: reason,
        columns.STEPS: last.get(keys.STEP, 0),
        keys.EXAMPLES: last.get(keys.EXAMPLES, 0),
        columns.EFFECTIVE_LR: lr / (1.0 - momentum) if momentum < 1 else math.nan,
        keys.SEED: int(config.get(keys.SEED, 0)),
        keys.STEPS_TO_TARGET_INTERP: last.get(keys.STEPS_TO_TARGET_INTERP, math.nan),
        keys.EXAMPLES_TO_TARGET_INTERP: last.get(keys.EXAMPLES_TO_TARGET_INTERP, math.nan),
        keys.WEIGHT_DECAY: _float(recipe[keys.WEIGHT_DECAY]),
        keys.BETA2: _float(recipe[keys.BETA2]),
        keys.SCHEDULE: str(recipe[keys.SCHEDULE] or ""),
        keys.NOISE_METHOD: str(last.get(keys.NOISE_METHOD) or ""),
    }


def _read_prune_reasons(run_dir: Path) -> dict[str, str]:
    """Reasons a pruning scheduler recorded (results/decisions.jsonl), by trial id."""
    path = results_dir(run_dir) / "decisions.jsonl"
    reasons: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                reasons[record["trial_id"]] = record["reason"]
    return reasons


def trials_table(
    trials: list[TuneTrial], run_dir: Path, last_reports: Sequence[dict[str, Any]]
) -> pd.DataFrame:
    """One row per trial, from its config and its last report ({} without reports)."""
    reasons = _read_prune_reasons(run_dir)
    rows = [
        _trial_row(trial, reasons, last) for trial, last in zip(trials, last_reports, strict=True)
    ]
    table = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    floats = [
        keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET,
        keys.STEPS_TO_TARGET_INTERP, keys.EXAMPLES_TO_TARGET_INTERP,
    ]  # fmt: skip
    table = table.astype(dict.fromkeys(floats, float))
    return table.sort_values(TRIAL_ORDER, kind="stable").reset_index(drop=True)


def last_run_mask(steps: np.ndarray) -> np.ndarray:
    """Which of a trial's reports, in order, belong to its last run (one per step).

    A restarted trial (a retry after a worker failure, or a resumed sweep) reports again
    from the step of its checkpoint, or from step 0 without one, and Tune appends those
    reports to the ones before: a report is superseded by any later one at a step not
    after its own.
    """
    later_min = np.minimum.accumulate(steps[::-1])[::-1]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[:-1] < later_min[1:]
    return keep


def _curve_part(table: pa.Table | None) -> pa.Table | None:
    """A trial's curve: the reports of its last run (`last_run_mask`) that have a step (a
    whole number), with their numbers that are not bookkeeping (a boolean as 0 or 1)."""
    if table is None or keys.STEP not in table.column_names:
        return None
    step = table.column(keys.STEP)
    if not (pa.types.is_integer(step.type) or pa.types.is_floating(step.type)):
        return None
    steps = step.to_numpy(zero_copy_only=False).astype(float)  # null -> NaN
    has_step = np.isfinite(steps) & (steps == np.floor(steps))
    names = []
    for column in table.schema:
        if _bookkeeping(column.name) or not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
        ):
            continue
        names.append(column.name)
    part = table.select(names)
    for i, column in enumerate(part.schema):
        if pa.types.is_boolean(column.type):
            part = part.set_column(i, column.name, part.column(i).cast(pa.int64()))
    if not has_step.all():
        part, steps = part.filter(pa.array(has_step)), steps[has_step]
    if part.num_rows == 0:
        return None
    if part.column(keys.STEP).type != pa.int64() or part.column(keys.STEP).null_count:
        index = part.schema.get_field_index(keys.STEP)
        part = part.set_column(index, keys.STEP, pa.array(steps.astype(np.int64)))
    keep = last_run_mask(steps)
    return part if keep.all() else part.filter(pa.array(keep))


def _parse_trial_reports(path: Path | None) -> tuple[dict[str, Any], pa.Table | None]:
    """(last report, curve rows) of the trial directory `path`, parsed column-wise."""
    result = read_result_file(path)
    return result.last, _curve_part(result.table)


def cache_trial_reports(path: Path) -> bool:
    """Parse a finished trial's result.json once and keep what `build_tables` needs of it
    (its last report and curve rows) beside it as an Arrow file, tagged with the size of
    the result.json it came from. Called on the driver as each trial ends
    (tune_loggers.ReportsCache), so that the tables of a large sweep are built by reading
    these files instead of parsing every report's JSON at the end. False where the trial
    has no curve: nothing is cached then."""
    source = path / "result.json"
    if not source.exists():
        return False
    size = source.stat().st_size
    last, part = _parse_trial_reports(path)
    if part is None:
        return False
    metadata = {
        _CACHE_SOURCE_BYTES: str(size),
        _CACHE_LAST: json.dumps(last),
    }
    part = part.replace_schema_metadata(metadata)
    # Written in place: Tune's syncer copies the trial directory in the background and
    # fails on a temporary file renamed away under it. A reader that meets a file cut
    # short (a copy taken mid-write, a crash) cannot open it and parses result.json.
    cache = path / REPORTS_CACHE
    with pa.OSFile(str(cache), "wb") as sink, pa.ipc.new_file(sink, part.schema) as writer:
        writer.write_table(part)
    return True


def _cached_reports(path: Path) -> tuple[dict[str, Any], pa.Table] | None:
    """What `cache_trial_reports` kept for the trial directory `path`, if its result.json
    has not changed size since (a resumed or retried trial appends to it)."""
    cache = path / REPORTS_CACHE
    try:
        size = (path / "result.json").stat().st_size
        # Mapped, not read: the columns stay in the page cache until concatenated.
        with pa.memory_map(str(cache)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowException):
        return None
    metadata = table.schema.metadata or {}
    if metadata.get(_CACHE_SOURCE_BYTES.encode()) != str(size).encode():
        return None
    last: dict[str, Any] = json.loads(metadata[_CACHE_LAST.encode()])
    return last, table.replace_schema_metadata(None)


def _read_trial_reports(trial: TuneTrial) -> tuple[dict[str, Any], pa.Table | None]:
    """(last report, curve rows) of one trial: from its cache when fresh, else parsed."""
    if trial.path is not None:
        cached = _cached_reports(trial.path)
        if cached is not None:
            return cached
    return _parse_trial_reports(trial.path)


def _read_reports(trials: list[TuneTrial]) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every trial's last report and the curves table (`_curve_part` of each trial, its
    columns in CURVE_COLUMNS order then by name), read column-wise in a thread pool:
    each trial from its reports cache when fresh, else its result.json."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        read = list(pool.map(_read_trial_reports, trials))
    lasts = [last for last, _ in read]
    ids: list[str] = []
    counts: list[int] = []
    parts: list[pa.Table] = []
    for trial, (_, part) in zip(trials, read, strict=True):
        if part is not None:
            ids.append(trial.trial_id)
            counts.append(part.num_rows)
            parts.append(part)
    del read
    if parts:
        combined = pa.concat_tables(parts, promote_options="permissive")
    else:
        combined = pa.table({c: pa.array([], pa.float64()) for c in CURVE_COLUMNS[1:]})
    del parts
    # The column order done in Arrow, where selecting columns copies nothing.
    for column in CURVE_COLUMNS[1:]:
        if column not in combined.column_names:
            combined = combined.append_column(column, pa.nulls(combined.num_rows, pa.float64()))
    extra = sorted(c for c in combined.column_names if c not in CURVE_COLUMNS)
    combined = combined.select(CURVE_COLUMNS[1:] + extra)
    # Each trial's id repeated over its rows, taken in Arrow (strings never become objects).
    rows_of = pa.array(np.repeat(np.arange(len(ids)), counts), pa.int64())
    combined = combined.add_column(0, columns.TRIAL_ID, pa.array(ids, pa.string()).take(rows_of))
    return lasts, combined.to_pandas()


def _interp_steps(trials: pd.DataFrame) -> pd.Series:
    """Interpolated steps to the target, the evaluation's step where a trial has none (a
    run from before interpolation)."""
    steps = trials[keys.STEPS_TO_TARGET]
    if keys.STEPS_TO_TARGET_INTERP not in trials:
        return steps
    return trials[keys.STEPS_TO_TARGET_INTERP].fillna(steps)


def _seeds(trials: pd.DataFrame) -> pd.Series:
    """Each trial's training seed (0 for a run from before seeds)."""
    if keys.SEED not in trials:
        return pd.Series(0, index=trials.index)
    return trials[keys.SEED].fillna(0).astype(int)


def seed_leaders(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, seed) the trial that reached the target in the fewest steps
    (interpolated; ties: evaluation steps, then trial id)."""
    reached = trials[trials[columns.STATUS] == keys.REACHED]
    reached = reached.assign(**{"_interp": _interp_steps(reached), keys.SEED: _seeds(reached)})
    ordered = reached.sort_values(
        ["_interp", keys.STEPS_TO_TARGET, columns.TRIAL_ID], kind="stable"
    )
    return ordered.groupby([keys.BATCH_SIZE, keys.SEED]).head(1).drop(columns="_interp")


def grown_batch(trials: pd.DataFrame) -> pd.Series:
    """Which trials changed their batch size while they trained: the batch_step schedule,
    or any trial whose last report consumed more examples than its steps at its batch
    size (an adaptive batch size that grew: it only grows). Read off the trials table
    alone, no new column: an adaptive trial that never grew (its rule never asked for more
    than B₀) trained at one batch size, and counts as such; a run from before `examples`
    (0) or a row without steps never grew."""
    grown = pd.Series(False, index=trials.index)
    if keys.SCHEDULE in trials:
        grown |= trials[keys.SCHEDULE] == "batch_step"
    if keys.EXAMPLES in trials and columns.STEPS in trials:
        examples = pd.to_numeric(trials[keys.EXAMPLES], errors="coerce").to_numpy(float)
        steps = pd.to_numeric(trials[columns.STEPS], errors="coerce").to_numpy(float)
        sizes = pd.to_numeric(trials[keys.BATCH_SIZE], errors="coerce").to_numpy(float)
        with np.errstate(invalid="ignore"):
            grown |= examples > steps * sizes  # nan compares False
    return grown


def _padded_median(values: pd.Series, n_seeds: int) -> float:
    """The median over `n_seeds` seeds of `values`, a seed without one counting as inf."""
    given = values.to_numpy(float)
    return float(np.median(np.concatenate([given, np.full(n_seeds - len(given), np.inf)])))


def front_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per batch size the fewest steps to the target: with one training seed, its best
    trial; with several, the median over seeds of each seed's best (a seed that never
    reached the target there counts as infinitely many steps, so a batch size where
    most seeds missed it is left out), `steps_lo`–`steps_hi` their range, and the
    configuration of the seed at the median. `pareto`: not dominated in interpolated
    steps and examples."""
    leaders = seed_leaders(trials)
    if leaders.empty:
        return pd.DataFrame(columns=FRONT_COLUMNS)
    n_seeds = int(_seeds(trials).nunique())
    rows = []
    for batch_size, group in leaders.groupby(keys.BATCH_SIZE):
        interp = _interp_steps(group).to_numpy(float)
        padded = np.concatenate([interp, np.full(n_seeds - len(group), np.inf)])
        median = float(np.median(padded))
        if not math.isfinite(median):
            continue
        # The configuration shown is the seed whose steps are the (lower) median.
        middle = group.iloc[int(np.argsort(interp, kind="stable")[(len(padded) - 1) // 2])]
        steps = np.concatenate([group[keys.STEPS_TO_TARGET].to_numpy(float), padded[len(group) :]])
        examples = round(float(np.median(steps))) * int(batch_size)
        examples_interp = median * int(batch_size)
        if grown_batch(group).any():
            # A batch size that grew (batch_step, adaptive): the examples the trials consumed.
            examples = round(_padded_median(group[keys.EXAMPLES_TO_TARGET], n_seeds))
            examples_interp = _padded_median(
                group[keys.EXAMPLES_TO_TARGET_INTERP].fillna(group[keys.EXAMPLES_TO_TARGET]),
                n_seeds,
            )
        rows.append(
            {
                keys.BATCH_SIZE: int(batch_size),
                columns.STEPS: round(float(np.median(steps))),
                keys.EXAMPLES: examples,
                columns.TRIAL_ID: middle[columns.TRIAL_ID],
                keys.LR: middle[keys.LR],
                keys.MOMENTUM: middle[keys.MOMENTUM],
                keys.WARMUP_STEPS: middle[keys.WARMUP_STEPS],
                keys.WEIGHT_DECAY: middle.get(keys.WEIGHT_DECAY, math.nan),
                keys.BETA2: middle.get(keys.BETA2, math.nan),
                keys.SCHEDULE: middle.get(keys.SCHEDULE, ""),
                columns.STEPS_INTERP: median,
                columns.EXAMPLES_INTERP: examples_interp,
                columns.SEEDS_REACHED: len(group),
                columns.SEEDS: n_seeds,
                columns.STEPS_LO: float(interp.min()),
                columns.STEPS_HI: float(padded.max()),
            }
        )
    if not rows:
        return pd.DataFrame(columns=FRONT_COLUMNS)
    front = pd.DataFrame(rows).sort_values(keys.BATCH_SIZE)
    front[columns.PARETO] = theory.pareto_mask(
        front[columns.STEPS_INTERP].to_numpy(float),
        front[columns.EXAMPLES_INTERP].to_numpy(float),
    )
    return front[FRONT_COLUMNS].reset_index(drop=True)


def pooled_at_target(
    trials: pd.DataFrame, curves: pd.DataFrame, column: str, reference: float | None = None
) -> float:
    """A measured quantity (b_simple, b_noise, eps_max) pooled over the trials that
    reached the target, taken at the target.

    All of them are then at the same loss, which makes them comparable (DESIGN.md §1,
    pitfalls 1-2), pooled by `theory.pooled_noise_scale`.
    """
    return _pooled(_rows_at_target(trials, curves), column, reference)


def _rows_at_target(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame | None:
    """The curve rows of the trials that reached the target, at their steps_to_target, in
    curves order, with their batch_size (None: no such trial or no curves).

    A lookup per row instead of a merge, which copied every curve row of those trials.
    """
    reached = trials[trials[columns.STATUS] == keys.REACHED]
    if reached.empty or curves.empty:
        return None
    by_id = reached.set_index(columns.TRIAL_ID)
    target_steps = _per_row(curves[columns.TRIAL_ID], by_id[keys.STEPS_TO_TARGET].astype(float))
    at_target = curves[curves[keys.STEP].to_numpy() == target_steps]
    batch_sizes = at_target[columns.TRIAL_ID].map(by_id[keys.BATCH_SIZE])
    return at_target.assign(**{keys.BATCH_SIZE: batch_sizes})


def _per_row(ids: pd.Series, values: pd.Series) -> np.ndarray:
    """`ids.map(values)` as floats, looked up once per run of equal ids: the curves
    table holds each trial's rows together, so that is once per trial, not per row."""
    after, before = ids.iloc[1:].reset_index(drop=True), ids.iloc[:-1].reset_index(drop=True)
    # Compared in the column's own dtype (Arrow strings by default): no object array.
    changes = (after != before).to_numpy(dtype=bool, na_value=True)
    starts = np.flatnonzero(np.r_[True, changes])
    per_run = ids.iloc[starts].map(values).to_numpy(dtype=float)
    return np.repeat(per_run, np.diff(np.r_[starts, len(ids)]))


def _pooled(at_target: pd.DataFrame | None, column: str, reference: float | None = None) -> float:
    if at_target is None or column not in at_target:
        return math.nan
    return theory.pooled_noise_scale(at_target[column], at_target[keys.BATCH_SIZE], reference)


def summarize(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    front: pd.DataFrame,
    target: dict[str, Any],
    *,
    optimizer: str = "sgd",
    eval_every: int | None = None,
) -> dict[str, Any]:
    """summary.json: the trade-off fit of the front and what it finds, noise scales, and
    sweep totals."""
    status = trials[columns.STATUS]
    summary: dict[str, Any] = {
        columns.TARGET: target, columns.OPTIMIZER: optimizer,
        columns.S_MIN: None, columns.E_MIN: None, columns.B_CRIT: None,
        columns.B_CRIT_INTERVAL: None, columns.B_CRIT_KIND: None, columns.B_CRIT_NOTE: None,
        columns.B_CRIT_INTERVAL_COVERS: None, columns.FIT_RMS_LOG: None,
        columns.FIT_POINTS: 0, columns.FIT_NOTE: None, columns.RESOLUTION_NOTE: None,
        keys.B_SIMPLE: None, keys.B_NOISE: None, keys.EPS_MAX: None,
        columns.B_NOISE_SOURCE: None, columns.LR_LAW: None, columns.LR_NOTE: None,
        columns.N_TRIALS: len(trials),
        **{count: int((status == name).sum()) for name, count in STATUS_COUNTS.items()},
        columns.SEEDS: int(_seeds(trials).nunique()),
        columns.TOTAL_EXAMPLES: int(trials[keys.EXAMPLES].sum()),
    }  # fmt: skip
    at_target = _rows_at_target(trials, curves)
    b_simple = _pooled(at_target, keys.B_SIMPLE)
    summary[keys.B_SIMPLE] = b_simple if math.isfinite(b_simple) else None
    growing = grown_batch(trials)
    if growing.any():
        # S(B) and the lr laws are laws of a batch size held fixed: a trial whose batch
        # grew (batch_step, adaptive_batch) took its steps at B₀ and above. They stay on
        # the front, out of the fits.
        front = front_table(trials[~growing])
    _b_crit_summary(summary, front, summary[columns.SEEDS], eval_every)
    if growing.any():
        reached = trials[columns.STATUS] == keys.REACHED
        every = front.empty and (reached & growing).any()
        if every:  # not "no trial reached the target": they did, all with a grown batch
            summary[columns.B_CRIT_NOTE] = ALL_GROWN_NOTE
        note = ALL_GROWN_NOTE if every else GROWN_BATCH_FIT_NOTE
        summary[columns.FIT_NOTE] = "; ".join(filter(None, [summary[columns.FIT_NOTE], note]))
    summary[columns.LR_NOTE] = _lr_edge_note(trials, front)
    trained = front[front[columns.STEPS_INTERP] > 0]  # a target met at step 0 says nothing of lr
    law = theory.LAW_OF_OPTIMIZER.get(optimizer)
    if law == "adam":
        _adam_law_summary(summary, trained)
        return summary
    if law == "sgd_ema":
        _sgd_ema_law_summary(summary, trained)
        return summary
    b_noise = _pooled(at_target, keys.B_NOISE)
    eps_max = _pooled(at_target, keys.EPS_MAX, reference=b_noise)
    if math.isfinite(b_noise) and math.isfinite(eps_max):
        summary.update({
            keys.B_NOISE: b_noise, keys.EPS_MAX: eps_max,
            columns.B_NOISE_SOURCE: "measured (curvature), pooled at the target",
        })  # fmt: skip
    elif trained[keys.BATCH_SIZE].nunique() >= 2:
        lr = trained[keys.LR].to_numpy(float)
        effective = lr / (1.0 - trained[keys.MOMENTUM].to_numpy(float))
        lr_fit = theory.fit_eps_opt(trained[keys.BATCH_SIZE].to_numpy(float), effective)
        summary.update({
            keys.B_NOISE: lr_fit.b_noise, keys.EPS_MAX: lr_fit.eps_max,
            columns.B_NOISE_SOURCE: "fitted to the best effective lr per batch size",
        })  # fmt: skip
    if summary[keys.EPS_MAX] is not None:
        summary[columns.LR_LAW] = "SGD: eps_opt(B) = eps_max/(1 + B_noise/B) on lr/(1-momentum)"
    return summary


def _adam_law_summary(summary: dict[str, Any], trained: pd.DataFrame) -> None:
    """Adam's law (Li et al. 2024) on the best lr per batch size, its B_noise the B_crit of
    the front's steps (their Eq. 21): a measured B_noise is McCandlish's, not this law's."""
    if trained[keys.BATCH_SIZE].nunique() < 2:
        return
    fit = theory.fit_eps_opt_adam(
        trained[keys.BATCH_SIZE].to_numpy(float),
        trained[keys.LR].to_numpy(float),
        steps=trained[columns.STEPS_INTERP].to_numpy(float),
    )
    _fitted_law(summary, fit, "B_crit of the front's steps (Li et al. 2024, eq. 21)", ADAM_LAW_TEXT)


def _sgd_ema_law_summary(summary: dict[str, Any], trained: pd.DataFrame) -> None:
    """SGD's law on the best lr per batch size (the rate of EMA momentum is the lr), fitted:
    the measured B_noise and eps_max are the unpreconditioned gradient's, not those of the
    gradient SGD-SaI's frozen scales precondition (tuner.theory.lr_laws)."""
    if trained[keys.BATCH_SIZE].nunique() < 2:
        return
    fit = theory.fit_eps_opt(
        trained[keys.BATCH_SIZE].to_numpy(float), trained[keys.LR].to_numpy(float)
    )
    _fitted_law(summary, fit, "fitted to the best lr per batch size", SGD_EMA_LAW_TEXT)


def _fitted_law(summary: dict[str, Any], fit: theory.EpsOptFit, source: str, law_text: str) -> None:
    """A law fitted to the front's best lrs into the summary: its B_noise, eps_max, where
    B_noise came from (a bound where the fit sits at the end of its range) and the law."""
    bound = ", at the end of its range: a bound" if fit.at_bound else ""
    summary.update({
        keys.B_NOISE: fit.b_noise, keys.EPS_MAX: fit.eps_max,
        columns.B_NOISE_SOURCE: source + bound, columns.LR_LAW: law_text,
    })  # fmt: skip


def _lr_edge_note(trials: pd.DataFrame, front: pd.DataFrame) -> str | None:
    """Where a batch size's best lr is the largest or the smallest of 3 or more tried
    there: its best lr may lie beyond the range, and its steps be too many."""
    edges: dict[str, list[int]] = {"largest": [], "smallest": []}
    for batch_size, lr in zip(front[keys.BATCH_SIZE], front[keys.LR], strict=True):
        tried = trials.loc[trials[keys.BATCH_SIZE] == batch_size, keys.LR].unique()
        if len(tried) < 3:
            continue
        if lr >= tried.max():
            edges["largest"].append(int(batch_size))
        elif lr <= tried.min():
            edges["smallest"].append(int(batch_size))
    parts = [
        f"the {edge} lr tried at B={', '.join(map(str, sizes))}"
        for edge, sizes in edges.items()
        if sizes
    ]
    if not parts:
        return None
    return (
        f"the best lr is {' and '.join(parts)}: the best may lie beyond the range (and the "
        "steps there be too many); widen the lr range"
    )


def _b_crit_summary(
    summary: dict[str, Any], front: pd.DataFrame, seeds: int, eval_every: int | None
) -> None:
    """The fit of S(B) = S_min(1 + B_crit/B) to the front's interpolated steps (with
    several seeds, each batch size's median over seeds: the seeds at one batch size share
    its lr grid and its misfit of the law, so they are one point, not several
    independent ones; a seed that missed counts in the median), a target met at step 0
    kept out, and what the fit finds (`theory.b_crit_finding`): B_crit and its interval
    only when they are a finding, else a note saying why not."""
    if front.empty:
        summary[columns.B_CRIT_NOTE] = "no trial reached the target"
        return
    steps = front[columns.STEPS_INTERP].to_numpy(float)
    at_zero = sorted(int(b) for b in front[keys.BATCH_SIZE][steps <= 0])
    if at_zero:
        sizes = ", ".join(map(str, at_zero))
        summary[columns.FIT_NOTE] = (
            f"B={sizes}: the target was met at step 0 (before any training); kept out of the fit"
        )
    keep = steps > 0
    finding = theory.b_crit_finding(
        front[keys.BATCH_SIZE].to_numpy(float)[keep], steps[keep], seeds=seeds
    )
    summary.update({
        columns.B_CRIT_KIND: finding.kind, columns.B_CRIT_NOTE: finding.note,
        columns.B_CRIT_INTERVAL_COVERS: finding.covers, columns.FIT_POINTS: finding.n_points,
    })  # fmt: skip
    fit = finding.fit
    if fit is not None and finding.kind not in ("too_few", "undetermined"):
        summary[columns.FIT_RMS_LOG] = fit.rms_log
        if finding.kind in ("inside", "below"):
            summary[columns.S_MIN] = fit.s_min
        if finding.kind in ("inside", "beyond"):
            summary[columns.E_MIN] = fit.e_min
    if finding.kind == "inside" and finding.interval is not None:
        summary[columns.B_CRIT] = finding.b_crit
        summary[columns.B_CRIT_INTERVAL] = list(finding.interval)
    positive = front[columns.STEPS_INTERP][front[columns.STEPS_INTERP] > 0]
    if eval_every and len(positive) and positive.min() < COARSE_EVALUATIONS * eval_every:
        summary[columns.RESOLUTION_NOTE] = (
            f"the fewest steps on the front ({positive.min():.0f}) are under "
            f"{COARSE_EVALUATIONS} evaluation intervals (eval_every {eval_every}): steps to "
            "the target are interpolated between evaluations; a smaller eval_every measures "
            "them more closely"
        )


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def summary_target(target: dict[str, Any]) -> Target:
    """The summary's target (its `target` field) as a Target."""
    return Target(target["metric"], float(target["value"]), target.get("mode", "min"))


def target_text(target: dict[str, Any]) -> str:
    """The target as the sweep compares it: "loss <= 0.3", "accuracy >= 0.96"."""
    return str(summary_target(target))


def b_crit_text(summary: dict[str, Any]) -> str:
    """B_crit with its interval when it is a finding, else why there is none."""
    interval = summary.get(columns.B_CRIT_INTERVAL)
    b_crit = summary.get(columns.B_CRIT)
    if b_crit is not None and interval:
        return f"{_fmt(b_crit)} (90% interval {_fmt(interval[0])}-{_fmt(interval[1])})"
    return str(summary.get(columns.B_CRIT_NOTE) or "n/a (no trial reached the target)")


def summary_markdown(tables: Tables) -> str:
    """summary.md: the numbers, the front, and every trial."""
    s = tables.summary
    counts = ", ".join(
        f"{s[count]} {name}"
        for name, count in STATUS_COUNTS.items()
        if name != UNFINISHED and s.get(count) is not None
    )
    if s[columns.N_UNFINISHED]:
        counts += f", {s[columns.N_UNFINISHED]} {UNFINISHED}"
    note_fields = (columns.FIT_NOTE, columns.RESOLUTION_NOTE, columns.LR_NOTE, columns.LR_LAW)
    notes = [s.get(k) for k in note_fields]
    b_crit_ratio = _ratio(s[columns.B_CRIT], s[keys.B_SIMPLE])
    lines = [
        f"# noisetune summary: target {target_text(s[columns.TARGET])}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| B_crit (fit of the front) | {b_crit_text(s)} |",
        f"| what the interval covers | {s.get(columns.B_CRIT_INTERVAL_COVERS) or 'n/a'} |",
        f"| S_min (steps) | {_fmt(s[columns.S_MIN])} |",
        f"| E_min (examples) | {_fmt(s[columns.E_MIN])} |",
        f"| B_simple (measured, pooled at the target) | {_fmt(s[keys.B_SIMPLE])} |",
        f"| B_crit / B_simple | {_fmt(b_crit_ratio)} |",
        f"| B_noise ({s[columns.B_NOISE_SOURCE] or 'n/a'}) | {_fmt(s[keys.B_NOISE])} |",
        f"| eps_max | {_fmt(s[keys.EPS_MAX])} |",
        f"| optimizer | {s.get(columns.OPTIMIZER, 'sgd')} |",
        f"| trials | {s[columns.N_TRIALS]} ({counts}) over {s.get(columns.SEEDS, 1)} "
        "training seed(s) |",
        f"| total examples (compute of the sweep) | {s[columns.TOTAL_EXAMPLES]:,} |",
        "",
        *[f"- {note}" for note in notes if note],
        "",
        "B_crit depends on the target: it grows as the target gets harder to reach. B_simple",
        "is not B_crit: their ratio is a finding (published ratios span 0.05-8, and on OLMo",
        "1B/7B B_simple lay orders of magnitude below the critical batch size measured",
        "directly: Merrill et al. 2025), not an error. B_crit is the fit of the front;",
        "B_simple and B_noise are diagnostics beside it.",
        "",
        "![Pareto front: steps vs examples](plots/pareto_front.png)",
        "![Best lr per batch size and eps_opt(B)](plots/lr_vs_batch.png)",
        "![Noise scale by batch size and progress to the target](plots/noise_scale.png)",
        "",
        "## Front: fewest steps to the target per batch size",
        "",
        tables.front.to_markdown(index=False)
        if not tables.front.empty
        else "(no trial reached it)",
        "",
        "## Trials",
        "",
        tables.trials.drop(columns=[columns.EFFECTIVE_LR]).to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    return "\n".join(lines)


def build_tables(
    run_dir: Path,
    target: dict[str, Any],
    *,
    optimizer: str = "sgd",
    eval_every: int | None = None,
) -> Tables:
    """Read the Tune experiment in `run_dir` into the results tables. `effective_lr`
    (lr/(1 − momentum), the rate SGD's law is stated in) is left empty for other
    optimisers."""
    tune_trials = read_trials(run_dir, with_results=False)
    last_reports, curves = _read_reports(tune_trials)
    trials = trials_table(tune_trials, run_dir, last_reports)
    if optimizer != "sgd":
        trials[columns.EFFECTIVE_LR] = math.nan
    front = front_table(trials)
    summary = summarize(trials, curves, front, target, optimizer=optimizer, eval_every=eval_every)
    return Tables(trials, curves, front, summary)


def write_tables(run_dir: Path, tables: Tables) -> Path:
    """Write results/ (each file replaced whole, so a reader never sees half of one)."""
    out = results_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "trials.csv", lambda p: tables.trials.to_csv(p, index=False))
    _atomic(out / "trials.parquet", lambda p: tables.trials.to_parquet(p, index=False))
    _atomic(out / "curves.parquet", lambda p: tables.curves.to_parquet(p, index=False))
    _atomic(out / "front.csv", lambda p: tables.front.to_csv(p, index=False))
    _atomic(
        out / "summary.json",
        lambda p: p.write_text(json.dumps(_jsonable(tables.summary), indent=2)),
    )
    _atomic(out / "summary.md", lambda p: p.write_text(summary_markdown(tables)))
    return out


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class ErrorGroup:
    """The trials that raised one and the same error: the exception's line, how many,
    and the full traceback of the first of them (relative to the run directory)."""

    message: str
    count: int
    traceback: str


def trial_errors(run_dir: Path) -> list[ErrorGroup]:
    """The distinct errors of the sweep's errored trials, most frequent first."""
    groups: dict[str, list[str]] = {}
    for trial in read_trials(run_dir, with_results=False):
        if trial.status != TUNE_ERROR:
            continue
        where = (trial.path / ERROR_FILE).relative_to(run_dir) if trial.path else Path("?")
        groups.setdefault(trial.error or "(no error message)", []).append(where.as_posix())
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [ErrorGroup(message, len(paths), sorted(paths)[0]) for message, paths in ordered]


def no_tables_message(where: object) -> str:
    """The one-line error for a run directory or URI without results/ tables."""
    return f"{where}: no results/ tables (is this a noisetune run?)"


def read_tables(run_dir: Path, *, curves: bool = True) -> Tables:
    """Read back what write_tables wrote; without `curves`, the curves table is left
    empty (its columns only) for callers that do not use it: it holds a row per report,
    millions in a large sweep."""
    out = results_dir(run_dir)
    if not (out / "trials.parquet").exists():
        raise FileNotFoundError(no_tables_message(run_dir))
    return Tables(
        trials=pd.read_parquet(out / "trials.parquet"),
        curves=pd.read_parquet(out / "curves.parquet")
        if curves
        else pd.DataFrame(columns=CURVE_COLUMNS),
        front=pd.read_csv(out / "front.csv"),
        summary=json.loads((out / "summary.json").read_text()),
    )


def export(tables: Tables, fmt: str, table: str, out: Path | None) -> str | None:
    """Export one table; returns the text when there is no `out` (binary formats need one)."""
    if fmt == "markdown" and table == "summary":
        text = summary_markdown(tables)
    elif fmt == "json" and table == "summary":
        text = json.dumps(_jsonable(tables.summary), indent=2) + "\n"  # as summary.json
    elif table == "summary":
        return _export_frame(_summary_row(tables.summary), fmt, out)
    else:
        return _export_frame(getattr(tables, table), fmt, out)
    if out is None:
        return text
    out.write_text(text)
    return None


def _summary_row(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary as one row: the target as target_metric, target_value, target_mode,
    an interval as its _lo and _hi ends."""
    row: dict[str, Any] = {}
    for name, value in _jsonable(summary).items():
        if isinstance(value, dict):
            row.update({f"{name}_{key}": item for key, item in value.items()})
        elif isinstance(value, list):
            row.update({f"{name}_lo": value[0], f"{name}_hi": value[1]})
        else:
            row[name] = value
    return pd.DataFrame([row])


def _export_frame(frame: pd.DataFrame, fmt: str, out: Path | None) -> str | None:
    if fmt == "parquet":
        if out is None:
            raise ValueError("--format parquet writes a binary file: give --out PATH")
        frame.to_parquet(out, index=False)
        return None
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "json":
        text = frame.to_json(orient="records", indent=2)
    else:
        text = frame.to_markdown(index=False, floatfmt=".4g") + "\n"
    if out is None:
        return text
    out.write_text(text)
    return None
