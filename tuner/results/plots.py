"""Figures of a sweep from its results tables (DESIGN.md §3, ``results/plots/``).

Three PNGs: the steps/examples Pareto front with the fitted trade-off hyperbola and B_crit,
the effective learning rate per batch size with ε_opt(B), and the noise scale by batch
size and progress to the target (pooled over the trials: tuner.results.noise_pooled).
Drawn on ``matplotlib.figure.Figure`` objects with an Agg canvas: no pyplot, no global
state, no GUI backend needed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from trainables import keys
from trainables.settings import Target
from tuner import theory
from tuner.results import columns
from tuner.results.noise_pooled import HIGH, LOW, PROGRESS, pooled_median, pooled_noise_scale
from tuner.results.tables import UNFINISHED, Tables, summary_target, target_text

__all__ = [
    "PLOT_FILES",
    "lr_vs_batch_figure",
    "noise_scale_figure",
    "pareto_front_figure",
    "plot_paths",
    "write_plots",
]

PLOT_FILES = {
    "pareto_front": "pareto_front.png",
    "lr_vs_batch": "lr_vs_batch.png",
    "noise_scale": "noise_scale.png",
}
FIGSIZE = (6.0, 4.5)
DPI = 100
NO_TARGET_NOTE = "no trial reached the target"
NOTE_WIDTH = 45  # characters per line of a note in a legend (two columns of them fit)
TRUE_B_SIMPLE = "true_b_simple"  # reported by the linear_regression workload
B_SIMPLE_CAVEAT = (
    "B_simple is a diagnostic, not B_crit: it can lie orders of magnitude below the "
    "critical batch size measured directly (Merrill et al. 2025); B_crit is the fit's"
)

# Marker style per trial status: (colour, marker).
_STATUS_STYLE: dict[str, tuple[str, str]] = {
    keys.REACHED: ("tab:blue", "o"),
    keys.PRUNED: ("tab:orange", "v"),
    keys.DIVERGED: ("tab:red", "X"),
    keys.EXHAUSTED: ("tab:gray", "s"),
    keys.STALLED: ("tab:olive", "P"),
    keys.ERROR: ("black", "D"),
    UNFINISHED: ("tab:purple", "."),
}
FloatArray = npt.NDArray[np.float64]


def plot_paths(out_dir: Path) -> dict[str, Path]:
    """The three figure files under ``out_dir``, by name (for summary.md to embed)."""
    return {name: out_dir / filename for name, filename in PLOT_FILES.items()}


def write_plots(tables: Tables, out_dir: Path) -> list[Path]:
    """Write the three figures into ``out_dir`` (created if needed); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = plot_paths(out_dir)
    figures = {
        "pareto_front": pareto_front_figure(tables),
        "lr_vs_batch": lr_vs_batch_figure(tables),
        "noise_scale": noise_scale_figure(tables),
    }
    written = []
    for name, figure in figures.items():
        _save(figure, paths[name])
        written.append(paths[name])
    return written


# -- the figures ----------------------------------------------------------------------------


def pareto_front_figure(tables: Tables) -> Figure:
    """Steps vs examples (log-log): trials, the per-B front, the fitted hyperbola, B_crit."""
    fig, ax = _new_figure()
    s = tables.summary
    reached = _reached(tables.trials)
    front = _clean_front(tables.front)
    xs: list[float] = []  # what the axis limits must show
    ys: list[float] = []

    if not reached.empty:
        ax.scatter(
            reached[keys.EXAMPLES_TO_TARGET], reached[keys.STEPS_TO_TARGET], s=18,
            color="tab:blue", alpha=0.3, linewidths=0, label="trials that reached the target",
        )  # fmt: skip
        xs += reached[keys.EXAMPLES_TO_TARGET].tolist()
        ys += reached[keys.STEPS_TO_TARGET].tolist()
    if not front.empty:
        ax.plot(
            front[keys.EXAMPLES], front[columns.STEPS], "-o", color="tab:blue", markersize=5,
            lw=1.2, label="best trial per batch size",
        )  # fmt: skip
        pareto = front[front[columns.PARETO]]
        ax.scatter(
            pareto[keys.EXAMPLES], pareto[columns.STEPS], s=70, facecolors="none",
            edgecolors="black", linewidths=1.2, zorder=4, label="Pareto-optimal",
        )  # fmt: skip
        for _, row in front.iterrows():
            ax.annotate(
                f"B={int(row[keys.BATCH_SIZE])}", (row[keys.EXAMPLES], row[columns.STEPS]),
                xytext=(6, -4), textcoords="offset points", fontsize=8, va="top",
            )  # fmt: skip
        xs += front[keys.EXAMPLES].tolist()
        ys += front[columns.STEPS].tolist()

    s_min, b_crit = _num(s, columns.S_MIN), _num(s, columns.B_CRIT)
    e_min = _num(s, columns.E_MIN)
    if s_min is not None and s_min > 0 and b_crit is not None and b_crit >= 0:
        if e_min is None:
            e_min = s_min * b_crit
        batch_sizes = _batch_sizes(front)
        b_grid = _wide_b_grid([*batch_sizes, b_crit])
        steps = np.asarray(theory.steps_for(b_grid, s_min, b_crit), dtype=float)
        examples = np.asarray(theory.examples_for(b_grid, s_min, b_crit), dtype=float)
        ax.plot(
            examples, steps, color="tab:green", lw=1.5,
            label=r"fit $S = S_{min}(1 + B_{crit}/B)$",
        )  # fmt: skip
        ax.axhline(
            s_min, color="tab:green", ls=":", lw=1, label=f"$S_{{min}}$ = {_fmt(s_min)} steps"
        )
        if e_min > 0:
            ax.axvline(
                e_min, color="tab:green", ls="--", lw=1,
                label=f"$E_{{min}}$ = {_fmt(e_min)} examples",
            )  # fmt: skip
            ax.plot(
                [2 * e_min], [2 * s_min], marker="*", color="tab:red", markersize=14,
                markeredgecolor="black", ls="none", zorder=5,
                label=f"$B_{{crit}}$ = {_fmt(b_crit)}{_interval(s)} at {_target(s)}",
            )  # fmt: skip
            xs += [e_min, 2 * e_min]
        ys += [s_min, 2 * s_min]

    note = s.get(columns.B_CRIT_NOTE)
    if not front.empty and b_crit is None and note:  # in the legend: why no B_crit
        ax.plot([], [], " ", label=textwrap.fill(f"$B_{{crit}}$: {note}", NOTE_WIDTH))
    ax.set_xlabel("examples to target (E = B·S)")
    ax.set_ylabel("steps to target (S)")
    ax.set_title(f"Steps vs examples to {_target(s)}", fontsize=11)
    if front.empty:
        _note(ax, NO_TARGET_NOTE)
    _log_log(ax, xs, ys)
    _legend(fig, ax)
    return fig


def lr_vs_batch_figure(tables: Tables) -> Figure:
    """The learning rate vs B (log-log) by status and the best per B, with the
    optimiser's ε_opt(B) law (tuner.theory.lr_laws): for SGD the effective rate
    lr/(1 − m) and ε_max/(1 + B_noise/B), for SGD-SaI (EMA momentum) the lr and the same
    law, for AdamW the lr and Adam's surge law."""
    fig, ax = _new_figure()
    s = tables.summary
    trials = tables.trials
    sgd = s.get(columns.OPTIMIZER, "sgd") == "sgd"
    rate = _effective_lr if sgd else (lambda frame: _col(frame, keys.LR))
    effective = rate(trials)
    batch = _col(trials, keys.BATCH_SIZE)
    status = (
        trials[columns.STATUS].astype(str) if columns.STATUS in trials else pd.Series(dtype=str)
    )
    ok = np.isfinite(effective) & (effective > 0) & np.isfinite(batch) & (batch > 0)
    xs: list[float] = batch[ok].tolist()
    ys: list[float] = effective[ok].tolist()

    for name, (colour, marker) in _STATUS_STYLE.items():
        mask = ok & (status == name).to_numpy()
        if mask.any():
            filled = name == keys.REACHED
            ax.scatter(
                batch[mask], effective[mask], s=30, marker=marker, alpha=0.75, zorder=3,
                facecolors=colour if filled or marker in "X." else "none", edgecolors=colour,
                label=f"{name} ({int(mask.sum())})",
            )  # fmt: skip
    others = ok & ~status.isin(list(_STATUS_STYLE)).to_numpy()
    if others.any():
        ax.scatter(batch[others], effective[others], s=20, marker="+", color="tab:brown",
                   label=f"other ({int(others.sum())})")  # fmt: skip

    front = _clean_front(tables.front)
    if not front.empty:
        best = rate(front)
        good = np.isfinite(best) & (best > 0)
        if good.any():
            ax.plot(
                front[keys.BATCH_SIZE][good], best[good], "-*", color="black", markersize=12,
                markerfacecolor="gold", lw=1.2, zorder=4, label="best lr per batch size (front)",
            )  # fmt: skip

    eps_max, b_noise = _num(s, keys.EPS_MAX), _num(s, keys.B_NOISE)
    optimizer = str(s.get(columns.OPTIMIZER, "sgd"))
    law = theory.LAW_OF_OPTIMIZER.get(optimizer)
    if law is None:
        ax.plot([], [], " ", label=f"no eps_opt(B) law drawn for {optimizer}")
    elif eps_max is not None and eps_max > 0 and b_noise is not None and b_noise > 0:
        b_grid = _wide_b_grid([*xs, b_noise] if b_noise > 0 else xs)
        source = s.get(columns.B_NOISE_SOURCE) or "source unknown"
        if law == "adam":
            curve = np.asarray(theory.eps_opt_adam(b_grid, eps_max, b_noise), dtype=float)
            formula = r"$\epsilon_{max}/(\frac{1}{2}(\sqrt{B_{noise}/B} + \sqrt{B/B_{noise}}))$"
        else:
            curve = np.asarray(theory.eps_opt(b_grid, eps_max, b_noise), dtype=float)
            formula = r"$\epsilon_{max}/(1 + B_{noise}/B)$"
        ax.plot(
            b_grid, curve, color="tab:green", lw=1.5, zorder=2,
            label=r"$\epsilon_{opt}(B)$ = " + formula + rf", $\epsilon_{{max}}$ = {_fmt(eps_max)}",
        )  # fmt: skip
        noise_label = f"$B_{{noise}}$ = {_fmt(b_noise)}\n({source})"
        if b_noise > 0:
            ax.axvline(b_noise, color="tab:green", ls=":", lw=1, label=noise_label)
            xs.append(b_noise)
        else:
            ax.plot([], [], " ", label=noise_label)
        ys.append(eps_max)

    ax.set_xlabel("batch size B (examples per step)")
    ax.set_ylabel("effective lr  lr/(1 − momentum)" if sgd else f"lr ({optimizer})")
    ax.set_title(f"Learning rate vs batch size ({_target(s)})", fontsize=11)
    if not xs:
        _note(ax, "no trials")
    elif front.empty:  # in the legend, where it cannot hide a point
        ax.plot([], [], " ", label=NO_TARGET_NOTE)
    _log_log(ax, xs, ys)
    _batch_ticks(ax, np.unique(batch[ok]))
    _legend(fig, ax)
    return fig


def noise_scale_figure(tables: Tables) -> Figure:
    """B_simple by batch size and progress to the target (tuner.results.noise_pooled):
    per batch size the pooled estimate of all its trials (line) and the 10–90% range of
    their own reports (band). Dashed: the true B_simple where the workload reports it.
    B_simple is a diagnostic beside B_crit, not an estimate of it (the legend says so).
    """
    fig, ax = _new_figure()
    s = tables.summary
    target = _pooling_target(s)
    pooled = (
        pd.DataFrame()
        if target is None
        else pooled_noise_scale(tables.curves, tables.trials, target)
    )
    if not pooled.empty:
        pooled = pooled[np.isfinite(pooled[keys.B_SIMPLE]) & (pooled[keys.B_SIMPLE] > 0)]
    truth = (
        pooled_median(tables.curves, tables.trials, target, TRUE_B_SIMPLE)
        if target is not None and TRUE_B_SIMPLE in tables.curves
        else pd.DataFrame()
    )
    ys: list[float] = []
    drawn = not pooled.empty
    if drawn:
        sizes = np.asarray(sorted(set(pooled[keys.BATCH_SIZE])), dtype=float)
        colour_of = _batch_colours(sizes)
        for batch, part in pooled.groupby(keys.BATCH_SIZE):
            colour = colour_of(float(batch))
            x = part[PROGRESS].to_numpy(float)
            ax.plot(
                x, part[keys.B_SIMPLE], "-o", ms=3, color=colour, lw=1.5, label=f"B={int(batch)}"
            )
            low, high = part[LOW].to_numpy(float), part[HIGH].to_numpy(float)
            band = np.isfinite(low) & np.isfinite(high) & (low > 0)
            ax.fill_between(x[band], low[band], high[band], color=colour, alpha=0.12, lw=0)
            ys += [float(v) for v in part[keys.B_SIMPLE]] + [float(v) for v in high[band]]
            ys += [float(v) for v in low[band]]
            if not truth.empty:
                true = truth[truth[keys.BATCH_SIZE] == batch]
                ax.plot(true[PROGRESS], true[TRUE_B_SIMPLE], "--", color=colour, lw=0.9, alpha=0.7)
        ax.plot([], [], "-o", ms=3, color="gray", label="pooled over the trials at B")
        ax.fill_between([], [], [], color="gray", alpha=0.12, label="10–90% of one trial's own")
        if not truth.empty:
            ax.plot([], [], "--", color="gray", label="true (workload)")
    b_simple, b_crit = _num(s, keys.B_SIMPLE), _num(s, columns.B_CRIT)
    if drawn and b_crit is not None and b_crit > 0:
        ax.axhline(b_crit, color="black", ls=":", lw=1, label=f"$B_{{crit}}$ = {_fmt(b_crit)}")
        ys.append(b_crit)
    if drawn and b_simple is not None and b_simple > 0:
        ax.axhline(
            b_simple, color="tab:red", ls="-.", lw=1,
            label=f"$B_{{simple}}$ pooled at target = {_fmt(b_simple)}",
        )  # fmt: skip
        ys.append(b_simple)
    if drawn:
        ax.plot([], [], " ", label=textwrap.fill(B_SIMPLE_CAVEAT, NOTE_WIDTH))
    ax.set_xlabel(f"progress to the {_target(s)} (0: first evaluation)")
    ax.set_ylabel(r"$B_{simple}$ = tr(Σ)/|G|²  (examples)")
    ax.set_title("Gradient noise scale by batch size and progress", fontsize=11)
    if not drawn:
        _note(ax, NO_TARGET_NOTE if tables.front.empty else "no noise-scale measurements")
    ax.set_xlim(0.0, 1.0)
    positive = [y for y in ys if math.isfinite(y) and y > 0]
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 1.5, max(positive) * 1.5)
    _legend(fig, ax)
    return fig


def _pooling_target(summary: dict[str, Any]) -> Target | None:
    """The summary's target, where it has a usable one."""
    target = summary.get(columns.TARGET)
    if not isinstance(target, dict) or _num(target, "value") is None:
        return None
    try:
        return summary_target(target)
    except (KeyError, TypeError, ValueError):
        return None


# -- helpers -------------------------------------------------------------------------------


def _new_figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _legend(fig: Figure, ax: Axes) -> None:
    """The axes' legend below the axes (outside, so it never hides data), in two columns."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7.5,
                   frameon=False)  # fmt: skip


def _save(fig: Figure, path: Path) -> None:
    """Write a PNG whole: to a temporary name, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    tmp.replace(path)


def _num(summary: dict[str, Any], key: str) -> float | None:
    """A finite float from the summary, or None (missing, None, NaN, not a number)."""
    value = summary.get(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _interval(summary: dict[str, Any]) -> str:
    interval = summary.get(columns.B_CRIT_INTERVAL)
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    low, high = _num({"v": interval[0]}, "v"), _num({"v": interval[1]}, "v")
    if low is None or high is None:
        return ""
    return f" (90%: {_fmt(low)}–{_fmt(high)})"


def _target(summary: dict[str, Any]) -> str:
    target = summary.get(columns.TARGET)
    if isinstance(target, dict) and "metric" in target and "value" in target:
        try:
            text = target_text(target).replace("<=", "≤").replace(">=", "≥")
            return f"target {text}"
        except (TypeError, ValueError):
            return f"target {target['metric']} {target['value']}"
    return "target"


def _note(ax: Axes, text: str, y: float = 0.5) -> None:
    ax.text(
        0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=12,
        color="dimgray", bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )  # fmt: skip


def _col(frame: pd.DataFrame, column: str) -> FloatArray:
    if column not in frame:
        return np.full(len(frame), np.nan)
    values = pd.to_numeric(frame[column], errors="coerce")
    return np.asarray(values, dtype=np.float64)


def _effective_lr(frame: pd.DataFrame) -> FloatArray:
    """lr/(1 − m); NaN where momentum is missing or not in [0, 1)."""
    lr = _col(frame, keys.LR)
    momentum = _col(frame, keys.MOMENTUM) if keys.MOMENTUM in frame else np.zeros(len(frame))
    valid = (momentum >= 0) & (momentum < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, lr / (1.0 - np.where(valid, momentum, 0.0)), np.nan)


def _reached(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that reached the target with finite, positive steps and examples."""
    needed = {columns.STATUS, keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET}
    if trials.empty or not needed <= set(trials.columns):
        return pd.DataFrame(columns=[keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET])
    steps, examples = _col(trials, keys.STEPS_TO_TARGET), _col(trials, keys.EXAMPLES_TO_TARGET)
    if keys.STEPS_TO_TARGET_INTERP in trials:  # as the front and the fit
        interp = _col(trials, keys.STEPS_TO_TARGET_INTERP)
        steps = np.where(np.isfinite(interp), interp, steps)
        examples = np.where(
            np.isfinite(interp), _col(trials, keys.EXAMPLES_TO_TARGET_INTERP), examples
        )
    mask = (trials[columns.STATUS] == keys.REACHED).to_numpy() & (steps > 0) & (examples > 0)
    return pd.DataFrame(
        {keys.STEPS_TO_TARGET: steps[mask], keys.EXAMPLES_TO_TARGET: examples[mask]}
    )


def _clean_front(front: pd.DataFrame) -> pd.DataFrame:
    """The front's rows with finite, positive B, steps and examples, sorted by B; the
    steps and examples interpolated between evaluations where the front has them (what
    the fit and the Pareto flag use)."""
    needed = {keys.BATCH_SIZE, columns.STEPS, keys.EXAMPLES}
    if front.empty or not needed <= set(front.columns):
        return pd.DataFrame(
            columns=[*needed, columns.TRIAL_ID, keys.LR, keys.MOMENTUM, columns.PARETO]
        )
    out = front.copy()
    if columns.STEPS_INTERP in out and out[columns.STEPS_INTERP].notna().all():
        out[columns.STEPS] = out[columns.STEPS_INTERP]
        out[keys.EXAMPLES] = out[columns.EXAMPLES_INTERP]
    for column in needed:
        out[column] = pd.to_numeric(out[column], errors="coerce")
    good = np.ones(len(out), dtype=bool)
    for column in needed:
        values = out[column].to_numpy(dtype=float)
        good &= np.isfinite(values) & (values > 0)
    out = out[good]
    if columns.PARETO not in out:
        out[columns.PARETO] = False
    pareto = out[columns.PARETO].fillna(False).astype(str).str.lower()
    out[columns.PARETO] = pareto.isin(["true", "1"])
    if columns.TRIAL_ID not in out:
        out[columns.TRIAL_ID] = ""
    return out.sort_values(keys.BATCH_SIZE).reset_index(drop=True)


def _batch_sizes(front: pd.DataFrame) -> list[float]:
    return front[keys.BATCH_SIZE].astype(float).tolist() if not front.empty else []


def _wide_b_grid(values: Iterable[float], span: float = 100.0, n: int = 400) -> FloatArray:
    """Batch sizes from min/span to max·span (log-spaced), for drawing a law over B."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    low, high = (min(finite), max(finite)) if finite else (1.0, 1.0)
    return np.geomspace(low / span, high * span, n)


def _log_log(ax: Axes, xs: list[float], ys: list[float], pad: float = 1.6) -> None:
    """Log-log axes showing every point of xs, ys (padded by ``pad``), with plain tick labels.

    Without any point the axes stay linear and bare (a note says why).
    """
    xs = [v for v in xs if math.isfinite(v) and v > 0]
    ys = [v for v in ys if math.isfinite(v) and v > 0]
    if not xs or not ys:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(xs) / pad, max(xs) * pad)
    ax.set_ylim(min(ys) / pad, max(ys) * pad)
    for axis, values in ((ax.xaxis, xs), (ax.yaxis, ys)):
        decades = math.log10(max(values) * pad / (min(values) / pad))
        subs = (
            [1.0]
            if decades > 4
            else [1.0, 2.0, 5.0]
            if decades > 1.2
            else [1.0, 2.0, 3.0, 5.0, 7.0]
        )
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def _tick(value: float, _pos: int | None = None) -> str:
    """A short tick label: 0.05, 2, 500, 20k, 1.5M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _batch_ticks(ax: Axes, batch_sizes: FloatArray) -> None:
    """Label the x axis with the batch sizes themselves when there are few of them."""
    if 0 < batch_sizes.size <= 12:
        ax.xaxis.set_major_locator(FixedLocator(batch_sizes.tolist()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())


def _batch_colours(sizes: FloatArray) -> Callable[[float], tuple[float, float, float, float]]:
    """A colour per batch size: viridis by log B, stopping short of its pale yellow end."""
    cmap = colormaps["viridis"]
    low, high = math.log(float(np.min(sizes))), math.log(float(np.max(sizes)))
    span = high - low

    def colour(b: float) -> tuple[float, float, float, float]:
        fraction = (math.log(b) - low) / span if span > 0 else 0.0
        return cmap(0.85 * fraction)

    return colour


def _positive(frame: pd.DataFrame, x_column: str, y_column: str) -> tuple[FloatArray, FloatArray]:
    """x, y with NaNs and non-positive values (not drawable on log axes) left out."""
    x, y = _col(frame, x_column), _col(frame, y_column)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]
