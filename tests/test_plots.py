"""Figures from the results tables: synthetic sweeps on the exact trade-off, and edge cases."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from trainables import keys
from tuner import theory
from tuner.results import columns
from tuner.results.plots import (
    NO_TARGET_NOTE,
    PLOT_FILES,
    TRUE_B_SIMPLE,
    lr_vs_batch_figure,
    noise_scale_figure,
    pareto_front_figure,
    plot_paths,
    write_plots,
)
from tuner.results.tables import (
    CURVE_COLUMNS,
    FRONT_COLUMNS,
    TRIAL_COLUMNS,
    Tables,
    front_table,
    read_tables,
    summarize,
    write_tables,
)

S_MIN, B_CRIT = 64.0, 256.0  # integer steps at every B in BATCHES
EPS_MAX, B_NOISE = 1.0, 40.0
BATCHES = [16, 64, 256, 1024, 4096]
LR_FACTORS = [0.25, 0.5, 1.0, 2.0, 4.0]  # times ε_opt(B)
TARGET = {"metric": "loss", "value": 0.3}
EVAL_EVERY = 10


def _trial(
    trial_id: str, status: str, batch: int, lr: float, steps: float, momentum: float = 0.0
) -> dict[str, Any]:
    reached = status == keys.REACHED
    return {
        columns.TRIAL_ID: trial_id, columns.STATUS: status, keys.BATCH_SIZE: batch, keys.LR: lr,
        keys.MOMENTUM: momentum, keys.WARMUP_STEPS: 0,
        keys.STEPS_TO_TARGET: steps if reached else math.nan,
        keys.EXAMPLES_TO_TARGET: steps * batch if reached else math.nan,
        columns.FINAL_LOSS: 0.29 if reached else 0.5, keys.B_SIMPLE: 100.0, keys.WALL_S: 1.0,
        keys.REASON: status, columns.STEPS: int(steps), keys.EXAMPLES: int(steps * batch),
        columns.EFFECTIVE_LR: lr / (1.0 - momentum),
    }  # fmt: skip


def _curve(trial_id: str, batch: int, steps: float) -> list[dict[str, Any]]:
    """Reports every EVAL_EVERY steps up to `steps` (B_simple grows, NaN at step 0)."""
    rows = []
    for step in range(0, int(steps) + 1, EVAL_EVERY):
        b_simple = math.nan if step == 0 else 20.0 * (1.0 + step / 20.0) ** 0.5
        g2 = 1.0 / (1.0 + step)
        rows.append(
            {
                columns.TRIAL_ID: trial_id, keys.STEP: step, keys.EXAMPLES: step * batch,
                keys.LOSS: 1.0 / (1.0 + step / 50.0), keys.LR: 0.1, keys.B_SIMPLE: b_simple,
                keys.G2: g2, keys.TRACE_SIGMA: b_simple * g2, TRUE_B_SIMPLE: 1.5 * b_simple,
            }
        )  # fmt: skip
    return rows


def _sweep(batches: list[int], statuses: dict[float, str] | None = None) -> Tables:
    """A grid sweep whose best steps per B lie exactly on S = S_min(1 + B_crit/B).

    The best lr per B is exactly ε_opt(B); other lrs take (1 + log²(lr/ε_opt)) times more
    steps. `statuses` overrides the status of the trials at a given lr factor.
    """
    statuses = statuses or {4.0: keys.DIVERGED}
    trials, curves = [], []
    for i, (batch, factor) in enumerate((b, f) for b in batches for f in LR_FACTORS):
        trial_id = f"t_{i:05d}"
        lr = factor * theory.eps_opt(float(batch), EPS_MAX, B_NOISE)
        steps = round(theory.steps_for(float(batch), S_MIN, B_CRIT) * (1 + math.log(factor) ** 2))
        status = statuses.get(factor, keys.REACHED)
        trials.append(_trial(trial_id, status, batch, lr, steps))
        curves += _curve(trial_id, batch, steps)
    trial_table = pd.DataFrame(trials, columns=TRIAL_COLUMNS)
    curve_table = pd.DataFrame(curves, columns=[*CURVE_COLUMNS, TRUE_B_SIMPLE])
    front = front_table(trial_table)
    return Tables(
        trial_table, curve_table, front, summarize(trial_table, curve_table, front, TARGET)
    )


def _none_summary(tables: Tables) -> Tables:
    """The same tables with every fitted summary value None (as summary.json writes NaN)."""
    summary = dict.fromkeys(tables.summary, None)
    summary[columns.TARGET] = TARGET
    return Tables(tables.trials, tables.curves, tables.front, summary)


def _assert_pngs(paths: list[Path], out_dir: Path) -> None:
    assert paths == list(plot_paths(out_dir).values())
    for path in paths:
        assert path.is_file() and path.stat().st_size > 5_000, path
        image = imread(path)
        assert image.shape == (450, 600, 4)  # 6 x 4.5 inches at 100 dpi
        assert float(image[..., :3].std()) > 0.01  # something was drawn
    assert not list(out_dir.glob(".*.tmp"))


def _texts(fig: Figure) -> str:
    return "\n".join(text.get_text() for ax in fig.axes for text in ax.texts)


def _labels(fig: Figure) -> list[str]:
    return [str(label) for label in fig.axes[0].get_legend_handles_labels()[1]]


def test_plot_paths_names_three_pngs(tmp_path: Path) -> None:
    paths = plot_paths(tmp_path)
    assert set(paths) == {"pareto_front", "lr_vs_batch", "noise_scale"}
    assert [p.name for p in paths.values()] == list(PLOT_FILES.values())
    assert all(p.parent == tmp_path for p in paths.values())


def test_exact_hyperbola_sweep(tmp_path: Path) -> None:
    tables = _sweep(BATCHES)
    s = tables.summary
    assert s[columns.B_CRIT] == pytest.approx(B_CRIT, rel=1e-4)  # the synthetic data is exact
    assert s[keys.B_NOISE] == pytest.approx(B_NOISE, rel=1e-3)

    out = tmp_path / "plots"
    _assert_pngs(write_plots(tables, out), out)

    pareto = pareto_front_figure(tables)
    star = next(
        line for line in pareto.axes[0].get_lines() if str(line.get_label()).startswith("$B_{crit}")
    )
    np.testing.assert_allclose(
        [star.get_xdata()[0], star.get_ydata()[0]], [2 * s[columns.E_MIN], 2 * s[columns.S_MIN]]
    )
    fit = next(line for line in pareto.axes[0].get_lines() if "fit" in str(line.get_label()))
    # the fitted curve passes through every front point (they lie on it exactly)
    x, y = np.asarray(fit.get_xdata(), float), np.asarray(fit.get_ydata(), float)
    on_curve = np.interp(np.log(tables.front[keys.EXAMPLES]), np.log(x), np.log(y))
    np.testing.assert_allclose(on_curve, np.log(tables.front[columns.STEPS]), atol=1e-3)
    assert any("S_{min}" in label and "64" in label for label in _labels(pareto))
    assert any("E_{min}" in label and "16,384" in label for label in _labels(pareto))
    assert "loss ≤ 0.3" in pareto.axes[0].get_title()
    assert "target loss ≤ 0.3" in str(star.get_label())  # B_crit is reported with its target

    lr_labels = _labels(lr_vs_batch_figure(tables))
    assert any("epsilon_{opt}" in label for label in lr_labels)
    assert any("fitted to the best effective lr" in label for label in lr_labels)
    assert {"reached (20)", "diverged (5)"} <= set(lr_labels)

    noise_labels = _labels(noise_scale_figure(tables))
    assert {f"B={b}" for b in BATCHES} <= set(noise_labels)
    assert "true (workload)" in noise_labels


def test_adamw_draws_adam_s_law_through_the_best_lrs() -> None:
    """The best AdamW lr per B lies on the surge law with B_noise = B_crit (Li et al.
    2024, eq. 21): the drawn curve passes through it, and peaks at B_crit."""
    front, _figure, law = _law_drawn_through_best_lrs(
        "adamw", lambda b: float(theory.eps_opt_adam(b, 3e-3, B_CRIT))
    )
    assert "sqrt" in str(law.get_label())
    x, y = np.asarray(law.get_xdata(), float), np.asarray(law.get_ydata(), float)
    on_curve = np.interp(np.log(front[keys.BATCH_SIZE]), np.log(x), np.log(y))
    np.testing.assert_allclose(on_curve, np.log(front[keys.LR]), atol=1e-3)
    assert x[np.argmax(y)] == pytest.approx(B_CRIT, rel=0.02)


def _law_drawn_through_best_lrs(optimizer: str, best_lr: Any) -> tuple[Any, Any, Any]:
    """A grid whose best lr per B is `best_lr(B)` (steps on S(B), worse off it): its front,
    the lr-vs-B figure and the drawn law's line."""
    trials = []
    for i, (batch, factor) in enumerate((b, f) for b in BATCHES for f in LR_FACTORS):
        lr = factor * best_lr(float(batch))
        steps = round(theory.steps_for(float(batch), S_MIN, B_CRIT) * (1 + math.log(factor) ** 2))
        trials.append(_trial(f"t_{i:05d}", keys.REACHED, batch, lr, steps, momentum=0.9))
    trial_table = pd.DataFrame(trials, columns=TRIAL_COLUMNS)
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    front = front_table(trial_table)
    summary = summarize(trial_table, curves, front, TARGET, optimizer=optimizer)
    figure = lr_vs_batch_figure(Tables(trial_table, curves, front, summary))
    law = next(
        line
        for line in figure.axes[0].get_lines()
        if str(line.get_label()).startswith(r"$\epsilon_{opt}(B)$")
    )
    return front, figure, law


def test_sgd_sai_draws_sgd_s_law_through_the_best_lrs_themselves() -> None:
    """SGD-SaI's EMA momentum: the rate is the lr (no 1/(1 − m)), on McCandlish's law."""
    front, figure, law = _law_drawn_through_best_lrs(
        "sgd_sai", lambda b: float(theory.eps_opt(b, 2.0, B_CRIT))
    )
    assert "1 + B_{noise}/B" in str(law.get_label())
    x, y = np.asarray(law.get_xdata(), float), np.asarray(law.get_ydata(), float)
    on_curve = np.interp(np.log(front[keys.BATCH_SIZE]), np.log(x), np.log(y))
    np.testing.assert_allclose(on_curve, np.log(front[keys.LR]), atol=1e-3)
    assert figure.axes[0].get_ylabel() == "lr (sgd_sai)"


def test_empty_front_writes_figures_with_a_note(tmp_path: Path) -> None:
    statuses = {f: keys.EXHAUSTED for f in LR_FACTORS} | {4.0: keys.DIVERGED, 0.25: keys.PRUNED}
    tables = _sweep(BATCHES[:3], statuses)
    assert tables.front.empty and tables.summary[columns.B_CRIT] is None

    _assert_pngs(write_plots(tables, tmp_path), tmp_path)
    assert NO_TARGET_NOTE in _texts(pareto_front_figure(tables))
    # The noise scale is drawn along the progress the trials made towards the target.
    noise = noise_scale_figure(tables)
    assert NO_TARGET_NOTE not in _texts(noise)
    assert {f"B={b}" for b in BATCHES[:3]} <= set(_labels(noise))
    lr_labels = set(_labels(lr_vs_batch_figure(tables)))
    assert {"exhausted (9)", "diverged (3)", "pruned (3)", NO_TARGET_NOTE} <= lr_labels


def test_no_trials_at_all(tmp_path: Path) -> None:
    trials = pd.DataFrame(columns=TRIAL_COLUMNS)
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    front = pd.DataFrame(columns=FRONT_COLUMNS)
    tables = Tables(trials, curves, front, summarize(trials, curves, front, TARGET))
    _assert_pngs(write_plots(tables, tmp_path), tmp_path)


def test_single_batch_size(tmp_path: Path) -> None:
    tables = _sweep([256])
    assert len(tables.front) == 1 and tables.summary[columns.B_CRIT] is None
    _assert_pngs(write_plots(tables, tmp_path), tmp_path)
    assert not any("fit" in label for label in _labels(pareto_front_figure(tables)))


def test_none_summary_values_and_nans(tmp_path: Path) -> None:
    tables = _none_summary(_sweep(BATCHES))
    tables.trials.loc[0, keys.LR] = math.nan  # an lr that cannot be drawn
    tables.trials.loc[1, keys.MOMENTUM] = 1.0  # no effective lr
    tables.curves.loc[tables.curves.index[::3], keys.B_SIMPLE] = math.nan
    tables.curves.loc[tables.curves.index[1::5], TRUE_B_SIMPLE] = -1.0  # not on a log axis
    curves = tables.curves.drop(columns=[keys.TRACE_SIGMA])
    tables = Tables(tables.trials, curves, tables.front, tables.summary)
    _assert_pngs(write_plots(tables, tmp_path), tmp_path)
    assert "loss ≤ 0.3" in pareto_front_figure(tables).axes[0].get_title()


def test_round_trip_through_results_files(tmp_path: Path) -> None:
    """What read_tables gives back (CSV front, JSON summary with None) plots the same."""
    tables = _sweep(BATCHES, {4.0: keys.DIVERGED, 0.25: keys.PRUNED})
    tables.summary[columns.B_CRIT_INTERVAL] = [math.nan, 250.0]  # written as null
    write_tables(tmp_path, tables)
    out = tmp_path / "results" / "plots"
    paths = write_plots(read_tables(tmp_path), out)
    _assert_pngs(paths, out)
    _assert_pngs(write_plots(read_tables(tmp_path), out), out)  # overwrites in place
