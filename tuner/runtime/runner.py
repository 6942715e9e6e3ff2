"""run_sweep(spec): the Tuner, its executor, its storage; then the results tables.

Ray must already be running (tuner.cli starts it, or the caller does). The run's place
is one `RunLocation` (tuner.runtime.run_location), resolved once per command: where the
run lives (a directory or a URI) and where this driver writes noisetune's own files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from trainables.execution.executors import multi_worker_trial, single_worker_trial
from trainables.settings import TrialSettings
from tuner import theory
from tuner.config.spec import Spec
from tuner.config.trial_settings import trial_settings
from tuner.results import columns, plots
from tuner.results.tables import (
    ErrorGroup,
    Tables,
    build_tables,
    trial_errors,
    write_tables,
)
from tuner.results.tune_state import (
    TUNE_TERMINATED,
    read_trials,
    restore_problems,
)
from tuner.runtime.earlier_names import accept_earlier_names
from tuner.runtime.progress import ProgressLine
from tuner.runtime.run_location import RunDirError, RunLocation
from tuner.runtime.storage import Location
from tuner.runtime.tracking import storage_problems, tracking_callbacks
from tuner.runtime.tune_loggers import NoTensorBoard, ReportsCache
from tuner.strategy import guided, schedulers, search
from tuner.strategy.candidates import Candidates, draw_candidates, in_grid_search_order
from tuner.strategy.guided import GuidedCandidates
from tuner.strategy.records import SweepState

# A Train driver trial must hold no CPU its workers need: even 0.01 CPU leaves a
# 2-CPU machine unable to place 2 one-CPU workers. Every node has `memory`.
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 1 << 20}
# Checkpoints Tune keeps per single-worker trial (trainables.loop writes one every
# `checkpoint_every` evaluations; a restarted trial needs only the latest). Tune also
# snapshots the experiment state after every this many checkpoints of a trial, which
# keeps what a killed driver leaves behind recent.
CHECKPOINTS_KEPT = 2


@dataclass(frozen=True)
class SweepOutcome:
    location: Location
    tables: Tables
    interrupted: bool
    errors: list[ErrorGroup] = field(default_factory=list)  # paths under `location`

    @property
    def produced_results(self) -> int:
        """Trials that ended with a result of their own or were pruned (not errored, not
        unfinished)."""
        s = self.tables.summary
        return int(s[columns.N_TRIALS] - s[columns.N_ERROR] - s[columns.N_UNFINISHED])

    @property
    def run_dir(self) -> Path:
        """The run directory of a local run (a run at a URI has only `location`)."""
        return self.location.local_path


def run_location(spec: Spec, storage: str | None = None, name: str | None = None) -> RunLocation:
    """`<storage>/<name>` of this spec (the spec's own unless given). StorageError for a
    bad URI."""
    return RunLocation.under(storage or spec.storage, name or spec.name)


def _all_finished(run_dir: Path, expected: int | None) -> bool:
    trials = read_trials(run_dir, with_results=False)
    done = [t for t in trials if t.status == TUNE_TERMINATED]
    return len(done) == len(trials) and (expected is None or len(trials) >= expected)


def sweep_finished(run: RunLocation) -> bool:
    """Whether the sweep at `run` ran every trial its spec asks for to the end without an
    error (no pending, running, paused or errored trial): there is nothing to resume
    (`resume_sweep` runs errored trials again)."""
    expected = search.expected_trials(run.load_spec())
    return run.on_top_level(lambda local: _all_finished(local, expected))


@dataclass(frozen=True)
class ResumeCheck:
    """Whether the sweep at a run can be resumed: why not (`problems`, empty: it can),
    and whether there is nothing left to resume (`finished`, see `sweep_finished`)."""

    problems: list[str]
    finished: bool


def resume_check(run: RunLocation) -> ResumeCheck:
    """The sweep at `run`, checked for `resume` on one copy of its top-level files."""
    expected = search.expected_trials(run.load_spec())

    def check(local: Path) -> ResumeCheck:
        problems = [p.replace(str(local), str(run)) for p in restore_problems(local)]
        return ResumeCheck(problems, not problems and _all_finished(local, expected))

    return run.on_top_level(check)


def make_trainable(settings: TrialSettings) -> Any:
    """The Tune trainable: the loop in the Tune actor, or a Ray Train driver for N > 1."""
    if settings.workers_per_trial > 1:
        return tune.with_resources(
            tune.with_parameters(multi_worker_trial, settings=settings), DRIVER_RESOURCES
        )
    resources = {"CPU": settings.cpus_per_worker, "GPU": settings.gpus_per_worker}
    return tune.with_resources(
        tune.with_parameters(single_worker_trial, settings=settings), resources
    )


def _run_config(
    spec: Spec, location: Location, workdir: Path, verbose: bool, progress: bool
) -> tune.RunConfig:
    # result.json and progress.csv only (and the trackers the spec asks for), and each
    # trial's reports cached as it ends
    trackers = tracking_callbacks(spec.tracking, workdir, spec.name)
    no_tensorboard = [] if spec.tracking.tensorboard else [NoTensorBoard()]
    callbacks: list[tune.Callback] = [*no_tensorboard, *trackers, ReportsCache()]
    if progress and not verbose:
        callbacks.append(ProgressLine())
    return tune.RunConfig(
        name=location.name,
        storage_path=location.parent_uri(),
        verbose=2 if verbose else 0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
    )


@dataclass(frozen=True)
class SearchPlan:
    """How Tune proposes and stops this sweep's trials (Tune's param space stays empty:
    every searcher holds its own space)."""

    search_alg: Any
    scheduler: Any
    num_samples: int


def search_plan(spec: Spec, run_dir: Path) -> SearchPlan:
    """Grid and random: every candidate drawn up front by the space's one sampler
    (`draw_candidates`, each configuration once per training seed), proposed as drawn,
    or, under front or eps_opt pruning or with several seeds, in the order the pruner's state
    prefers (`GuidedCandidates`). eps-guided and Optuna: their own searchers. Each
    searcher behind a ConcurrencyLimiter of `search.max_concurrent`."""
    algorithm, limit = spec.search.algorithm, spec.search.max_concurrent
    law = theory.LAW_OF_OPTIMIZER[spec.optimizer]
    if algorithm in ("grid", "random"):
        configs = draw_candidates(spec)
        if spec.pruning.kind in ("front", "eps_opt") or spec.search.seeds > 1:
            state = SweepState(law=law, target_mode=spec.target.mode)
            ordered = GuidedCandidates(configs, state.front_view(), spec.target.mode, law)
            scheduler = schedulers.make_scheduler(spec, run_dir, state)
            return SearchPlan(
                ConcurrencyLimiter(ordered, max_concurrent=limit), scheduler, len(configs)
            )
        if algorithm == "grid":
            configs = in_grid_search_order(configs, spec)
        plain = Candidates(configs, spec.target.mode)
        return SearchPlan(
            ConcurrencyLimiter(plain, max_concurrent=limit),
            schedulers.make_scheduler(spec, run_dir),
            len(configs),
        )
    if algorithm == "eps-guided":
        state = SweepState(law=law, target_mode=spec.target.mode)
        searcher = ConcurrencyLimiter(
            guided.EpsGuidedSearcher(spec, state.front_view()), max_concurrent=limit
        )
        scheduler = schedulers.make_scheduler(spec, run_dir, state)
        return SearchPlan(searcher, scheduler, spec.search.num_samples)
    return SearchPlan(
        search.search_algorithm(spec),
        schedulers.make_scheduler(spec, run_dir),
        spec.search.num_samples,
    )


def _target(spec: Spec) -> dict[str, Any]:
    return {"metric": spec.target.metric, "value": spec.target.value, "mode": spec.target.mode}


def _finish(tuner: tune.Tuner, spec: Spec, run: RunLocation) -> SweepOutcome:
    tuner.fit()
    return write_results(spec, run)


def write_results(spec: Spec, run: RunLocation) -> SweepOutcome:
    """Build and write the results tables and figures of the sweep at `run` from what
    Tune recorded there (Ray need not run)."""
    run.pull_tune_files()
    run_dir = run.workdir
    tables = build_tables(
        run_dir, _target(spec), optimizer=spec.optimizer, eval_every=spec.eval_every
    )
    errors = trial_errors(run_dir)
    out = write_tables(run_dir, tables)
    plots.write_plots(tables, out / "plots")
    expected = search.expected_trials(spec)
    interrupted = tables.summary[columns.N_UNFINISHED] > 0 or (
        expected is not None and len(tables.trials) < expected
    )
    run.publish_results(out, finished=not interrupted)
    return SweepOutcome(run.location, tables, interrupted, errors)


def run_sweep(
    spec: Spec,
    *,
    storage: str | None = None,
    name: str | None = None,
    run: RunLocation | None = None,
    verbose: bool = False,
    progress: bool = True,
) -> SweepOutcome:
    """Run every trial of `spec` and write `<storage>/<name>/results/`.

    `storage` (default: the spec's) is a directory or a URI; StorageError if it cannot
    be used. A caller that has resolved the run's location already passes it as `run`."""
    run = run or run_location(spec, storage, name)
    run.check()
    problems = storage_problems(spec.tracking, run.is_local)
    if problems:
        raise RunDirError("; ".join(problems))
    if run.holds_sweep():
        raise RunDirError(
            f"{run} already holds a sweep: resume it with "
            f"`noisetune resume {shlex.quote(str(run))}` "
            "or choose another --name"
        )
    run.start(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    settings = trial_settings(spec, run.uri)
    plan = search_plan(spec, run.workdir)
    tuner = tune.Tuner(
        make_trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=plan.search_alg,
            scheduler=plan.scheduler,
            num_samples=plan.num_samples,
            # A multi-worker trial's actor only drives its Train run: nothing to reuse,
            # and a reused one outlives a STOP, its worker group holding the CPUs or
            # GPUs the next trial waits for (the sweep hangs).
            reuse_actors=spec.resources.workers_per_trial == 1,
        ),
        run_config=_run_config(spec, run.location, run.workdir, verbose, progress),
    )
    return _finish(tuner, spec, run)


def load_run_spec(run_dir: Path | str | RunLocation) -> Spec:
    """The spec copy of the run at `run_dir` (a directory, a URI or a RunLocation)."""
    return RunLocation.at(run_dir).load_spec()


def resume_sweep(
    run_dir: Path | str | RunLocation, *, verbose: bool = False, progress: bool = True
) -> SweepOutcome:
    """Continue an interrupted (Ctrl-C) or killed sweep from its last experiment snapshot.

    Trials finished in the snapshot stay as they are; the others run again, from their
    latest checkpoint where they have one (trainables.loop), else from the start; trials
    the searcher had not proposed by then are proposed now. A trial's reports after its
    checkpoint come again and replace the earlier ones (tuner.results.tables.last_run_mask).
    """
    run = RunLocation.at(run_dir)
    run.check()
    spec = run.load_spec()
    problems = resume_check(run).problems
    if problems:
        raise RunDirError("; ".join(problems))
    run.stage_decisions()
    settings = trial_settings(spec, run.uri)
    accept_earlier_names()  # a sweep an earlier version started pickled its own paths
    tuner = tune.Tuner.restore(
        run.uri,
        trainable=make_trainable(settings),
        resume_unfinished=True,
        resume_errored=True,
    )
    return _finish(tuner, spec, run)
