"""Sweeps that survive failures: checkpoints, worker crashes, a killed driver.

- In process: a trial restored from one of its checkpoints continues exactly as if it
  had never stopped, and checkpointing changes nothing in what a trial reports.
- A worker that dies mid-trial (`resources.max_failures`) is restarted from the
  trial's last checkpoint, on one worker (Tune) and on two (Ray Train).
- `noisetune run` killed with SIGKILL together with its local Ray, then
  `noisetune resume`: every trial of the sweep exactly once, each with a final status.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from _helpers import run_noisetune, spec_trial_settings

from trainables import keys
from trainables.loop import run_trial
from trainables.parts.checkpointing import load_state, save_state
from trainables.settings import Hyperparameters, TrialSettings
from tuner.config.trial_settings import trial_settings as trial_settings_of
from tuner.results.tables import last_run_mask
from tuner.results.tune_state import TUNE_TERMINATED, read_trials, restore_problems
from tuner.runtime import runner

ROOT = Path(__file__).resolve().parents[1]
LINREG = {"dim": 16, "noise": 0.5, "n_train": 4096}


# --- in process: checkpoints are exact and change nothing ---------------------------------


class MemoryCheckpoints:
    """Checkpoints kept in memory, round-tripped through the checkpoint file format."""

    def __init__(self, tmp_path: Path, start: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.start = start
        self.saved: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []

    def restore(self) -> dict[str, Any] | None:
        return self.start

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        directory = self.tmp_path / f"checkpoint_{len(self.saved)}"
        directory.mkdir()
        save_state(state(), directory)
        self.saved.append(load_state(directory))
        self.reports.append(metrics)


def resumed_reports(
    settings: Any, hp: Any, state: dict[str, Any], directory: Path
) -> list[dict[str, Any]]:
    """Every report of the trial continued from checkpoint `state` (a copy), step order."""
    directory.mkdir()
    reports: list[dict[str, Any]] = []
    resumed = MemoryCheckpoints(directory, start=copy.deepcopy(state))
    run_trial(settings, hp, reports.append, checkpoints=resumed)
    return sorted(reports + resumed.reports, key=lambda r: r[keys.STEP])


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its wall time, nan replaced so that equal reports compare equal."""
    return {
        k: "nan" if isinstance(v, float) and math.isnan(v) else v
        for k, v in report.items()
        if k != keys.WALL_S
    }


def trial_settings(**overrides: Any) -> TrialSettings:
    base: dict[str, Any] = {
        "workload": "linear_regression",
        "workload_args": LINREG,
        "target_value": 0.16,
        "max_steps": 300,
        "eval_every": 10,
        "noise_every": 2,
        "curvature_every": 5,
        "checkpoint_every": 3,
    }
    return spec_trial_settings(**{**base, **overrides})


HP = Hyperparameters(batch_size=32, lr=0.02, momentum=0.5, warmup_steps=20)


def test_checkpointing_changes_no_report(tmp_path: Path) -> None:
    plain: list[dict[str, Any]] = []
    run_trial(trial_settings(checkpoint_every=0), HP, plain.append)
    reports: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(trial_settings(), HP, reports.append, checkpoints=store)
    assert store.reports  # some reports came with a checkpoint
    merged = sorted(reports + store.reports, key=lambda r: r[keys.STEP])
    assert [comparable(r) for r in merged] == [comparable(r) for r in plain]


@pytest.mark.parametrize(
    ("optimizer", "precision", "lr"), [("sgd", "fp32", 0.02), ("adamw", "bf16", 0.002)]
)
def test_a_trial_restored_from_a_checkpoint_continues_as_if_never_stopped(
    tmp_path: Path, optimizer: str, precision: str, lr: float
) -> None:
    s = trial_settings(optimizer=optimizer, precision=precision)
    hp = replace(HP, lr=lr)
    first: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(s, hp, first.append, checkpoints=store)
    uninterrupted = sorted(first + store.reports, key=lambda r: r[keys.STEP])
    assert [r[keys.STEP] for r in store.reports] == [30, 60, 90, 120, 150, 180, 210, 240, 270]
    assert uninterrupted[-1][keys.TRIAL_STATUS] == keys.EXHAUSTED  # ran the whole budget

    start = store.saved[3]  # the checkpoint at step 120
    assert start[keys.STEP] == 120
    again: list[dict[str, Any]] = []
    resumed = MemoryCheckpoints(tmp_path / "again", start=copy.deepcopy(start))
    (tmp_path / "again").mkdir()
    last = run_trial(s, hp, again.append, checkpoints=resumed)
    continued = sorted(again + resumed.reports, key=lambda r: r[keys.STEP])
    assert continued[0][keys.STEP] == 130  # nothing before the checkpoint is reported again
    assert [comparable(r) for r in continued] == [
        comparable(r) for r in uninterrupted if r[keys.STEP] > 120
    ]
    assert last[keys.WALL_S] > start[keys.WALL_S]  # wall time before the restart counts


@pytest.mark.parametrize(
    ("workload", "fields"),
    [("streaming", {}), ("computed_items", {"loader_workers": 2, "prefetch_factor": 3})],
)
def test_a_trial_on_a_stream_or_a_loader_restarts_with_the_batches_it_would_have_seen(
    tmp_path: Path, workload: str, fields: dict[str, Any]
) -> None:
    """The stream's position, or the loader's generator before its prefetched batches,
    is what the checkpoint keeps."""
    s = trial_settings(
        workload=f"tests.user_workloads:{workload}",
        workload_args={},
        target_value=0.0,
        max_steps=120,
        curvature_every=0,
        **fields,
    )
    hp = replace(HP, warmup_steps=0)
    first: list[dict[str, Any]] = []
    store = MemoryCheckpoints(tmp_path)
    run_trial(s, hp, first.append, checkpoints=store)
    uninterrupted = sorted(first + store.reports, key=lambda r: r[keys.STEP])
    start = store.saved[1]  # step 60
    assert start[keys.STEP] == 60
    again: list[dict[str, Any]] = []
    resumed = MemoryCheckpoints(tmp_path / "again", start=copy.deepcopy(start))
    (tmp_path / "again").mkdir()
    run_trial(s, hp, again.append, checkpoints=resumed)
    continued = sorted(again + resumed.reports, key=lambda r: r[keys.STEP])
    assert [comparable(r) for r in continued] == [
        comparable(r) for r in uninterrupted if r[keys.STEP] > 60
    ]


def test_last_run_keeps_each_step_of_the_run_that_finished() -> None:
    def kept(*steps: int) -> list[tuple[int, int]]:
        mask = last_run_mask(np.array(steps, dtype=float))
        return [(s, i) for i, s in enumerate(steps) if mask[i]]

    # A restart from a checkpoint at 20 that stops earlier than the first run got.
    assert kept(0, 10, 20, 30, 40, 30, 40) == [(0, 0), (10, 1), (20, 2), (30, 5), (40, 6)]
    assert kept(0, 10, 20, 30, 0, 10) == [(0, 4), (10, 5)]  # a restart from scratch
    assert kept(0, 10, 10, 10) == [(0, 0), (10, 3)]  # the same step again


def test_a_line_cut_short_by_a_killed_driver_is_skipped(tmp_path: Path) -> None:
    """A resumed sweep appends to a result.json whose last line a kill cut short."""
    trial_dir = tmp_path / "trial_a"
    trial_dir.mkdir()
    state = {"trial_data": [[json.dumps(
        {"trial_id": "a", "status": "RUNNING", "config": {}, "relative_logdir": "trial_a"}
    ), "{}"]]}  # fmt: skip
    (tmp_path / "experiment_state-x.json").write_text(json.dumps(state))
    lines = [json.dumps({keys.STEP: s}) for s in (0, 10, 20)]
    cut = json.dumps({keys.STEP: 30})[:7]
    text = "\n".join([*lines, cut + json.dumps({keys.STEP: 30}), json.dumps({keys.STEP: 40})])
    (trial_dir / "result.json").write_text(text + "\n")
    (trial,) = read_trials(tmp_path)
    assert [r[keys.STEP] for r in trial.results] == [0, 10, 20, 40]
    assert restore_problems(tmp_path) == []


def test_an_experiment_tune_could_not_restore_is_refused(tmp_path: Path) -> None:
    (tmp_path / "experiment_state-x.json").write_text('{"trial_data": [[')
    (tmp_path / "search_gen_state-x.json").write_text("{}")
    problems = restore_problems(tmp_path)
    assert len(problems) == 2
    assert "unreadable Tune experiment state" in problems[0]
    assert "searcher saved no state" in problems[1]
    (tmp_path / "searcher-state-x.pkl").write_bytes(b"")
    assert len(restore_problems(tmp_path)) == 1


# --- real sweeps through the CLI ----------------------------------------------------------


def cli_env(*paths: Path) -> dict[str, str]:
    """The environment of a `noisetune` subprocess whose Ray workers import from `paths`."""
    pythonpath = os.pathsep.join([*(str(p) for p in paths), str(ROOT)])
    return {**os.environ, "PYTHONPATH": pythonpath}


def noisetune(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_noisetune(*args, cwd=cwd, env=cli_env(cwd), timeout=timeout)


def write_spec(path: Path, **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "ft",
        "workload": "linear_regression",
        "workload_args": LINREG,
        "target": {"metric": "loss", "value": 0.16},
        "budget": {"max_steps": 600},
        "eval_every": 10,
        "space": {"batch_size": [16], "lr": [0.1]},
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "storage": str(path.parent / "runs"),
    }
    spec.update(overrides)
    path.write_text(yaml.safe_dump(spec))
    return path


def check_tables(run_dir: Path, eval_every: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every trial final and once; every curve one report per evaluation, up to its end."""
    trials = pd.read_parquet(run_dir / "results" / "trials.parquet")
    curves = pd.read_parquet(run_dir / "results" / "curves.parquet")
    assert trials["trial_id"].is_unique
    assert set(trials["status"]) <= set(keys.FINAL_STATUSES), trials[["trial_id", "status"]]
    assert not curves.duplicated(["trial_id", keys.STEP]).any()
    for row in trials.itertuples():
        steps = curves[curves["trial_id"] == row.trial_id][keys.STEP].tolist()
        assert steps == list(range(0, int(row.steps) + 1, eval_every)), row.trial_id
        if row.status == keys.REACHED:
            assert row.steps_to_target == row.steps
            assert row.examples_to_target == row.steps * row.batch_size
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["n_unfinished"] == 0 and summary["n_trials"] == len(trials)
    return trials, curves


def runs_of(run_dir: Path) -> dict[str, list[list[int]]]:
    """Per trial, the steps each of its runs reported, as Tune recorded them: a trial
    that Tune restarts counts `iterations_since_restore` from 1 again."""
    runs: dict[str, list[list[int]]] = {}
    for trial in read_trials(run_dir):
        trial_runs = runs.setdefault(trial.trial_id, [])
        for result in trial.results:
            if not trial_runs or result["iterations_since_restore"] == 1:
                trial_runs.append([])
            trial_runs[-1].append(result[keys.STEP])
    return runs


# A workload whose worker process dies once, at the evaluation of a given step: the
# first worker (of rank `crash_rank`) to get there creates the marker file and exits.
CRASHING_WORKLOAD = """
import os

import torch.distributed as dist

from trainables.workloads.linear_regression import build as build_linear_regression


def build(args):
    args = dict(args)
    marker, crash_at = args.pop("crash_marker"), args.pop("crash_at_evaluation")
    crash_rank = args.pop("crash_rank", 0)
    workload = build_linear_regression(args)
    metrics, evaluations = workload.metrics, [0]

    def crashing_metrics(model):
        evaluations[0] += 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        if evaluations[0] == crash_at and rank == crash_rank:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # crashed once already
            else:
                os._exit(1)
        return metrics(model)

    workload.metrics = crashing_metrics
    return workload
"""


def crash_sweep(
    tmp_path: Path, trials: int, resources: dict[str, Any], **sections: Any
) -> tuple[Path, pd.DataFrame, dict[str, list[list[int]]]]:
    """`trials` trials of one configuration at once (the spec's other `sections` as
    given); the worker of the first to evaluate step 120 (its 13th evaluation) dies
    there, once. Checkpoints every 5 evaluations. Returns the run directory, the trials
    table and the steps of each trial's runs."""
    (tmp_path / "nt_crashing_workload.py").write_text(CRASHING_WORKLOAD)
    marker = tmp_path / "crashed"
    spec = write_spec(
        tmp_path / "spec.yaml",
        workload="nt_crashing_workload:build",
        workload_args={**LINREG, "crash_marker": str(marker), "crash_at_evaluation": 13},
        search={"algorithm": "grid", "num_samples": trials, "max_concurrent": trials},
        resources={**resources, "max_failures": 1},
        **sections,
    )
    run = noisetune("run", str(spec), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert marker.exists()  # a worker did die
    run_dir = tmp_path / "runs" / "ft"
    table, _ = check_tables(run_dir, eval_every=10)
    assert len(table) == trials
    assert (table["status"] == keys.REACHED).all() and (table["steps"] > 120).all()
    runs = runs_of(run_dir)
    for trial_runs in runs.values():  # none started over from step 0
        assert [step for run in trial_runs for step in run].count(0) == 1, trial_runs
    return run_dir, table, runs


@pytest.mark.ray
def test_a_dead_single_worker_trial_restarts_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tune restarts the trial; it continues from its checkpoint at step 100 and ends
    exactly as the same training run in this process without a crash."""
    run_dir, trials, runs = crash_sweep(tmp_path, 1, {"workers_per_trial": 1})
    restarted = {trial_id: r for trial_id, r in runs.items() if len(r) > 1}
    assert len(restarted) == 1, runs  # the trial whose worker died, restarted once
    ((before, after),) = restarted.values()
    # It died at 120 before reporting it (the report at 110 may have been in flight and
    # lost with the worker) and continued from its checkpoint at 100.
    assert before in (list(range(0, 101, 10)), list(range(0, 111, 10)))
    assert after[0] == 110
    monkeypatch.syspath_prepend(str(tmp_path))  # the spec names the crashing workload
    settings = trial_settings_of(runner.load_run_spec(run_dir), run_dir)
    settings = replace(settings, workload="linear_regression", workload_args=LINREG)
    uninterrupted = run_trial(settings, Hyperparameters(16, 0.1, 0.0, 0), lambda _: None)
    (row,) = (r for _, r in trials.iterrows())
    assert row["status"] == uninterrupted[keys.TRIAL_STATUS]
    assert row["steps"] == uninterrupted[keys.STEP]
    assert row["final_loss"] == uninterrupted[keys.LOSS]
    assert row[keys.B_SIMPLE] == uninterrupted[keys.B_SIMPLE]


@pytest.mark.ray
def test_a_dead_ray_train_worker_restarts_the_trial_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Train restarts both workers of a 2-worker trial from the checkpoint at step
    100 (rank 0 died at 120); the trial ends as the same training on one worker does.
    A report still in flight when the worker died is lost, so the reports may show no
    repeated step; they never start over from step 0."""
    run_dir, trials, runs = crash_sweep(tmp_path, 1, {"workers_per_trial": 2, "cpus_per_worker": 1})
    assert [len(r) for r in runs.values()] == [1]  # Train restarted the workers, not Tune
    checkpoints = sorted((run_dir / "train").glob("train-*/checkpoint_*"))
    assert checkpoints  # Train's own, rank 0's
    monkeypatch.syspath_prepend(str(tmp_path))  # the spec names the crashing workload
    spec = runner.load_run_spec(run_dir)
    settings = replace(trial_settings_of(spec, run_dir), workload="linear_regression")
    # Per example, each worker's mean over its examples averaged over the workers is one
    # worker's mean over them all: the same B_simple.
    settings = replace(settings, workload_args=LINREG, workers_per_trial=1)
    one_worker = run_trial(settings, Hyperparameters(16, 0.1, 0.0, 0), lambda _: None)
    (row,) = (r for _, r in trials.iterrows())
    assert row["status"] == one_worker[keys.TRIAL_STATUS]
    assert row["steps"] == one_worker[keys.STEP]
    assert row["final_loss"] == pytest.approx(one_worker[keys.LOSS], rel=1e-5)
    assert row[keys.B_SIMPLE] == pytest.approx(one_worker[keys.B_SIMPLE], rel=1e-4)


# --- SIGKILL of the driver and its Ray, then resume ---------------------------------------


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every visible process: pid -> (parent pid, state, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        found[int(entry.name)] = (int(stat[1]), stat[0], cmdline)
    return found


def driver_and_its_ray(driver: int) -> tuple[set[int], set[str]]:
    """The driver, its descendants, and every process whose command line names the
    private Ray temp dir (`noisetune-ray-*`) one of them was started with."""
    processes = _processes()
    tree, grew = {driver}, True
    while grew:
        children = {pid for pid, (ppid, _, _) in processes.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    temp_dirs = {
        found
        for pid in tree
        if pid in processes
        for found in re.findall(r"[^\s=]*noisetune-ray-[A-Za-z0-9_]+", processes[pid][2])
    }
    named = {pid for pid, (_, _, cmd) in processes.items() if any(d in cmd for d in temp_dirs)}
    return tree | named, temp_dirs


def kill_and_wait(pids: set[int], timeout: float = 20) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes = _processes()
        alive = {p for p in pids if p in processes and processes[p][1] != "Z"}
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"still alive after SIGKILL: {sorted(alive)}")


def finished_and_checkpointed(run_dir: Path) -> tuple[int, int]:
    """(trials whose last report has a final status, unfinished trials with a checkpoint),
    from the files a killed driver would leave behind."""
    finished = checkpointed = 0
    for result_file in run_dir.glob("*/result.json"):
        lines = [line for line in result_file.read_text().splitlines() if line.strip()]
        try:
            status = json.loads(lines[-1])[keys.TRIAL_STATUS] if lines else keys.RUNNING
        except (json.JSONDecodeError, KeyError):
            status = keys.RUNNING
        if status != keys.RUNNING:
            finished += 1
        elif any(result_file.parent.glob("checkpoint_*")):
            checkpointed += 1
    return finished, checkpointed


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_driver_and_its_ray_then_resume_runs_every_trial_once(
    tmp_path: Path,
) -> None:
    """12 trials, 2 at a time. The quick ones (lr 0.25, 0.5) come first; the run is
    killed once at least 3 trials have finished and a running one has a checkpoint."""
    lrs = [0.25, 0.5, 0.02, 0.05, 0.1, 8.0]
    spec = write_spec(
        tmp_path / "spec.yaml",
        name="killed",
        space={"batch_size": [16, 64], "lr": lrs},
    )
    run_dir = tmp_path / "runs" / "killed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(spec)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(tmp_path),
        start_new_session=True,  # its own process group, which the test kills
    )
    temp_dirs: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and driver.poll() is None:
            finished, checkpointed = finished_and_checkpointed(run_dir)
            if finished >= 3 and checkpointed >= 1:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "no trial finished in time"
        pids, temp_dirs = driver_and_its_ray(driver.pid)
        assert len(temp_dirs) == 1, temp_dirs  # its own embedded Ray, found
        os.killpg(driver.pid, signal.SIGKILL)
        kill_and_wait(pids)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL

    before = {t.trial_id: t for t in read_trials(run_dir)}
    done_before = {
        trial_id: t.results[-1][keys.WALL_S]
        for trial_id, t in before.items()
        if t.status == TUNE_TERMINATED
    }
    assert 3 <= len(done_before) < 12  # something finished, something left to resume

    resumed = noisetune("resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials, _ = check_tables(run_dir, eval_every=10)
    assert len(trials) == 12
    configs = sorted(zip(trials[keys.BATCH_SIZE], trials[keys.LR], strict=True))
    assert configs == sorted((b, lr) for b in (16, 64) for lr in lrs)
    # Trials finished before the kill were not run again.
    after = trials.set_index("trial_id")[keys.WALL_S]
    assert {t: after[t] for t in done_before} == pytest.approx(done_before)
    for temp_dir in temp_dirs:  # what the killed Ray left behind
        shutil.rmtree(temp_dir, ignore_errors=True)
