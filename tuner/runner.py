"""run_sweep(spec): the Tuner, its executor, its storage; then the results tables.

Ray must already be running (tuner.cli starts it, or the caller does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from trainables.executors import multi_worker_trial, single_worker_trial
from trainables.settings import TrialSettings
from tuner import guided, plots, results, schedulers, search
from tuner.progress import ProgressLine
from tuner.spec import Spec, load_spec
from tuner.tune_loggers import NoTensorBoard
from tuner.tune_state import is_experiment, restore_problems

SPEC_FILE = "noisetune_spec.yaml"
# A Train driver trial must hold no CPU its workers need: even 0.01 CPU leaves a
# 2-CPU machine unable to place 2 one-CPU workers. Every node has `memory`.
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 1 << 20}
# Checkpoints Tune keeps per single-worker trial (trainables.loop writes one every
# `checkpoint_every` evaluations; a restarted trial needs only the latest). Tune also
# snapshots the experiment state after every this many checkpoints of a trial, which
# keeps what a killed driver leaves behind recent.
CHECKPOINTS_KEPT = 2


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (bad input, exit code 2)."""


@dataclass(frozen=True)
class SweepOutcome:
    run_dir: Path
    tables: results.Tables
    interrupted: bool


def run_dir_for(spec: Spec, storage: str | None = None, name: str | None = None) -> Path:
    return Path(storage or spec.storage).expanduser().resolve() / (name or spec.name)


def trial_settings(spec: Spec, run_dir: Path) -> TrialSettings:
    """The plain data every trial of this sweep needs (the workers never see the spec)."""
    return TrialSettings(
        workload=spec.workload,
        workload_args=dict(spec.workload_args),
        target_metric=spec.target.metric,
        target_value=spec.target.value,
        max_steps=spec.budget.max_steps,
        max_examples=spec.budget.max_examples,
        eval_every=spec.eval_every,
        optimizer=spec.optimizer,
        noise_every=spec.measure.noise_every,
        micro_batches=spec.measure.micro_batches,
        noise_ema=spec.measure.noise_ema,
        curvature_every=spec.measure.curvature_every,
        precision=spec.measure.precision,
        workers=spec.resources.workers_per_trial,
        cpus_per_worker=spec.resources.cpus_per_worker,
        gpus_per_worker=spec.resources.gpus_per_worker,
        max_failures=spec.resources.max_failures,
        seed=spec.search.seed,
        run_dir=str(run_dir),
    )


def make_trainable(settings: TrialSettings) -> Any:
    """The Tune trainable: the loop in the Tune actor, or a Ray Train driver for N > 1."""
    if settings.workers > 1:
        return tune.with_resources(
            tune.with_parameters(multi_worker_trial, settings=settings), DRIVER_RESOURCES
        )
    resources = {"CPU": settings.cpus_per_worker, "GPU": settings.gpus_per_worker}
    return tune.with_resources(
        tune.with_parameters(single_worker_trial, settings=settings), resources
    )


def _run_config(spec: Spec, run_dir: Path, verbose: bool, progress: bool) -> tune.RunConfig:
    callbacks: list[tune.Callback] = [NoTensorBoard()]  # result.json and progress.csv only
    if progress and not verbose:
        callbacks.append(ProgressLine())
    return tune.RunConfig(
        name=run_dir.name,
        storage_path=str(run_dir.parent),
        verbose=2 if verbose else 0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
    )


@dataclass(frozen=True)
class SearchPlan:
    """How Tune proposes and stops this sweep's trials."""

    search_alg: Any
    scheduler: Any
    param_space: dict[str, Any]
    num_samples: int


def search_plan(spec: Spec, run_dir: Path) -> SearchPlan:
    """Under eps_opt pruning, grid and random candidates are proposed by a searcher in
    the order the pruner's shared state prefers (Tune's param space is then empty and
    num_samples counts every trial); otherwise the spec's search algorithm."""
    if spec.pruning.kind == "eps_opt" and spec.search.algorithm in ("grid", "random"):
        state = schedulers.SweepState()
        configs = guided.candidates(spec)
        searcher = ConcurrencyLimiter(
            guided.GuidedCandidates(configs, state), max_concurrent=spec.search.max_concurrent
        )
        scheduler = schedulers.make_scheduler(spec, run_dir, state)
        return SearchPlan(searcher, scheduler, {}, len(configs))
    if spec.search.algorithm == "eps-guided":
        state = schedulers.SweepState()
        searcher = ConcurrencyLimiter(
            guided.EpsGuidedSearcher(spec, state), max_concurrent=spec.search.max_concurrent
        )
        scheduler = schedulers.make_scheduler(spec, run_dir, state)
        return SearchPlan(searcher, scheduler, {}, spec.search.num_samples)
    return SearchPlan(
        search.search_algorithm(spec),
        schedulers.make_scheduler(spec, run_dir),
        search.param_space(spec),
        spec.search.num_samples,
    )


def _target(spec: Spec) -> dict[str, Any]:
    return {"metric": spec.target.metric, "value": spec.target.value}


def _finish(tuner: tune.Tuner, spec: Spec, run_dir: Path) -> SweepOutcome:
    tuner.fit()
    tables = results.build_tables(run_dir, _target(spec))
    out = results.write_tables(run_dir, tables)
    plots.write_plots(tables, out / "plots")
    expected = search.expected_trials(spec)
    interrupted = tables.summary["n_unfinished"] > 0 or (
        expected is not None and len(tables.trials) < expected
    )
    return SweepOutcome(run_dir, tables, interrupted)


def run_sweep(
    spec: Spec,
    *,
    storage: str | None = None,
    name: str | None = None,
    verbose: bool = False,
    progress: bool = True,
) -> SweepOutcome:
    """Run every trial of `spec` and write `<storage>/<name>/results/`."""
    run_dir = run_dir_for(spec, storage, name)
    if is_experiment(run_dir):
        raise RunDirError(
            f"{run_dir} already holds a sweep: resume it with `noisetune resume {run_dir}` "
            "or choose another --name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    settings = trial_settings(spec, run_dir)
    plan = search_plan(spec, run_dir)
    tuner = tune.Tuner(
        make_trainable(settings),
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            search_alg=plan.search_alg,
            scheduler=plan.scheduler,
            num_samples=plan.num_samples,
            reuse_actors=True,
        ),
        run_config=_run_config(spec, run_dir, verbose, progress),
    )
    return _finish(tuner, spec, run_dir)


def load_run_spec(run_dir: Path) -> Spec:
    spec_file = run_dir / SPEC_FILE
    if not spec_file.exists():
        raise RunDirError(f"{run_dir}: not a noisetune run directory (no {SPEC_FILE})")
    return load_spec(spec_file)


def resume_sweep(run_dir: Path, *, verbose: bool = False, progress: bool = True) -> SweepOutcome:
    """Continue an interrupted (Ctrl-C) or killed sweep from its last experiment snapshot.

    Trials finished in the snapshot stay as they are; the others run again, from their
    latest checkpoint where they have one (trainables.loop), else from the start; trials
    the searcher had not proposed by then are proposed now. A trial's reports after its
    checkpoint come again and replace the earlier ones (results.last_run).
    """
    run_dir = run_dir.expanduser().resolve()
    spec = load_run_spec(run_dir)
    problems = restore_problems(run_dir)
    if problems:
        raise RunDirError("; ".join(problems))
    settings = trial_settings(spec, run_dir)
    tuner = tune.Tuner.restore(
        str(run_dir),
        trainable=make_trainable(settings),
        resume_unfinished=True,
        resume_errored=True,
    )
    return _finish(tuner, spec, run_dir)
