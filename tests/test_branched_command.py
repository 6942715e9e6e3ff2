"""`noisetune branch`: the critical batch size along training by branching, on linear
regression (trainables.branching, tuner.runtime.branched, the CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _helpers import run_noisetune

from trainables import keys
from trainables.branching import branch_losses, branch_settings
from trainables.loop import run_trial
from trainables.settings import Hyperparameters
from tuner.config.spec import load_spec
from tuner.config.trial_settings import trial_settings
from tuner.theory.branched import branched_b_crit

SPEC: dict[str, Any] = {
    "name": "linreg-branch",
    "workload": "linear_regression",
    "workload_args": {"dim": 50, "noise": 1.0, "n_train": 4096},
    "target": {"metric": "loss", "value": 0.01},
    "budget": {"max_steps": 3000},
    "eval_every": 10,
    "space": {"batch_size": [8], "lr": [0.05]},
    "optimizer": "sgd",
}


def write_spec(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "storage": str(tmp_path / "runs"), **overrides}))
    return path


def test_the_base_loss_is_run_trials_and_branches_train(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, budget={"max_steps": 60}))
    settings = branch_settings(trial_settings(spec, ""))
    hp = Hyperparameters(batch_size=8, lr=0.05, momentum=0.0, warmup_steps=0)
    points = branch_losses(settings, hp, [10, 30], [2, 4], [2.0, 4.0], delta_steps=20)
    reports: list[dict[str, Any]] = []
    run_trial(settings, hp, reports.append)
    reported = {int(r[keys.STEP]): float(r[keys.LOSS]) for r in reports}
    assert [p.step for p in points] == [10, 30]
    assert [p.examples for p in points] == [80, 240]
    for point in points:
        assert point.base_loss == reported[point.step + 20]  # the same run, bit for bit
        assert set(point.branch_loss) == {2, 4}
        assert all(math.isfinite(v) for v in point.branch_loss.values())
        # linear scaling holds this far below the stability limit: within 10%
        assert all(abs(v / point.base_loss - 1) < 0.1 for v in point.branch_loss.values())


def test_a_branch_past_the_stability_limit_reports_nan_or_a_worse_loss(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, budget={"max_steps": 60}))
    settings = branch_settings(trial_settings(spec, ""))
    hp = Hyperparameters(batch_size=4, lr=0.5, momentum=0.0, warmup_steps=0)
    (point,) = branch_losses(settings, hp, [10], [8], [8.0], delta_steps=64)
    loss = point.branch_loss[8]  # 8 steps at lr 4: past 2/λ_max = 2, |1 - 4|⁸ = 6561
    assert not math.isfinite(loss) or loss > 10 * point.base_loss


def test_branch_writes_the_three_files_and_b_crit_rises(tmp_path: Path) -> None:
    """The issue's check at one seed (bench/branched.py runs four): with the default lr
    factors 0.25, 0.5, 1, B_crit 128, 256, >= 512, >= 512 at progress 0.02, 0.1, 0.3, 0.7
    (seed 0; seeds 1-3 rise from 128 or 256 to >= 512 too). At the law's lr alone
    (--lr-factors 1) it stops at 256 from 0.1 on: lr·32 = 1.6 is near 2/λ_max."""
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    args = ["--batch-size", "8", "--lr", "0.05", "--at", "0.02,0.1,0.3,0.7"]
    args += ["--multipliers", "2,4,8,16,32,64", "--delta-steps", "128", "--out", str(out)]
    result = run_noisetune("branch", str(spec), *args)
    assert result.returncode == 0, result.stderr
    assert "B_crit" in result.stdout and str(out / "branched.parquet") in result.stdout
    table = pd.read_parquet(out / "branched.parquet")
    assert list(table["step"]) == [60, 300, 900, 2100]
    assert list(table["progress"]) == pytest.approx([0.02, 0.1, 0.3, 0.7])
    assert {f"loss_{k}" for k in (2, 4, 8, 16, 32, 64)} <= set(table.columns)
    b_crit = list(table["b_crit"])
    assert b_crit[-1] > b_crit[0] > 8
    assert (table["interval_hi"] > table["interval_lo"]).all()
    summary = json.loads((out / "branched.json").read_text())
    assert summary["law"] == "sgd" and summary["delta_examples"] == 128 * 8
    assert "grid of multipliers" in summary["note"]
    sizes = [row["batch_size"] for row in summary["recommended_schedule"]]
    assert sizes == sorted(sizes)
    assert (out / "b_crit_vs_progress.png").stat().st_size > 1000
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--multipliers", "2,3", "--delta-steps", "8"], "not divisible by multiplier(s) 3"),
        (["--at", "0.5,1.5"], "--at 1.5 is not in [0, 1)"),
        (["--multipliers", "1,2"], "--multipliers 1 is not >= 2"),
        (["--at", "a,b"], "--at 'a,b': give comma-separated numbers"),
        (["--lr-factors", "0.5,0"], "--lr-factors 0 is not > 0"),
        (["--lr-factors", "x"], "--lr-factors 'x': give comma-separated numbers"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    result = run_noisetune(
        "branch", str(spec), "--batch-size", "8", "--lr", "0.05", "--out", str(out), *args
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_seed_index_0_is_the_base_run_and_the_other_seeds_are_paired(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, budget={"max_steps": 60}))
    settings = branch_settings(trial_settings(spec, ""))
    hp = Hyperparameters(batch_size=8, lr=0.05, momentum=0.0, warmup_steps=0)
    args = (settings, hp, [10], [2], [2.0])
    (point,) = branch_losses(*args, delta_steps=8, lr_factors=(0.5, 1.0), seeds=3)
    (again,) = branch_losses(*args, delta_steps=8, lr_factors=(0.5, 1.0), seeds=3)
    assert set(point.losses) == {(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)}
    assert all(len(v) == 3 for v in point.losses.values())
    assert point.losses[(1, 1.0)][0] == point.base_loss  # the base run's own continuation
    assert point.losses == again.losses  # each seed index is one stream, run after run
    base_seeds = point.losses[(1, 1.0)]
    assert len(set(base_seeds)) == 3  # three different batch streams
    assert point.branch_loss == {2: point.losses[(2, 1.0)][0]}


def test_a_run_does_not_change_the_checkpoint_the_next_one_starts_from(tmp_path: Path) -> None:
    """The optimiser adopts a loaded state's tensors (momentum buffers) and updates them
    in place: each run must start from its own copy of the checkpoint."""
    spec = load_spec(write_spec(tmp_path, budget={"max_steps": 60}))
    settings = branch_settings(trial_settings(spec, ""))
    hp = Hyperparameters(batch_size=8, lr=0.02, momentum=0.9, warmup_steps=0)
    args = (settings, hp, [10], [2], [2.0])
    (alone,) = branch_losses(*args, delta_steps=8, lr_factors=(1.0,))
    (after,) = branch_losses(*args, delta_steps=8, lr_factors=(0.25, 1.0))
    assert after.losses[(2, 1.0)] == alone.losses[(2, 1.0)]


def test_lr_factors_and_seeds_write_every_run_and_the_winner(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, budget={"max_steps": 600})
    out = tmp_path / "out"
    args = ["--batch-size", "8", "--lr", "0.05", "--at", "0.1,0.5", "--multipliers", "2,4"]
    args += ["--delta-steps", "16", "--lr-factors", "1,0.5", "--seeds", "2", "--out", str(out)]
    result = run_noisetune("branch", str(spec), *args)
    assert result.returncode == 0, result.stderr
    assert "best lr factor at k" in result.stdout and "2 seed(s)" in result.stdout
    table = pd.read_parquet(out / "branched.parquet")
    runs = {f"loss_{k}_lr{f}" for k in (1, 2, 4) for f in ("0.5", "1")}
    assert runs | {"reference_loss", "lr_factor_1", "gap_2", "gap_2_se", "gap_4_se"} <= set(
        table.columns
    )
    for row in table.to_dict("records"):
        for k in (1, 2, 4):
            by_factor = {f: row[f"loss_{k}_lr{f:g}"] for f in (0.5, 1.0)}
            best = min(by_factor, key=lambda f: by_factor[f])
            assert row[f"lr_factor_{k}"] == best
        assert row["reference_loss"] == row[f"loss_1_lr{row['lr_factor_1']:g}"]
        assert row["loss_2"] == row[f"loss_2_lr{row['lr_factor_2']:g}"]
        assert math.isfinite(row["gap_2_se"])  # two seeds: a standard error
        expected = branched_b_crit(
            8, row["progress"], row["reference_loss"], {2: row["loss_2"], 4: row["loss_4"]}, 0.01
        )
        assert row["b_crit"] == expected.b_crit
    summary = json.loads((out / "branched.json").read_text())
    assert summary["lr_factors"] == [0.5, 1.0] and summary["seeds"] == 2
    assert "paired relative gap" in summary["note"]


@pytest.mark.parametrize(
    ("workload", "args", "message"),
    [
        ("tests.user_workloads:no_eval", [], "the workload has no eval set"),
        ("tests.user_workloads:streaming", ["--seeds", "2"], "seeds > 1 need a map-style"),
        ("tests.user_workloads:failing_build", [], "FileNotFoundError"),
    ],
)
def test_a_workload_branching_cannot_compare_exits_2(
    tmp_path: Path, workload: str, args: list[str], message: str
) -> None:
    spec = write_spec(tmp_path, workload=workload, workload_args={}, budget={"max_steps": 100})
    out = tmp_path / "out"
    result = run_noisetune(
        "branch", str(spec), "--batch-size", "8", "--lr", "0.05", "--out", str(out), *args
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
