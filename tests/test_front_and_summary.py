"""The front (one seed, several seeds), what the summary says of B_crit, and the summary
as an export: tables built from hand-made trials tables, no Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trainables import keys
from tuner import theory
from tuner.results import columns
from tuner.results.tables import (
    CURVE_COLUMNS,
    TRIAL_COLUMNS,
    Tables,
    b_crit_text,
    export,
    front_table,
    summarize,
    summary_markdown,
    trials_table,
)
from tuner.results.tune_state import TuneTrial

TARGET = {"metric": "loss", "value": 0.5, "mode": "min"}
S_MIN, B_CRIT = 50.0, 200.0


def trial(
    trial_id: str,
    batch_size: int,
    steps: float,
    *,
    lr: float = 0.1,
    seed: int = 0,
    status: str = keys.REACHED,
    interp: float | None = None,
) -> dict[str, Any]:
    reached = status == keys.REACHED
    interp = steps if interp is None else interp
    return {
        columns.TRIAL_ID: trial_id, columns.STATUS: status, keys.BATCH_SIZE: batch_size,
        keys.LR: lr, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0,
        keys.STEPS_TO_TARGET: steps if reached else math.nan,
        keys.EXAMPLES_TO_TARGET: steps * batch_size if reached else math.nan,
        columns.FINAL_LOSS: 0.4, keys.B_SIMPLE: math.nan, keys.WALL_S: 1.0, keys.REASON: "",
        columns.STEPS: int(steps), keys.EXAMPLES: int(steps) * batch_size, columns.EFFECTIVE_LR: lr,
        keys.SEED: seed,
        keys.STEPS_TO_TARGET_INTERP: interp if reached else math.nan,
        keys.EXAMPLES_TO_TARGET_INTERP: interp * batch_size if reached else math.nan,
    }  # fmt: skip


def tables_of(rows: list[dict[str, Any]], **options: Any) -> Tables:
    trials = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    front = front_table(trials)
    return Tables(trials, curves, front, summarize(trials, curves, front, TARGET, **options))


def exact(batch_size: int) -> float:
    return float(theory.steps_for(float(batch_size), S_MIN, B_CRIT))


def test_with_one_seed_the_front_is_each_batch_sizes_best_trial() -> None:
    rows = [trial(f"t{b}{i}", b, exact(b) * (1 + i)) for b in (16, 64, 256, 1024) for i in (0, 1)]
    tables = tables_of(rows)
    front = tables.front
    assert list(front[keys.BATCH_SIZE]) == [16, 64, 256, 1024]
    assert list(front[columns.TRIAL_ID]) == ["t160", "t640", "t2560", "t10240"]
    assert (front[columns.SEEDS] == 1).all()
    assert (front[columns.STEPS_LO] == front[columns.STEPS_HI]).all()
    s = tables.summary
    assert s[columns.B_CRIT_KIND] == "inside"
    assert s[columns.B_CRIT] == pytest.approx(B_CRIT, rel=1e-6)
    assert s[columns.S_MIN] == pytest.approx(S_MIN, rel=1e-6)
    assert "profile-likelihood" in s[columns.B_CRIT_INTERVAL_COVERS]


def test_with_three_seeds_the_front_is_the_median_of_each_seeds_best() -> None:
    rows = []
    for b in (16, 64, 256, 1024):
        for seed, factor in enumerate((0.8, 1.0, 1.3)):
            rows.append(trial(f"a{b}{seed}", b, exact(b) * factor, lr=0.1, seed=seed))
            rows.append(trial(f"b{b}{seed}", b, exact(b) * factor * 1.1, lr=0.2, seed=seed))
    tables = tables_of(rows)
    front = tables.front.set_index(keys.BATCH_SIZE)
    for b in (16, 64, 256, 1024):
        assert front.loc[b, columns.STEPS_INTERP] == pytest.approx(exact(b))  # the median seed
        assert front.loc[b, columns.STEPS_LO] == pytest.approx(0.8 * exact(b))
        assert front.loc[b, columns.STEPS_HI] == pytest.approx(1.3 * exact(b))
        assert (front.loc[b, columns.SEEDS_REACHED], front.loc[b, columns.SEEDS]) == (3, 3)
        assert front.loc[b, columns.TRIAL_ID] == f"a{b}1"
    s = tables.summary
    assert s[columns.SEEDS] == 3
    assert s[columns.FIT_POINTS] == 4  # one point per batch size: its median
    assert s[columns.B_CRIT] == pytest.approx(B_CRIT, rel=1e-6)
    assert "median over 3 training seeds" in s[columns.B_CRIT_INTERVAL_COVERS]


def test_a_seed_that_missed_the_target_counts_in_the_median_that_is_fitted() -> None:
    """Leaving it out would bias the long runs' steps low; as infinitely many steps it
    moves the median up instead."""
    rows = []
    for b in (16, 64, 256, 1024):
        for seed, factor in enumerate((0.9, 1.0, 1.1)):
            rows.append(trial(f"t{b}{seed}", b, exact(b) * factor, seed=seed))
    rows = [r for r in rows if r[columns.TRIAL_ID] != "t162"]  # B=16, seed 2: never reached
    rows.append(trial("t162", 16, 3000.0, seed=2, status=keys.EXHAUSTED))
    front = tables_of(rows).front.set_index(keys.BATCH_SIZE)
    median = front.loc[16, columns.STEPS_INTERP]
    assert median == pytest.approx(exact(16))  # the median of 0.9, 1.0 and inf
    assert front.loc[16, columns.SEEDS_REACHED] == 2
    assert math.isinf(front.loc[16, columns.STEPS_HI])


def test_a_batch_size_most_seeds_missed_is_not_on_the_front() -> None:
    rows = [trial(f"s{seed}", 64, 100.0, seed=seed) for seed in range(3)]
    rows += [trial("hit", 256, 60.0, seed=0)]
    rows += [trial(f"miss{seed}", 256, 900.0, seed=seed, status=keys.EXHAUSTED) for seed in (1, 2)]
    front = tables_of(rows).front
    assert list(front[keys.BATCH_SIZE]) == [64]


@pytest.mark.parametrize(
    ("b_crit", "sizes", "kind", "note"),
    [
        (1e6, (16, 64, 256), "beyond", "beyond the batch sizes tried"),
        (0.01, (16, 64, 256), "below", "below the batch sizes tried"),
        (200.0, (64, 256), "too_few", "too few batch sizes (2 reached the target"),
    ],
)
def test_b_crit_outside_the_batch_sizes_or_from_too_few_is_no_finding(
    b_crit: float, sizes: tuple[int, ...], kind: str, note: str
) -> None:
    rows = [trial(f"t{b}", b, float(theory.steps_for(float(b), S_MIN, b_crit))) for b in sizes]
    s = tables_of(rows).summary
    assert s[columns.B_CRIT_KIND] == kind
    assert s[columns.B_CRIT] is None and s[columns.B_CRIT_INTERVAL] is None
    assert note in s[columns.B_CRIT_NOTE]
    assert note in b_crit_text(s) and note in summary_markdown(tables_of(rows))


def test_a_target_met_at_step_0_is_a_result_kept_out_of_the_fit() -> None:
    rows = [trial(f"t{b}", b, exact(b)) for b in (16, 64, 256, 1024)]
    rows.append(trial("zero", 4096, 0.0))
    tables = tables_of(rows)
    assert 4096 in set(tables.front[keys.BATCH_SIZE])
    s = tables.summary
    assert s[columns.FIT_POINTS] == 4 and s[columns.B_CRIT] == pytest.approx(B_CRIT, rel=1e-6)
    assert "B=4096: the target was met at step 0" in s[columns.FIT_NOTE]


def test_coarse_evaluations_next_to_the_front_get_a_note() -> None:
    rows = [trial(f"t{b}", b, exact(b)) for b in (16, 64, 256, 1024)]
    assert tables_of(rows, eval_every=5).summary[columns.RESOLUTION_NOTE] is None  # 55 > 10 x 5
    note = tables_of(rows, eval_every=20).summary[columns.RESOLUTION_NOTE]
    assert "under 10 evaluation intervals (eval_every 20)" in note


def test_adamw_gets_adam_s_law_with_b_noise_from_the_front() -> None:
    """Li et al. 2024: B_noise is the front's B_crit (eq. 21), eps_max from the best lrs."""
    lrs = {b: float(theory.eps_opt_adam(b, 2e-3, B_CRIT)) for b in (16, 64, 256, 1024)}
    rows = [trial(f"t{b}", b, exact(b), lr=lrs[b]) for b in lrs]
    s = tables_of(rows, optimizer="adamw").summary
    assert s[columns.B_CRIT_KIND] == "inside"
    assert s[keys.B_NOISE] == pytest.approx(s[columns.B_CRIT], rel=1e-6)
    assert s[keys.EPS_MAX] == pytest.approx(2e-3, rel=1e-5)
    assert s[columns.LR_LAW].startswith("Adam: ")
    assert s[columns.B_NOISE_SOURCE].startswith("B_crit of the front's steps")
    sgd = tables_of(rows).summary
    assert sgd[columns.LR_LAW].startswith("SGD: ") and sgd[keys.EPS_MAX] != s[keys.EPS_MAX]


def test_sgd_sai_gets_sgd_s_law_on_the_lr_not_on_lr_over_one_minus_m() -> None:
    """SGD-SaI's EMA momentum leaves the rate at the lr (tuner.theory.lr_laws, "sgd_ema")."""
    lrs = {b: float(theory.eps_opt(b, 0.5, 100.0)) for b in (16, 64, 256, 1024)}
    rows = [{**trial(f"t{b}", b, exact(b), lr=lrs[b]), keys.MOMENTUM: 0.9} for b in lrs]
    s = tables_of(rows, optimizer="sgd_sai").summary
    assert (s[keys.EPS_MAX], s[keys.B_NOISE]) == pytest.approx((0.5, 100.0), rel=1e-5)
    assert s[columns.LR_LAW].startswith("SGD with EMA momentum (SGD-SaI): ")
    assert s[columns.B_NOISE_SOURCE] == "fitted to the best lr per batch size"
    sgd = tables_of(rows).summary  # heavy ball: the same lrs are rates 10x as high
    assert sgd[keys.EPS_MAX] == pytest.approx(5.0, rel=1e-5)


def test_the_trials_table_comes_out_sorted() -> None:
    made = [
        TuneTrial(f"t{i}", "TERMINATED", {keys.BATCH_SIZE: b, keys.LR: lr}, None)
        for i, (b, lr) in enumerate([(64, 0.2), (16, 0.4), (64, 0.1), (16, 0.1)])
    ]
    table = trials_table(made, Path("/nonexistent"), [{}] * len(made))
    assert list(zip(table[keys.BATCH_SIZE], table[keys.LR], strict=True)) == [
        (16, 0.1),
        (16, 0.4),
        (64, 0.1),
        (64, 0.2),
    ]


def test_the_summary_exports_as_one_object_or_one_row_with_the_target() -> None:
    tables = tables_of([trial(f"t{b}", b, exact(b)) for b in (16, 64, 256, 1024)])
    as_json = json.loads(export(tables, "json", "summary", None) or "")
    assert isinstance(as_json, dict) and as_json[columns.TARGET] == TARGET
    assert as_json[columns.B_CRIT] == pytest.approx(B_CRIT, rel=1e-6)
    csv = export(tables, "csv", "summary", None) or ""
    header, row = csv.splitlines()[:2]
    assert {"target_metric", "target_value", "target_mode", "b_crit_interval_lo"} <= set(
        header.split(",")
    )
    assert np.isfinite(float(row.split(",")[header.split(",").index(columns.B_CRIT)]))


def test_a_best_lr_at_the_edge_of_the_lrs_tried_gets_a_note() -> None:
    rows = []
    for b in (16, 64, 256):
        for lr, factor in ((0.1, 1.0), (0.2, 1.2), (0.4, 1.5)):  # the smallest lr is best
            rows.append(trial(f"t{b}{lr}", b, exact(b) * factor, lr=lr))
    note = tables_of(rows).summary[columns.LR_NOTE]
    assert note.startswith("the best lr is the smallest lr tried at B=16, 64, 256")
    middle = [r for r in rows if r[keys.LR] != 0.1]
    middle += [trial(f"u{b}", b, exact(b) * 1.3, lr=0.05) for b in (16, 64, 256)]
    assert tables_of(middle).summary[columns.LR_NOTE] is None


def test_a_sweep_where_no_trial_reached_the_target_says_so() -> None:
    s = tables_of([trial("t", 64, 300.0, status=keys.EXHAUSTED)]).summary
    assert s[columns.B_CRIT] is None and s[columns.B_CRIT_NOTE] == "no trial reached the target"
