"""The results tables read column-wise (pyarrow) are the tables defined row by row.

`build_tables` reads every result.json with pyarrow (or from the Arrow cache a finished
trial leaves); `_helpers.tables_read_row_by_row` reads them with json, line by line, and is
the reference it must equal, dtypes included. Hand-made run directories here cover what
real runs rarely show; tests/test_sweep.py compares the two on a real sweep.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _helpers import tables_read_row_by_row

from trainables import keys
from tuner import theory
from tuner.results import columns
from tuner.results.tables import (
    CURVE_COLUMNS,
    FRONT_COLUMNS,
    REPORTS_CACHE,
    TRIAL_COLUMNS,
    Tables,
    _cached_reports,
    _per_row,
    build_tables,
    cache_trial_reports,
    export,
    front_table,
    pooled_at_target,
    read_tables,
    summarize,
    write_tables,
)
from tuner.results.tune_state import read_result_file, read_trials

TARGET = {"metric": "loss", "value": 0.5}


def report(step: int, **extra: Any) -> dict[str, Any]:
    """A report with our keys and some of Tune's."""
    row: dict[str, Any] = {
        keys.STEP: step,
        keys.EXAMPLES: 16 * step,
        keys.LOSS: 1.0 / (1 + step),
        keys.LR: 0.1,
        keys.B_SIMPLE: math.nan if step == 0 else 10.0 + step / 3,
        keys.G2: math.nan if step == 0 else 0.2,
        keys.TRACE_SIGMA: 2.0,
        keys.TRIAL_STATUS: keys.RUNNING,
        keys.REASON: "",
        keys.WALL_S: 0.01 * step,
        "timestamp": 1795350000 + step,
        "checkpoint_dir_name": None,
        "done": False,
        "training_iteration": step // 10 + 1,
        "trial_id": "x",
        "date": "2026-11-22_12-00-00",
        "config": {keys.BATCH_SIZE: 16, keys.LR: 0.1},
    }
    row.update(extra)
    return row


def finished(step: int, status: str = keys.REACHED, **extra: Any) -> dict[str, Any]:
    reached = status == keys.REACHED
    return report(
        step,
        **{
            keys.TRIAL_STATUS: status,
            keys.REASON: f"{status} at step {step}",
            keys.STEPS_TO_TARGET: step if reached else math.nan,
            keys.EXAMPLES_TO_TARGET: 16 * step if reached else math.nan,
            "done": True,
            **extra,
        },
    )


def write_run(run_dir: Path, trials: dict[str, list[dict[str, Any]] | str | None]) -> Path:
    """A run directory: per trial id its reports (or raw result.json text, or None for
    a trial without a result.json); every trial TERMINATED."""
    trial_data = []
    for i, (trial_id, reports) in enumerate(trials.items()):
        logdir = f"trial_{trial_id}"
        config = {keys.BATCH_SIZE: 16 * (1 + i % 3), keys.LR: 0.1 * (1 + i), keys.MOMENTUM: 0.0}
        state = {"trial_id": trial_id, "status": "TERMINATED", "config": config}
        state["relative_logdir"] = logdir
        trial_data.append([json.dumps(state, indent=2), "{}"])
        if reports is None:
            continue
        (run_dir / logdir).mkdir(parents=True)
        text = (
            reports if isinstance(reports, str) else "".join(json.dumps(r) + "\n" for r in reports)
        )
        (run_dir / logdir / "result.json").write_text(text)
    (run_dir / "experiment_state-2026-11-22_12-00-00.json").write_text(
        json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {}})
    )
    return run_dir


def assert_same_tables(run_dir: Path) -> Tables:
    """build_tables equals the row-by-row tables; the same again once every trial's
    reports are cached as a finished trial's are."""
    built = build_tables(run_dir, TARGET)
    trials, curves = tables_read_row_by_row(run_dir)
    expected = summarize(trials, curves, front_table(trials), TARGET)
    for trial in read_trials(run_dir, with_results=False):
        if trial.path is not None:
            cache_trial_reports(trial.path)
    for tables in (built, build_tables(run_dir, TARGET)):
        pd.testing.assert_frame_equal(tables.trials, trials, check_exact=True)
        pd.testing.assert_frame_equal(tables.curves, curves, check_exact=True)
        assert list(tables.curves.dtypes) == list(curves.dtypes)
        assert json.dumps(tables.summary, default=str) == json.dumps(expected, default=str)
    return built


def steps(*values: int, **extra: Any) -> list[dict[str, Any]]:
    return [report(s, **extra) for s in values]


def test_reports_of_several_trials(tmp_path: Path) -> None:
    built = assert_same_tables(
        write_run(
            tmp_path,
            {
                "a": [*steps(0, 10, 20), finished(30)],
                "b": [*steps(0, 10), finished(20, keys.EXHAUSTED)],
                "c": steps(0, 10, 20),  # pruned: Tune stopped it while running
                "d": [*steps(0), finished(10, keys.DIVERGED, loss=math.nan)],
            },
        )
    )
    assert len(built.curves) == 12 and set(built.trials[columns.STATUS]) == {
        keys.REACHED, keys.EXHAUSTED, keys.PRUNED, keys.DIVERGED,
    }  # fmt: skip


def test_a_restarted_trial_keeps_its_last_run(tmp_path: Path) -> None:
    built = assert_same_tables(
        write_run(
            tmp_path,
            {
                "a": [*steps(0, 10, 20, 30, 40, 30), finished(40)],  # from a checkpoint
                "b": [*steps(0, 10, 20, 0, 10), finished(20)],  # from scratch
                "c": steps(0, 10, 10, 10),  # the same step again
            },
        )
    )
    by_trial = built.curves.groupby(columns.TRIAL_ID)[keys.STEP].apply(list).to_dict()
    assert by_trial == {"a": [0, 10, 20, 30, 40], "b": [0, 10, 20], "c": [0, 10]}


def test_keys_that_come_and_go_and_change_type(tmp_path: Path) -> None:
    assert_same_tables(
        write_run(
            tmp_path,
            {
                # a metric only some reports or trials have; an int in one trial and a
                # float in another; nulls; infinities; a value past 2**53.
                "a": [*steps(0, 10, accuracy=1), finished(20, accuracy=0.5, big=2**60 + 1)],
                "b": [report(0, accuracy=None), report(10, accuracy=math.inf), finished(20)],
                "c": [report(0, only_here=-math.inf), finished(10, only_here=3)],
                "d": None,  # no result.json
                "e": "",  # an empty one
            },
        )
    )


def test_a_line_cut_short_and_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in steps(0, 10, 20)]
    cut = json.dumps(report(30))[:25]
    text = "\n".join([*lines, cut + json.dumps(report(30)), "", "  ", json.dumps(finished(40))])
    built = assert_same_tables(write_run(tmp_path, {"a": text + "\n", "b": steps(0, 10)}))
    assert list(built.curves[keys.STEP]) == [0, 10, 20, 40, 0, 10]


@pytest.mark.parametrize(
    ("reports", "curve"),
    [
        pytest.param(
            [report(0, flag=True), report(10, flag=False)], {"flag": [1, 0]}, id="boolean metric"
        ),
        pytest.param(
            [report(0, flag=True), report(10, flag=2.5)],
            {"flag": [1.0, 2.5]},
            id="boolean then number",
        ),
        pytest.param(
            [report(0, note=1.0), report(10, note="text")],
            {"note": [1.0, math.nan]},
            id="number then string",
        ),
        pytest.param(
            [report(0, note="a"), report(10, note="b")], {"note": None}, id="strings only"
        ),
        pytest.param([report(0), {keys.LOSS: 0.3}, report(10)], {keys.STEP: [0, 10]}, id="no step"),
        pytest.param(
            [report(0), {**report(5), keys.STEP: math.nan}, report(10)],
            {keys.STEP: [0, 10]},
            id="NaN step",
        ),
        pytest.param(
            [report(0), {**report(5), keys.STEP: 5.5}, {**report(10), keys.STEP: 10.0}],
            {keys.STEP: [0, 10]},
            id="step not a whole number",
        ),
        pytest.param(
            [{**report(0), keys.STEP: "0"}, {**report(10), keys.STEP: "10"}],
            {keys.STEP: []},
            id="steps not numbers",
        ),
        pytest.param(
            [report(0, big=1), report(10, big=2**70)], {"big": [1.0, 2.0**70]}, id="past int64"
        ),
    ],
)
def test_reports_real_runs_rarely_show(
    tmp_path: Path, reports: list[dict[str, Any]], curve: dict[str, list[Any] | None]
) -> None:
    built = assert_same_tables(write_run(tmp_path, {"a": reports, "b": steps(0, 10)}))
    of_a = built.curves[built.curves[columns.TRIAL_ID] == "a"]
    for column, values in curve.items():
        if values is None:
            assert column not in built.curves
        else:
            assert np.array_equal(of_a[column].to_numpy(float), values, equal_nan=True), column


def test_no_reports_at_all(tmp_path: Path) -> None:
    built = assert_same_tables(write_run(tmp_path, {"a": None, "b": ""}))
    assert built.curves.empty and list(built.curves.columns) == CURVE_COLUMNS


def test_a_cache_is_read_only_while_its_result_file_is_unchanged(tmp_path: Path) -> None:
    run = write_run(tmp_path, {"a": [*steps(0, 10), finished(20)], "b": steps(0, 10)})
    for trial in read_trials(run, with_results=False):
        assert trial.path is not None and cache_trial_reports(trial.path)
        assert (trial.path / REPORTS_CACHE).exists()
    # Trial b is resumed and finishes: its result.json grows, its cache is stale.
    with (run / "trial_b" / "result.json").open("a") as handle:
        handle.write(json.dumps(finished(20)) + "\n")
    built = assert_same_tables(run)
    assert set(built.trials[columns.STATUS]) == {keys.REACHED}
    assert list(built.curves[keys.STEP]) == [0, 10, 20, 0, 10, 20]
    # A cache cut short (copied mid-write, a full disk) or not Arrow is parsed around.
    cache = run / "trial_a" / REPORTS_CACHE
    cache.write_bytes(cache.read_bytes()[:-50])
    assert _cached_reports(run / "trial_a") is None
    assert_same_tables(run)
    cache.write_bytes(b"not arrow")
    assert_same_tables(run)


def test_values_per_row_looked_up_per_run_of_ids() -> None:
    ids = pd.Series(["a", "a", "b", "c", "c", "a", "d", "b"], dtype=object)
    values = pd.Series({"a": 1.0, "b": 2.5, "c": math.nan})
    expected = ids.map(values).to_numpy(dtype=float)
    assert np.array_equal(_per_row(ids, values), expected, equal_nan=True)


def test_read_result_file_matches_read_trials(tmp_path: Path) -> None:
    run = write_run(tmp_path, {"a": [report(0, x=math.nan), finished(10, x=math.inf)]})
    (trial,) = read_trials(run)
    file = read_result_file(trial.path)
    assert file.table is not None and file.table.num_rows == 2
    assert json.dumps(file.last) == json.dumps(trial.results[-1])
    assert read_result_file(None).table is None


def test_pooled_at_target_is_the_merge_it_replaces(tmp_path: Path) -> None:
    run = write_run(
        tmp_path,
        {
            f"t{i}": [
                *steps(0, 10, 20, b_noise=40.0 + i, eps_max=0.5 + i / 10),
                finished(30 + 10 * (i % 3), b_noise=50.0 + i, eps_max=1.0 + i / 10),
                *([] if i % 4 else steps(0, 10)),  # some restarted and still running
            ]
            for i in range(12)
        },
    )
    tables = build_tables(run, TARGET)
    trials, curves = tables.trials, tables.curves
    reached = trials[trials[columns.STATUS] == keys.REACHED]
    assert len(reached) >= 3
    merged = curves.merge(
        reached[[columns.TRIAL_ID, keys.BATCH_SIZE, keys.STEPS_TO_TARGET]], on=columns.TRIAL_ID
    )  # the former implementation
    merged = merged[merged[keys.STEP] == merged[keys.STEPS_TO_TARGET]]
    for column, reference in [(keys.B_SIMPLE, None), (keys.B_NOISE, None), (keys.EPS_MAX, 50.0)]:
        expected = theory.pooled_noise_scale(merged[column], merged[keys.BATCH_SIZE], reference)
        assert pooled_at_target(trials, curves, column, reference) == expected
    assert math.isnan(pooled_at_target(trials, curves, "not_a_column"))
    assert math.isnan(pooled_at_target(trials.iloc[:0], curves, keys.B_SIMPLE))


def test_tables_read_back_without_the_curves(tmp_path: Path) -> None:
    run = write_run(tmp_path, {"a": [*steps(0, 10), finished(20)], "b": steps(0, 10)})
    write_tables(run, build_tables(run, TARGET))
    full, light = read_tables(run), read_tables(run, curves=False)
    assert len(full.curves) == 5 and light.curves.empty
    assert list(light.curves.columns) == CURVE_COLUMNS
    pd.testing.assert_frame_equal(light.trials, full.trials)
    for fmt, table in [("csv", "trials"), ("json", "front"), ("markdown", "summary")]:
        assert export(light, fmt, table, None) == export(full, fmt, table, None)


def test_the_column_and_field_names_are_the_public_contract(tmp_path: Path) -> None:
    """The files in results/ are read by users' own code: their column names and the
    summary's fields are written out here on purpose, literally, so that renaming one of
    them (in trainables.keys or tuner.results.columns) fails this test."""
    trials = [
        "trial_id", "status", "batch_size", "lr", "momentum", "warmup_steps",
        "steps_to_target", "examples_to_target", "final_loss", "b_simple", "wall_s",
        "reason", "steps", "examples", "effective_lr", "seed", "steps_to_target_interp",
        "examples_to_target_interp", "weight_decay", "beta2", "schedule", "noise_method",
    ]  # fmt: skip
    curves = [
        "trial_id", "step", "examples", "loss", "lr", "b_simple", "g2", "trace_sigma",
        "batch_size_now", "syncs",
    ]  # fmt: skip
    front = [
        "batch_size", "steps", "examples", "trial_id", "lr", "momentum", "warmup_steps",
        "pareto", "steps_interp", "examples_interp", "seeds_reached", "seeds", "steps_lo",
        "steps_hi", "weight_decay", "beta2", "schedule",
    ]  # fmt: skip
    summary = [
        "target", "optimizer", "s_min", "e_min", "b_crit", "b_crit_interval", "b_crit_kind",
        "b_crit_note", "b_crit_interval_covers", "fit_rms_log", "fit_points", "fit_note",
        "resolution_note", "b_simple", "b_noise", "eps_max", "b_noise_source", "lr_law",
        "lr_note", "n_trials", "n_reached", "n_pruned", "n_diverged", "n_exhausted",
        "n_stalled", "n_error", "n_unfinished", "seeds", "total_examples",
    ]  # fmt: skip
    assert (trials, curves, front) == (TRIAL_COLUMNS, CURVE_COLUMNS, FRONT_COLUMNS)
    run = write_run(tmp_path, {"a": [*steps(0, 10), finished(20)], "b": steps(0, 10)})
    out = write_tables(run, build_tables(run, TARGET))
    assert (out / "trials.csv").read_text().splitlines()[0].split(",") == trials
    assert list(pd.read_parquet(out / "trials.parquet").columns) == trials
    assert list(pd.read_parquet(out / "curves.parquet").columns) == curves
    assert (out / "front.csv").read_text().splitlines()[0].split(",") == front
    assert list(json.loads((out / "summary.json").read_text())) == summary
