"""B_simple pooled by batch size and progress to the target, for the noise-scale figure.

One trial's moving average swings early (few measurements) and at B ≪ B_simple; trials
at one batch size measure the same quantity at the same progress. So their reports are
pooled: per batch size and bin of progress, the median of the reports' own B_simple
(each a ratio of its trial's averages), beside their 10–90% range (how far one trial's
number strays). A median, not Σ tr(Σ)/Σ |G|²: the sums are dominated by the reports with
the largest |G|², a trial on its way to diverging at too high an lr.

Progress is the fraction of the way from a trial's first evaluation to the target, in
the target metric: 0 at the start, 1 at the target. Trials at different lrs and batch
sizes are then compared at the same loss, where their noise scales should agree (the
noise scale depends on where training is, not on how it got there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables import keys
from trainables.settings import Target
from tuner.results import columns

PROGRESS_BINS = 10
PROGRESS = "progress"  # columns of the pooled table
LOW, HIGH = "b_simple_lo", "b_simple_hi"
REPORTS = "reports"


def progress(curves: pd.DataFrame, target: Target) -> pd.Series:
    """Each report's fraction of the way from its trial's first evaluation to the target
    (NaN where the metric is missing or the first evaluation already met the target). The
    report that reached the target counts as 1, however far past it the metric went."""
    if not {target.metric, columns.TRIAL_ID, keys.STEP} <= set(curves):
        return pd.Series(np.nan, index=curves.index, dtype=float)
    ordered = curves.sort_values([columns.TRIAL_ID, keys.STEP])
    trial = ordered[columns.TRIAL_ID]
    value = pd.to_numeric(ordered[target.metric], errors="coerce")
    start = value.groupby(trial).transform("first")
    span = (target.value - start) if target.mode == "max" else (start - target.value)
    gained = (value - start) if target.mode == "max" else (start - value)
    fraction = gained / span.where(span > 0)
    reached = fraction >= 1.0
    first_reached = reached & (reached.astype(int).groupby(trial).cumsum() == 1)
    fraction = fraction.mask(first_reached, 1.0)
    return fraction.reindex(curves.index).astype(float)


def pooled_noise_scale(
    curves: pd.DataFrame, trials: pd.DataFrame, target: Target, column: str = keys.B_SIMPLE
) -> pd.DataFrame:
    """Per batch size and progress bin (centre in `progress`): the median of the reports'
    own `column` (B_simple; or a workload's own value, like linear_regression's
    true_b_simple), their 10–90% range, and how many reports went in; progress bins of
    width 1/PROGRESS_BINS from 0 to 1 (reports past the target or gone backwards, and
    empty or non-positive values, are left out)."""
    out_columns = [keys.BATCH_SIZE, PROGRESS, column, LOW, HIGH, REPORTS]
    needed = {column, keys.STEP, columns.TRIAL_ID}
    if curves.empty or not needed <= set(curves) or keys.BATCH_SIZE not in trials:
        return pd.DataFrame(columns=out_columns)
    batch_of = trials.drop_duplicates(columns.TRIAL_ID).set_index(columns.TRIAL_ID)[keys.BATCH_SIZE]
    frame = pd.DataFrame(
        {
            keys.BATCH_SIZE: curves[columns.TRIAL_ID].map(batch_of),
            PROGRESS: progress(curves, target),
            column: pd.to_numeric(curves[column], errors="coerce"),
        }
    )
    frame = frame[
        frame[PROGRESS].between(0.0, 1.0)
        & np.isfinite(frame[column])
        & (frame[column] > 0)
        & frame[keys.BATCH_SIZE].notna()
    ]
    rows = []
    for (batch, index), part in frame.groupby([frame[keys.BATCH_SIZE], _bins(frame[PROGRESS])]):
        values = part[column]
        rows.append(
            {
                keys.BATCH_SIZE: int(batch),
                PROGRESS: (int(index) + 0.5) / PROGRESS_BINS,
                column: float(values.median()),
                LOW: float(values.quantile(0.1)),
                HIGH: float(values.quantile(0.9)),
                REPORTS: len(part),
            }
        )
    return pd.DataFrame(rows, columns=out_columns)


def pooled_median(
    curves: pd.DataFrame, trials: pd.DataFrame, target: Target, column: str
) -> pd.DataFrame:
    """Per batch size and progress bin, the median of `column` alone."""
    return pooled_noise_scale(curves, trials, target, column)[[keys.BATCH_SIZE, PROGRESS, column]]


def _bins(fraction: pd.Series) -> pd.Series:
    """The progress bin of each fraction in [0, 1] (1 falls in the last)."""
    return np.minimum((fraction * PROGRESS_BINS).astype(int), PROGRESS_BINS - 1).rename(PROGRESS)
