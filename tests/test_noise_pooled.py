"""B_simple pooled by batch size and progress to the target."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trainables import keys
from tuner.results import columns
from tuner.results.noise_pooled import (
    HIGH,
    LOW,
    PROGRESS,
    REPORTS,
    Target,
    pooled_median,
    pooled_noise_scale,
    progress,
)


def _curves(rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """(trial, step, loss, g2, trace_sigma) rows; b_simple the trial's own ratio."""
    frame = pd.DataFrame(
        rows, columns=[columns.TRIAL_ID, keys.STEP, keys.LOSS, keys.G2, keys.TRACE_SIGMA]
    )
    frame[keys.B_SIMPLE] = frame[keys.TRACE_SIGMA] / frame[keys.G2]
    return frame


TRIALS = pd.DataFrame({columns.TRIAL_ID: ["a", "b", "c"], keys.BATCH_SIZE: [16, 16, 64]})
LOSS_TARGET = Target("loss", 0.2, "min")


def test_progress_is_the_fraction_of_the_way_to_the_target() -> None:
    curves = _curves([("a", 0, 1.0, 1, 1), ("a", 10, 0.6, 1, 1), ("a", 20, 0.2, 1, 1)])
    assert progress(curves, LOSS_TARGET).tolist() == pytest.approx([0.0, 0.5, 1.0])
    accuracy = curves.assign(acc=[0.1, 0.5, 0.9])
    assert progress(accuracy, Target("acc", 0.9, "max")).tolist() == pytest.approx([0, 0.5, 1])
    assert progress(curves, Target("missing", 1.0, "min")).isna().all()
    assert progress(curves.drop(columns=[keys.STEP]), LOSS_TARGET).isna().all()
    overshoot = _curves([("a", 0, 1.0, 1, 1), ("a", 10, 0.1, 1, 1), ("a", 20, 0.0, 1, 1)])
    assert progress(overshoot, LOSS_TARGET).tolist() == pytest.approx([0.0, 1.0, 1.25])
    started_there = _curves([("a", 0, 0.1, 1, 1), ("a", 10, 0.05, 1, 1)])
    assert progress(started_there, LOSS_TARGET).isna().all()  # no way to go


def test_reports_are_pooled_by_their_median_per_batch_size_and_bin() -> None:
    curves = _curves(
        [
            ("a", 0, 1.0, 1.0, 10.0),  # progress 0: bin 0, B_simple 10
            ("a", 10, 0.56, 2.0, 10.0),  # 0.55: bin 5, 5
            ("b", 0, 1.0, 3.0, 60.0),  # bin 0, same B as a: 20
            ("b", 10, 0.6, 1.0, 1.0),  # 0.5: bin 5, 1
            ("c", 0, 1.0, 1.0, 100.0),  # B = 64
            ("c", 10, 0.1, 1.0, 100.0),  # reached the target (past it): progress 1
            ("c", 20, 0.05, 1.0, 100.0),  # after it: left out
        ]
    )
    pooled = pooled_noise_scale(curves, TRIALS, LOSS_TARGET).set_index([keys.BATCH_SIZE, PROGRESS])
    assert pooled.loc[(16, 0.05), keys.B_SIMPLE] == pytest.approx(15.0)
    assert pooled.loc[(16, 0.55), keys.B_SIMPLE] == pytest.approx(3.0)
    assert pooled.loc[(16, 0.05), REPORTS] == 2
    # the 10–90% range of the reports' own B_simple (10 and 20): pandas' linear quantiles
    assert (pooled.loc[(16, 0.05), LOW], pooled.loc[(16, 0.05), HIGH]) == pytest.approx((11, 19))
    assert list(pooled.loc[64].index) == [0.05, 0.95]
    assert pooled.loc[(64, 0.95), REPORTS] == 1


def test_a_trial_on_its_way_to_diverging_does_not_drag_the_pool() -> None:
    """Its |G|² is 1,000 times the others': a ratio of sums would give ~tr/|G|² of that
    trial alone (about 0.1); the median stays with the three that train."""
    rows = [(f"t{i}", 0, 1.0, 1.0, 100.0) for i in range(3)] + [("bad", 0, 1.0, 1000.0, 100.0)]
    trials = pd.DataFrame(
        {columns.TRIAL_ID: ["t0", "t1", "t2", "bad"], keys.BATCH_SIZE: [16, 16, 16, 16]}
    )
    pooled = pooled_noise_scale(_curves(rows), trials, LOSS_TARGET)
    assert pooled[keys.B_SIMPLE].tolist() == [100.0]


def test_empty_estimates_are_left_out_and_nothing_to_pool_gives_an_empty_table() -> None:
    curves = _curves([("a", 0, 1.0, -1.0, 5.0), ("a", 10, 0.6, 0.5, 5.0)])
    curves.loc[0, keys.B_SIMPLE] = math.nan  # the loop leaves B_simple empty for |G|² ≤ 0
    pooled = pooled_noise_scale(curves, TRIALS, LOSS_TARGET)
    assert pooled[[PROGRESS, keys.B_SIMPLE]].values.tolist() == [[0.55, 10.0]]
    empty = pooled_noise_scale(curves.drop(columns=[keys.B_SIMPLE]), TRIALS, LOSS_TARGET)
    assert empty.empty and list(empty.columns)[:3] == [keys.BATCH_SIZE, PROGRESS, keys.B_SIMPLE]
    no_metric = pooled_noise_scale(curves, TRIALS, Target("accuracy", 0.9, "max"))
    assert no_metric.empty


def test_pooling_recovers_a_common_noise_scale_from_noisy_trials() -> None:
    """Trials whose moving averages scatter around a common (|G|², tr(Σ)): the pooled
    median is near the truth, the single reports not."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(40):
        for step, loss in enumerate(np.linspace(1.0, 0.3, 8)):
            g2 = 1.0 + 0.5 * rng.standard_normal()
            rows.append(
                (f"t{t}", step, float(loss), g2, 100.0 * (1.0 + 0.1 * rng.standard_normal()))
            )
    trials = pd.DataFrame({columns.TRIAL_ID: [f"t{t}" for t in range(40)], keys.BATCH_SIZE: 32})
    pooled = pooled_noise_scale(_curves(rows), trials, LOSS_TARGET)
    assert np.allclose(pooled[keys.B_SIMPLE], 100.0, rtol=0.15)
    assert (pooled[HIGH] / pooled[LOW] > 2).all()  # one trial's own number strays far


def test_a_workload_value_is_pooled_by_its_median() -> None:
    curves = _curves([("a", 0, 1.0, 1, 1), ("b", 0, 1.0, 1, 1), ("a", 10, 0.6, 1, 1)])
    curves["true_b_simple"] = [3.0, 5.0, 7.0]
    medians = pooled_median(curves, TRIALS, LOSS_TARGET, "true_b_simple")
    assert medians.to_dict("records") == [
        {keys.BATCH_SIZE: 16, PROGRESS: 0.05, "true_b_simple": 4.0},
        {keys.BATCH_SIZE: 16, PROGRESS: 0.55, "true_b_simple": 7.0},
    ]
    assert pooled_median(curves, TRIALS, LOSS_TARGET, "missing").empty
