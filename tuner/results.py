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
from tuner import theory
from tuner.tune_state import (
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

TRIAL_COLUMNS = [
    "trial_id", "status", keys.BATCH_SIZE, keys.LR, keys.MOMENTUM, keys.WARMUP_STEPS,
    keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET, "final_loss", keys.B_SIMPLE,
    keys.WALL_S, keys.REASON, "steps", "examples", "effective_lr",
]  # fmt: skip
CURVE_COLUMNS = [
    "trial_id", keys.STEP, keys.EXAMPLES, keys.LOSS, keys.LR, keys.B_SIMPLE, keys.G2,
    keys.TRACE_SIGMA,
]  # fmt: skip
FRONT_COLUMNS = [
    keys.BATCH_SIZE, "steps", "examples", "trial_id", keys.LR, keys.MOMENTUM,
    keys.WARMUP_STEPS, "pareto",
]  # fmt: skip

# Keys of a report that are bookkeeping, not curves: ours and the ones Tune adds.
_NOT_CURVES = {
    keys.TARGET_VALUE, keys.TRIAL_STATUS, keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET,
    keys.REASON, keys.WALL_S, keys.OBJECTIVE, "timestamp", "checkpoint_dir_name", "done",
    "training_iteration", "trial_id", "date", "time_this_iter_s", "time_total_s", "pid",
    "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
    "checkpoint_path", "should_checkpoint",
}  # fmt: skip


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


def _trial_row(
    trial: TuneTrial, reasons: dict[str, str], last: dict[str, Any] | None = None
) -> dict[str, Any]:
    if last is None:
        last = trial.results[-1] if trial.results else {}
    status, reason = _trial_status(trial, last)
    if status == keys.PRUNED and trial.trial_id in reasons:
        reason = reasons[trial.trial_id]
    config = trial.config
    momentum = float(config.get(keys.MOMENTUM, 0.0))
    lr = float(config.get(keys.LR, math.nan))
    return {
        "trial_id": trial.trial_id,
        "status": status,
        keys.BATCH_SIZE: int(config.get(keys.BATCH_SIZE, 0)),
        keys.LR: lr,
        keys.MOMENTUM: momentum,
        keys.WARMUP_STEPS: int(config.get(keys.WARMUP_STEPS, 0)),
        keys.STEPS_TO_TARGET: last.get(keys.STEPS_TO_TARGET, math.nan),
        keys.EXAMPLES_TO_TARGET: last.get(keys.EXAMPLES_TO_TARGET, math.nan),
        "final_loss": last.get(keys.LOSS, math.nan),
        keys.B_SIMPLE: last.get(keys.B_SIMPLE, math.nan),
        keys.WALL_S: last.get(keys.WALL_S, math.nan),
        keys.REASON: reason,
        "steps": last.get(keys.STEP, 0),
        "examples": last.get(keys.EXAMPLES, 0),
        "effective_lr": lr / (1.0 - momentum) if momentum < 1 else math.nan,
    }


def last_run(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports of a trial's last run, one per step.

    A restarted trial (a retry after a worker failure, or a resumed sweep) reports again
    from the step of its checkpoint, or from step 0 without one, and Tune appends those
    reports to the ones before: a report at a step not after the previous one drops the
    reports it supersedes.
    """
    history: list[dict[str, Any]] = []
    for result in results:
        step = result.get(keys.STEP)
        while history and step is not None and history[-1].get(keys.STEP, -1) >= step:
            history.pop()
        history.append(result)
    return history


def _curve_rows(trial: TuneTrial) -> list[dict[str, Any]]:
    rows = []
    for result in last_run(trial.results):
        row: dict[str, Any] = {"trial_id": trial.trial_id}
        for name, value in result.items():
            if name not in _NOT_CURVES and isinstance(value, (int, float)):
                row[name] = value
        rows.append(row)
    return rows


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
    trials: list[TuneTrial], run_dir: Path, last_reports: Sequence[dict[str, Any]] | None = None
) -> pd.DataFrame:
    """One row per trial, from its last report (`last_reports`, else `trial.results`)."""
    reasons = _read_prune_reasons(run_dir)
    lasts = last_reports if last_reports is not None else [None] * len(trials)
    rows = [_trial_row(trial, reasons, last) for trial, last in zip(trials, lasts, strict=True)]
    table = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return table.astype({keys.STEPS_TO_TARGET: float, keys.EXAMPLES_TO_TARGET: float})


def curves_table(trials: list[TuneTrial]) -> pd.DataFrame:
    """One row per report of each trial's last run, from `trial.results` (row by row)."""
    rows = [row for trial in trials for row in _curve_rows(trial)]
    return _curve_columns_in_order(pd.DataFrame(rows))


def _curve_columns_in_order(table: pd.DataFrame) -> pd.DataFrame:
    for column in CURVE_COLUMNS:
        if column not in table:
            table[column] = pd.Series(dtype=float)
    extra = [c for c in table.columns if c not in CURVE_COLUMNS]
    return table[CURVE_COLUMNS + sorted(extra)]


class _RowByRow(Exception):
    """Reports the column-wise reader cannot take exactly as `curves_table` does."""


def _last_run_mask(steps: np.ndarray) -> np.ndarray:
    """`last_run` as a mask: a report is superseded by any later one at a step not after
    its own (the stack `last_run` keeps is strictly increasing in step)."""
    later_min = np.minimum.accumulate(steps[::-1])[::-1]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[:-1] < later_min[1:]
    return keep


def _curve_part(table: pa.Table | None) -> pa.Table | None:
    """A trial's curve rows (its last run) and columns (numbers, not bookkeeping)."""
    if table is None:
        return None
    if keys.STEP not in table.column_names:
        raise _RowByRow("a report without a step")
    step = table.column(keys.STEP)
    if not pa.types.is_integer(step.type) and not pa.types.is_floating(step.type):
        raise _RowByRow("a step that is not a number")
    steps = step.to_numpy()
    if step.null_count or (steps.dtype.kind == "f" and np.isnan(steps).any()):
        raise _RowByRow("a report without a step")
    names = []
    for column in table.schema:
        if column.name in _NOT_CURVES:
            continue
        if pa.types.is_boolean(column.type):
            raise _RowByRow(f"a boolean metric {column.name!r}")  # row by row: bool is int
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            names.append(column.name)
    part = table.select(names)
    keep = _last_run_mask(steps)
    return part if keep.all() else part.filter(pa.array(keep))


def _parse_trial_reports(path: Path | None) -> tuple[dict[str, Any], pa.Table | None]:
    """(last report, curve rows) of the trial directory `path`, parsed column-wise."""
    try:
        result = read_result_file(path)
    except pa.ArrowException as exc:
        raise _RowByRow(str(exc)) from exc
    return result.last, _curve_part(result.table)


def cache_trial_reports(path: Path) -> bool:
    """Parse a finished trial's result.json once and keep what `build_tables` needs of it
    (its last report and curve rows) beside it as an Arrow file, tagged with the size of
    the result.json it came from. Called on the driver as each trial ends
    (tune_loggers.ReportsCache), so that the tables of a large sweep are built by reading
    these files instead of parsing every report's JSON at the end. False where the trial
    has no reports, or they need the row-by-row reader: nothing is cached then."""
    source = path / "result.json"
    if not source.exists():
        return False
    size = source.stat().st_size
    try:
        last, part = _parse_trial_reports(path)
    except _RowByRow:
        return False
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
    """Every trial's last report and the curves table, column-wise in a thread pool
    (each trial from its reports cache when fresh, else its result.json parsed by
    pyarrow): the same as `trials_table` and `curves_table` on `read_trials` (tested),
    without a dict per report. Raises _RowByRow where that sameness is not guaranteed."""
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
    if not parts:
        raise _RowByRow("no reports")  # the row-by-row table has no columns to infer
    combined = pa.concat_tables(parts, promote_options="permissive")
    del parts
    # `_curve_columns_in_order` done in Arrow, where selecting columns copies nothing.
    for column in CURVE_COLUMNS[1:]:
        if column not in combined.column_names:
            combined = combined.append_column(column, pa.nulls(combined.num_rows, pa.float64()))
    extra = sorted(c for c in combined.column_names if c not in CURVE_COLUMNS)
    combined = combined.select(CURVE_COLUMNS[1:] + extra)
    # Each trial's id repeated over its rows, taken in Arrow (strings never become objects).
    rows_of = pa.array(np.repeat(np.arange(len(ids)), counts))
    combined = combined.add_column(0, "trial_id", pa.array(ids, pa.string()).take(rows_of))
    return lasts, combined.to_pandas()


def front_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per batch size the trial that reached the target in the fewest steps."""
    reached = trials[trials["status"] == keys.REACHED]
    if reached.empty:
        return pd.DataFrame(columns=FRONT_COLUMNS)
    best = reached.sort_values([keys.STEPS_TO_TARGET, "trial_id"]).groupby(keys.BATCH_SIZE).head(1)
    front = pd.DataFrame(
        {
            keys.BATCH_SIZE: best[keys.BATCH_SIZE].astype(int),
            "steps": best[keys.STEPS_TO_TARGET].astype(int),
            "examples": best[keys.EXAMPLES_TO_TARGET].astype(int),
            "trial_id": best["trial_id"],
            keys.LR: best[keys.LR],
            keys.MOMENTUM: best[keys.MOMENTUM],
            keys.WARMUP_STEPS: best[keys.WARMUP_STEPS],
        }
    ).sort_values(keys.BATCH_SIZE)
    front["pareto"] = theory.pareto_mask(
        front["steps"].to_numpy(float), front["examples"].to_numpy(float)
    )
    return front.reset_index(drop=True)


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
    reached = trials[trials["status"] == keys.REACHED]
    if reached.empty or curves.empty:
        return None
    by_id = reached.set_index("trial_id")
    target_steps = _per_row(curves["trial_id"], by_id[keys.STEPS_TO_TARGET].astype(float))
    at_target = curves[curves[keys.STEP].to_numpy() == target_steps]
    return at_target.assign(**{keys.BATCH_SIZE: at_target["trial_id"].map(by_id[keys.BATCH_SIZE])})


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
    trials: pd.DataFrame, curves: pd.DataFrame, front: pd.DataFrame, target: dict[str, Any]
) -> dict[str, Any]:
    """summary.json: the trade-off fit of the front, noise scales, and sweep totals."""
    summary: dict[str, Any] = {
        "target": target,
        "s_min": None, "e_min": None, "b_crit": None, "b_crit_interval": None,
        "fit_rms_log": None, "b_simple": None, "b_noise": None, "eps_max": None,
        "b_noise_source": None,
        "n_trials": len(trials),
        "n_reached": int((trials["status"] == keys.REACHED).sum()),
        "n_pruned": int((trials["status"] == keys.PRUNED).sum()),
        "n_diverged": int((trials["status"] == keys.DIVERGED).sum()),
        "n_exhausted": int((trials["status"] == keys.EXHAUSTED).sum()),
        "n_error": int((trials["status"] == keys.ERROR).sum()),
        "n_unfinished": int((trials["status"] == UNFINISHED).sum()),
        "total_examples": int(trials["examples"].sum()),
    }  # fmt: skip
    at_target = _rows_at_target(trials, curves)
    b_simple = _pooled(at_target, keys.B_SIMPLE)
    summary["b_simple"] = b_simple if math.isfinite(b_simple) else None
    b_noise = _pooled(at_target, keys.B_NOISE)
    eps_max = _pooled(at_target, keys.EPS_MAX, reference=b_noise)
    if math.isfinite(b_noise) and math.isfinite(eps_max):
        summary.update(
            b_noise=b_noise, eps_max=eps_max,
            b_noise_source="measured (curvature), pooled at the target",
        )  # fmt: skip
    if front[keys.BATCH_SIZE].nunique() >= 2:
        batch_sizes = front[keys.BATCH_SIZE].to_numpy(float)
        steps = front["steps"].to_numpy(float)
        fit = theory.fit_tradeoff(batch_sizes, steps)
        summary.update(s_min=fit.s_min, e_min=fit.e_min, b_crit=fit.b_crit, fit_rms_log=fit.rms_log)
        if len(batch_sizes) >= 3:  # two points fit exactly: no residuals to resample
            summary["b_crit_interval"] = list(theory.bootstrap_b_crit(batch_sizes, steps))
        if summary["b_noise_source"] is None:
            lr = front[keys.LR].to_numpy(float)
            effective = lr / (1.0 - front[keys.MOMENTUM].to_numpy(float))
            lr_fit = theory.fit_eps_opt(batch_sizes, effective)
            summary.update(
                b_noise=lr_fit.b_noise, eps_max=lr_fit.eps_max,
                b_noise_source="fitted to the best effective lr per batch size",
            )  # fmt: skip
    return summary


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


def summary_markdown(tables: Tables) -> str:
    """summary.md: the numbers, the front, and every trial."""
    s = tables.summary
    target = s["target"]
    interval = s["b_crit_interval"]
    lines = [
        f"# noisetune summary: target {target['metric']} <= {target['value']:g}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| B_crit (fit of the front) | {_fmt(s['b_crit'])}"
        + (f" (90% bootstrap {_fmt(interval[0])}-{_fmt(interval[1])})" if interval else "")
        + " |",
        f"| S_min (steps) | {_fmt(s['s_min'])} |",
        f"| E_min (examples) | {_fmt(s['e_min'])} |",
        f"| B_simple (measured, pooled at the target) | {_fmt(s['b_simple'])} |",
        f"| B_crit / B_simple | {_fmt(_ratio(s['b_crit'], s['b_simple']))} |",
        f"| B_noise ({s['b_noise_source'] or 'n/a'}) | {_fmt(s['b_noise'])} |",
        f"| eps_max | {_fmt(s['eps_max'])} |",
        f"| trials | {s['n_trials']} ({s['n_reached']} reached, {s['n_pruned']} pruned, "
        f"{s['n_diverged']} diverged, {s['n_exhausted']} exhausted, {s['n_error']} error"
        + (f", {s['n_unfinished']} unfinished" if s["n_unfinished"] else "")
        + ") |",
        f"| total examples (compute of the sweep) | {s['total_examples']:,} |",
        "",
        "B_crit depends on the target: it grows as the target loss falls. B_simple is not",
        "B_crit: their ratio is a finding (published ratios span 0.05-8), not an error.",
        "",
        "![Pareto front: steps vs examples](plots/pareto_front.png)",
        "![Best lr per batch size and eps_opt(B)](plots/lr_vs_batch.png)",
        "![Noise scale over training](plots/noise_scale.png)",
        "",
        "## Front: fewest steps to the target per batch size",
        "",
        tables.front.to_markdown(index=False)
        if not tables.front.empty
        else "(no trial reached it)",
        "",
        "## Trials",
        "",
        tables.trials.drop(columns=["effective_lr"]).to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    return "\n".join(lines)


def build_tables(run_dir: Path, target: dict[str, Any]) -> Tables:
    """Read the Tune experiment in `run_dir` into the results tables."""
    tune_trials = read_trials(run_dir, with_results=False)
    try:
        last_reports, curves = _read_reports(tune_trials)
        trials = trials_table(tune_trials, run_dir, last_reports)
    except _RowByRow:
        tune_trials = read_trials(run_dir)
        trials = trials_table(tune_trials, run_dir)
        curves = curves_table(tune_trials)
    front = front_table(trials)
    return Tables(trials, curves, front, summarize(trials, curves, front, target))


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
    elif table == "summary":
        frame = pd.DataFrame(
            [{k: v for k, v in _jsonable(tables.summary).items() if k != "target"}]
        )
        return _export_frame(frame, fmt, out)
    else:
        return _export_frame(getattr(tables, table), fmt, out)
    if out is None:
        return text
    out.write_text(text)
    return None


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
