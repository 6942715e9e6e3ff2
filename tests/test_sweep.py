"""Real sweeps on a real local Ray runtime, checked through the tables they write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _helpers import ray_head, tables_read_row_by_row

from trainables import keys
from tuner.config.spec import parse_spec
from tuner.results.tables import (
    _cached_reports,
    b_crit_text,
    build_tables,
    read_tables,
)
from tuner.results.tune_state import read_trials
from tuner.runtime.run_location import RunDirError
from tuner.runtime.runner import resume_sweep, run_sweep

pytestmark = pytest.mark.ray


def small_spec(tmp_path: Path, **overrides: Any) -> Any:
    data: dict[str, Any] = {
        "name": "sweep",
        "workload": "linear_regression",
        "workload_args": {"dim": 16, "noise": 0.5, "n_train": 8192},
        "target": {"metric": "loss", "value": 0.16},
        "budget": {"max_steps": 300},
        "eval_every": 10,
        "space": {
            "batch_size": [16, 64, 256],
            "lr": [0.1, 0.5, 8.0],
            "momentum": [0.0],
        },
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "storage": str(tmp_path / "runs"),
    }
    data.update(overrides)
    return parse_spec(data)


@pytest.fixture(scope="module")
def grid_run(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp_path = tmp_path_factory.mktemp("grid")
    return run_sweep(small_spec(tmp_path), progress=False)


def test_single_worker_grid_sweep_writes_every_table(grid_run: Any) -> None:
    out = grid_run.run_dir / "results"
    trials = pd.read_parquet(out / "trials.parquet")
    assert pd.read_csv(out / "trials.csv").shape == trials.shape
    assert len(trials) == 9 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= set(keys.FINAL_STATUSES)
    assert not grid_run.interrupted
    assert list(trials.columns[:12]) == [
        "trial_id", "status", "batch_size", "lr", "momentum", "warmup_steps",
        "steps_to_target", "examples_to_target", "final_loss", "b_simple", "wall_s", "reason",
    ]  # fmt: skip
    # lr 8 is far past the stability limit 2/lambda_max = 2 of this problem.
    assert (trials[trials[keys.LR] == 8.0]["status"] == keys.DIVERGED).all()
    reached = trials[trials["status"] == keys.REACHED]
    assert (
        reached["examples_to_target"] == reached["steps_to_target"] * reached["batch_size"]
    ).all()


def test_trial_directories_hold_tunes_json_and_csv_logs_only(grid_run: Any) -> None:
    trial_dirs = [p.parent for p in grid_run.run_dir.glob("*/result.json")]
    assert len(trial_dirs) == 9 and all((d / "progress.csv").is_file() for d in trial_dirs)
    assert not list(grid_run.run_dir.rglob("events.out.tfevents*"))  # no TensorBoard files


def test_curves_hold_every_report_with_workload_metrics(grid_run: Any) -> None:
    out = grid_run.run_dir / "results"
    curves = pd.read_parquet(out / "curves.parquet")
    trials = pd.read_parquet(out / "trials.parquet")
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    assert {"step", "examples", "loss", "lr", "b_simple", "g2", "trace_sigma"} <= set(curves)
    assert "true_b_simple" in curves  # the workload's own metrics come along
    assert set(trials[keys.NOISE_METHOD]) == {"per_example"}  # linear layers: auto takes it
    last = curves.groupby("trial_id")["step"].max()
    assert (last.reindex(trials["trial_id"]).to_numpy() == trials["steps"].to_numpy()).all()


def test_front_and_summary_follow_from_the_trials(grid_run: Any) -> None:
    out = grid_run.run_dir / "results"
    trials = pd.read_parquet(out / "trials.parquet")
    front = pd.read_csv(out / "front.csv")
    reached = trials[trials["status"] == keys.REACHED]
    best = reached.groupby("batch_size")[keys.STEPS_TO_TARGET_INTERP].min()
    assert front.set_index("batch_size")["steps_interp"].to_dict() == best.to_dict()
    assert front["steps_interp"].iloc[0] > front["steps_interp"].iloc[-1]  # B=16 needs most
    # the interpolated crossing lies within the evaluation interval before the step
    assert ((front["steps"] - front["steps_interp"]).between(0, 10, inclusive="left")).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 9 and summary["fit_points"] == 3
    assert summary["total_examples"] == trials["examples"].sum()
    if summary["b_crit_kind"] == "inside":
        assert summary["b_crit"] > 0 and summary["s_min"] > 0
    else:  # a fit that finds no B_crit says why instead
        assert summary["b_crit"] is None and summary["b_crit_note"]
    assert b_crit_text(summary) in (out / "summary.md").read_text()


def test_an_existing_run_directory_is_refused(grid_run: Any) -> None:
    spec = small_spec(grid_run.run_dir.parent.parent)
    with pytest.raises(RunDirError, match="already holds a sweep"):
        run_sweep(spec, progress=False)


def test_resume_of_a_finished_sweep_reruns_nothing(grid_run: Any) -> None:
    before = pd.read_parquet(grid_run.run_dir / "results" / "trials.parquet")
    outcome = resume_sweep(grid_run.run_dir, progress=False)
    after = outcome.tables.trials
    assert sorted(after["trial_id"]) == sorted(before["trial_id"])
    assert after.set_index("trial_id")["wall_s"].to_dict() == pytest.approx(
        before.set_index("trial_id")["wall_s"].to_dict()
    )


def test_two_worker_ddp_sweep_through_ray_train(ray_session: None, tmp_path: Path) -> None:
    """2 DDP workers under Ray Train: the estimate of B_simple (each worker's per-example
    norms against the all-reduced gradient) is within 10% of the exact value when it is
    stationary (a tiny lr keeps the weights where they start)."""
    spec = small_spec(
        tmp_path,
        name="ddp",
        space={"batch_size": [256], "lr": [1e-5]},
        target={"metric": "loss", "value": 0.0},
        budget={"max_steps": 300},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
        measure={"noise_every": 1},
        eval_every=100,
        stall={"patience_steps": 0},  # the weights must stay where they start
    )
    outcome = run_sweep(spec, progress=False)
    trials = outcome.tables.trials
    assert list(trials["status"]) == [keys.EXHAUSTED], trials[keys.REASON].tolist()
    assert list(trials[keys.NOISE_METHOD]) == ["per_example"]
    last = outcome.tables.curves.iloc[-1]
    assert last[keys.STEP] == 300
    assert last[keys.B_SIMPLE] == pytest.approx(last["true_b_simple"], rel=0.10)
    assert (outcome.run_dir / "train").is_dir()  # Ray Train kept its own state there


@pytest.mark.timeout(480)
def test_pruned_ddp_trials_free_their_workers_for_the_next(
    ray_session: None, tmp_path: Path
) -> None:
    """Front pruning stops 2-worker trials part-way; each must end its Ray Train worker
    group and free its placement group, or the next trial never gets the CPUs (2 here):
    the sweep hung (actor reuse kept the group alive), then trials failed to start
    (Ray Train's cleaner, looking for "the" local Ray, found this one and a second Ray
    on the machine and gave up). A second Ray runs beside it here."""
    with ray_head(num_cpus=1):
        outcome = run_sweep(_pruned_ddp_spec(tmp_path), progress=False)
    trials = outcome.tables.trials
    assert len(trials) == 6
    assert (trials["status"] != keys.ERROR).all(), trials[[keys.LR, keys.REASON]]
    assert (trials["status"] == keys.PRUNED).sum() >= 2, trials[[keys.LR, keys.REASON]]


def test_a_worker_resolves_the_local_ray_to_its_own(ray_session: None) -> None:
    """What Ray's State API does in a worker with no address (Ray Train's placement-group
    cleaner): it finds this Ray, whatever else runs on the machine."""
    import ray
    from ray._private.services import get_ray_address_from_environment

    @ray.remote(num_cpus=0)
    def resolve() -> str:
        return str(get_ray_address_from_environment(None, None))

    with ray_head(num_cpus=1):
        assert ray.get(resolve.remote()) == ray.get_runtime_context().gcs_address


def _pruned_ddp_spec(tmp_path: Path) -> Any:
    return small_spec(
        tmp_path,
        name="ddp-pruned",
        space={"batch_size": [32], "lr": [0.4, 0.2, 0.1, 0.05, 0.025, 0.0125], "momentum": [0.0]},
        search={"algorithm": "grid", "max_concurrent": 1},
        pruning={"kind": "front"},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
    )


def test_results_read_back_without_ray(grid_run: Any) -> None:
    tables = read_tables(grid_run.run_dir)
    rebuilt = build_tables(grid_run.run_dir, tables.summary["target"])
    pd.testing.assert_frame_equal(rebuilt.trials, tables.trials, check_dtype=False)


def test_tables_read_column_wise_are_the_row_by_row_ones(grid_run: Any) -> None:
    """build_tables reads result.json with pyarrow, or the caches of finished trials;
    the reference reads it with json, line by line."""
    run_dir = grid_run.run_dir
    assert all(len(t.results) > 1 for t in read_trials(run_dir))
    # Each trial's reports were cached as it ended (tune_loggers.ReportsCache), and the
    # tables below are built from those caches.
    assert all(t.path and _cached_reports(t.path) for t in read_trials(run_dir))
    built = build_tables(run_dir, {"metric": "loss", "value": 0.16})
    trials, curves = tables_read_row_by_row(run_dir)
    pd.testing.assert_frame_equal(built.trials, trials, check_exact=True)
    pd.testing.assert_frame_equal(built.curves, curves, check_exact=True)


def test_adamw_eps_opt_keeps_the_front_of_an_accuracy_target(
    ray_session: None, tmp_path: Path
) -> None:
    """AdamW under Adam's own law (Li et al. 2024), on a user's classifier whose target is
    an accuracy (higher is better) and whose β1 is 0.9: the grid's per-B best steps for
    less than 60% of its examples."""
    common = {
        "workload": "tests.user_workloads:classifier",
        "workload_args": {"classes": 10, "dim": 4},
        "target": {"metric": "accuracy", "value": 0.8, "mode": "max"},
        "budget": {"max_steps": 600},
        "eval_every": 5,
        "optimizer": "adamw",
        "space": {
            "batch_size": [8, 32, 128, 512],
            "lr": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064],
            "momentum": [0.9],
        },
        "measure": {"noise_every": 0},
    }
    outcomes = {
        kind: run_sweep(
            small_spec(tmp_path, name=kind, pruning={"kind": kind, "grace_steps": 20}, **common),
            progress=False,
        )
        for kind in ("none", "eps_opt")
    }
    full, pruned = (outcomes[k].tables for k in ("none", "eps_opt"))
    best_full = full.front.set_index("batch_size")["steps"]
    best_pruned = pruned.front.set_index("batch_size")["steps"]
    assert list(best_pruned.index) == list(best_full.index) == [8, 32, 128, 512]
    assert (best_pruned <= 1.1 * best_full).all(), (best_full.tolist(), best_pruned.tolist())
    assert pruned.summary["total_examples"] < 0.6 * full.summary["total_examples"]
    reasons = pruned.trials[pruned.trials["status"] == keys.PRUNED][keys.REASON]
    assert reasons.str.contains(r"pruned: lr [\d.]+x below eps_opt\(B=").any()
    assert not reasons.str.contains("lr/(1-m)", regex=False).any()  # β1 is not momentum
    assert pruned.summary["lr_law"].startswith("Adam: ")


def test_a_searched_recipe_lands_in_the_tables(ray_session: None, tmp_path: Path) -> None:
    """AdamW with the schedule kind and weight decay searched, on a workload without an
    eval set: each trial trains its own recipe, the tables say which, and a cosine
    trial's lr decays to the final fraction over its budget."""
    spec = small_spec(
        tmp_path,
        workload="tests.user_workloads:no_eval",
        target={"metric": "loss", "value": 0.0},
        budget={"max_steps": 40},
        optimizer="adamw",
        space={
            "batch_size": [32],
            "lr": [0.05],
            "momentum": [0.9],
            "weight_decay": [0.0, 0.1],
            "schedule": ["constant", "cosine"],
        },
        schedule={"final_lr_fraction": 0.25},
        measure={"noise_every": 0},
    )
    tables = run_sweep(spec, progress=False).tables
    trials = tables.trials
    assert sorted(zip(trials[keys.WEIGHT_DECAY], trials[keys.SCHEDULE], strict=True)) == [
        (0.0, "constant"), (0.0, "cosine"), (0.1, "constant"), (0.1, "cosine"),
    ]  # fmt: skip
    assert (trials[keys.BETA2] == 0.999).all()  # not searched: the stated default
    assert set(trials["status"]) == {keys.EXHAUSTED}
    final_lr = tables.curves.groupby("trial_id")[keys.LR].last()
    by_schedule = trials.set_index("trial_id")[keys.SCHEDULE]
    assert final_lr[by_schedule == "cosine"].tolist() == pytest.approx([0.05 * 0.25] * 2)
    assert final_lr[by_schedule == "constant"].tolist() == pytest.approx([0.05] * 2)
    # Weight decay changed the training: the same schedule ends at another loss.
    loss = trials.set_index([keys.SCHEDULE, keys.WEIGHT_DECAY])["final_loss"]
    assert loss[("constant", 0.0)] != loss[("constant", 0.1)]


def test_accumulated_cosine_sweep_agrees_with_the_whole_batch_one(
    ray_session: None, tmp_path: Path
) -> None:
    """A cosine-schedule grid whose largest batch (256) is accumulated over micro-batches
    of 64: the same statuses and steps to the target per trial as without."""
    common = {
        "space": {"batch_size": [16, 64, 256], "lr": [0.1, 0.5], "momentum": [0.0]},
        "schedule": {"kind": "cosine", "final_lr_fraction": 0.1},
        "measure": {"noise_every": 0},
    }
    plain = run_sweep(small_spec(tmp_path, name="plain", **common), progress=False)
    accumulated = run_sweep(
        small_spec(tmp_path, name="accumulated", resources={"max_micro_batch": 64}, **common),
        progress=False,
    )
    order = [keys.BATCH_SIZE, keys.LR]
    a = plain.tables.trials.sort_values(order).reset_index(drop=True)
    b = accumulated.tables.trials.sort_values(order).reset_index(drop=True)
    assert a["status"].tolist() == b["status"].tolist()
    assert (a["status"] == keys.REACHED).sum() >= 4
    pd.testing.assert_series_equal(a[keys.STEPS_TO_TARGET], b[keys.STEPS_TO_TARGET])
    pd.testing.assert_series_equal(a["final_loss"], b["final_loss"], rtol=1e-4)
    assert (b[keys.SCHEDULE] == "cosine").all()


def test_eps_opt_pruning_spends_less_for_the_same_front(ray_session: None, tmp_path: Path) -> None:
    """The product's claim in small: the same grid, pruned by eps_opt, reaches the same
    per-batch-size best steps for a fraction of the examples."""
    space = {"batch_size": [16, 64, 256], "lr": [0.0625, 0.125, 0.25, 0.5, 1.0, 1.6]}
    outcomes = {
        kind: run_sweep(
            small_spec(
                tmp_path,
                name=kind,
                space=space,
                target={"metric": "loss", "value": 0.14},
                eval_every=5,
                pruning={"kind": kind, "grace_steps": 20},
            ),
            progress=False,
        )
        for kind in ("none", "eps_opt")
    }
    full, pruned = (outcomes[k].tables for k in ("none", "eps_opt"))
    assert len(pruned.trials) == len(full.trials) == 18
    assert pruned.summary["n_pruned"] > 0
    assert pruned.summary["total_examples"] < 0.6 * full.summary["total_examples"]
    best_full = full.front.set_index("batch_size")["steps"]
    best_pruned = pruned.front.set_index("batch_size")["steps"]
    assert list(best_pruned.index) == list(best_full.index)
    assert (best_pruned <= 1.25 * best_full).all(), (best_full.tolist(), best_pruned.tolist())
    reasons = pruned.trials[pruned.trials["status"] == keys.PRUNED][keys.REASON]
    assert reasons.str.startswith("pruned: ").all()


def test_eps_guided_search_with_eps_opt_pruning(ray_session: None, tmp_path: Path) -> None:
    spec = small_spec(
        tmp_path,
        name="guided",
        space={"batch_size": [16, 64, 256], "lr": {"log_uniform": [0.03, 2.0]}},
        target={"metric": "loss", "value": 0.14},
        eval_every=5,
        search={"algorithm": "eps-guided", "num_samples": 12, "max_concurrent": 2, "seed": 0},
        pruning={"kind": "eps_opt", "grace_steps": 20},
    )
    outcome = run_sweep(spec, progress=False)
    trials = outcome.tables.trials
    assert len(trials) == 12 and not outcome.interrupted
    assert set(trials["status"]) <= set(keys.FINAL_STATUSES)
    assert (trials["status"] == keys.REACHED).sum() >= 3


# --- workloads unlike the built-ins, through Ray --------------------------------------------


def test_an_accuracy_target_with_mode_max_over_two_seeds_gives_a_front(
    ray_session: None, tmp_path: Path
) -> None:
    """A user's classifier (dropout, eval set, accuracy rising to its target), each
    configuration run with training seeds 0 and 1: every batch size's front entry is the
    median over the seeds, and the sweep's summary states the target's direction."""
    spec = small_spec(
        tmp_path,
        name="accuracy",
        workload="tests.user_workloads:classifier",
        workload_args={},
        target={"metric": "accuracy", "value": 0.9, "mode": "max"},
        budget={"max_steps": 200},
        space={"batch_size": [16, 64, 256], "lr": [0.3]},
        search={"algorithm": "grid", "max_concurrent": 2, "seeds": 2},
    )
    outcome = run_sweep(spec, progress=False)
    trials, front = outcome.tables.trials, outcome.tables.front
    assert len(trials) == 6 and sorted(trials[keys.SEED].unique()) == [0, 1]
    assert (trials["status"] == keys.REACHED).all(), trials[["status", "reason"]]
    assert len(trials.groupby([keys.BATCH_SIZE, keys.SEED])) == 6
    assert list(front[keys.BATCH_SIZE]) == [16, 64, 256]
    assert (front["seeds"] == 2).all() and (front["steps_lo"] <= front["steps_hi"]).all()
    assert outcome.tables.summary["target"] == {"metric": "accuracy", "value": 0.9, "mode": "max"}
    assert outcome.tables.summary["seeds"] == 2
    # the two seeds trained differently (batches, dropout, initial weights)
    by_seed = trials.set_index([keys.BATCH_SIZE, keys.SEED])["final_loss"]
    assert by_seed.loc[(16, 0)] != by_seed.loc[(16, 1)]
