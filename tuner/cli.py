"""`noisetune ...`: parses, calls, prints. The only place that starts Ray.

Exit codes: 0 success, 2 bad input (spec, arguments, paths; one line each, no
traceback, nothing written), 1 anything else (an interrupted sweep included).
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Bad input: one line per problem, exit code 2."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _spec_problems(path: str, problems: list[str]) -> BadInput:
    prefix = f"{path}: "
    return BadInput([p if p.startswith(prefix) else prefix + p for p in problems])


def _load_spec(path: str) -> Any:
    from tuner.config.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        raise _spec_problems(path, exc.problems) from exc


def _before_ray(address: str | None) -> None:
    """Before anything imports Ray: an embedded Ray (no --address) stays on 127.0.0.1
    whatever the environment holds; RAY_ADDRESS never makes `run` or `resume` join a
    cluster (only --address does)."""
    if not address:
        from tuner.runtime.ray_runtime import keep_local_ray_on_loopback

        keep_local_ray_on_loopback()


def _start_ray(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    from tuner.runtime.ray_runtime import init_ray

    if not verbose:
        from tuner.runtime.progress import quiet_trial_errors

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables only with --verbose
        quiet_trial_errors()
    init_ray(address, num_cpus=num_cpus, verbose=verbose)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _print_outcome(outcome: Any) -> None:
    from tabulate import tabulate

    from trainables import keys
    from tuner.results import columns
    from tuner.results.tables import b_crit_text, target_text

    tables = outcome.tables
    trials, front, summary = tables.trials, tables.front, tables.summary
    best = {int(row[keys.BATCH_SIZE]): row for row in front.to_dict("records")}
    rows = []
    for batch_size in sorted(trials[keys.BATCH_SIZE].unique()):
        at_b = trials[trials[keys.BATCH_SIZE] == batch_size]
        row = best.get(int(batch_size))
        rows.append(
            [
                int(batch_size),
                len(at_b),
                int((at_b[columns.STATUS] == keys.REACHED).sum()),
                row[columns.STEPS] if row is not None else "-",
                f"{row[keys.EXAMPLES]:,}" if row is not None else "-",
                _fmt(row[keys.LR]) if row is not None else "-",
                _fmt(row[keys.MOMENTUM]) if row is not None else "-",
            ]
        )
    seeds = summary.get(columns.SEEDS, 1)
    per = " (median over seeds)" if seeds > 1 else ""
    click.echo(f"\nBest steps to {target_text(summary[columns.TARGET])} per batch size{per}:")
    headers = ["batch", "trials", "reached", "steps", "examples", "lr", "momentum"]
    click.echo(tabulate(rows, headers=headers, tablefmt="simple"))
    click.echo(
        f"\nB_crit {b_crit_text(summary)}\nS_min {_fmt(summary.get(columns.S_MIN), 3)}  "
        f"E_min {_fmt(summary.get(columns.E_MIN), 3)}  "
        f"B_simple {_fmt(summary.get(keys.B_SIMPLE), 3)}  "
        f"examples spent {summary[columns.TOTAL_EXAMPLES]:,}"
    )
    notes = [columns.FIT_NOTE, columns.RESOLUTION_NOTE, columns.LR_NOTE]
    notes += [columns.LR_LAW] if summary.get(columns.OPTIMIZER) != "sgd" else []
    for note in notes:
        if summary.get(note):
            click.echo(f"note: {summary[note]}")
    click.echo(f"Results: {outcome.location.join('results')}")
    _print_errors(outcome)
    if outcome.interrupted:
        click.echo(
            f"Sweep interrupted; finished trials are kept. Resume with: "
            f"noisetune resume {shlex.quote(str(outcome.location))}",
            err=True,
        )


def _print_errors(outcome: Any) -> None:
    """Each distinct error of the errored trials once, with where its traceback is."""
    from tuner.results import columns

    if not outcome.errors:
        return
    n_error = sum(group.count for group in outcome.errors)
    n_trials = outcome.tables.summary[columns.N_TRIALS]
    lines = [f"{n_error} of {n_trials} trials raised an error:"]
    for group in outcome.errors:
        lines.append(f"  {group.count} x {group.message}")
        lines.append(f"      traceback: {outcome.location.join(group.traceback)}")
    click.echo("\n".join(lines), err=True)


def _sweep_exit(outcome: Any) -> None:
    """Exit 1 for an interrupted sweep, or one in which no trial produced a result."""
    if outcome.interrupted:
        sys.exit(EXIT_FAILURE)
    if outcome.produced_results == 0:
        click.echo("noisetune: error: no trial produced a result", err=True)
        sys.exit(EXIT_FAILURE)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """A storage location that cannot be used -> exit 2, one line."""
    from tuner.runtime.storage import StorageError

    try:
        yield
    except StorageError as exc:
        raise BadInput([str(exc)]) from exc


@contextlib.contextmanager
def _run_spec_errors(location: Any) -> Iterator[None]:
    """A run directory without a usable spec copy -> exit 2, one line."""
    from tuner.config.spec import SpecError
    from tuner.runtime.run_location import RunDirError

    try:
        yield
    except RunDirError as exc:
        raise BadInput([str(exc)]) from exc
    except SpecError as exc:
        raise BadInput(
            [f"{location}: its spec copy is not valid for this noisetune: {exc.problems[0]}"]
        ) from exc


def _location(run_dir: str) -> Any:
    """RUN_DIR (a directory or a URI) -> tuner.runtime.storage.Location; exit 2 if unusable or,
    for a local path, missing."""
    from tuner.runtime.storage import resolve

    with _storage_errors():
        location = resolve(run_dir)
    if location.is_local and not location.local_path.exists():
        raise BadInput([f"{run_dir}: no such directory"])
    return location


def _run_location(run_dir: str) -> Any:
    """RUN_DIR -> tuner.runtime.run_location.RunLocation, as `_location` checks it."""
    from tuner.runtime.run_location import RunLocation

    return RunLocation(_location(run_dir))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="noisetune")
def cli() -> None:
    """Hyperparameter search over batch size, lr, momentum and warmup, guided by the
    gradient noise scale."""


def _check_trackers(path: str, spec: Any) -> None:
    """Bad input, before Ray starts: a tracker the spec turns on whose package is missing."""
    from tuner.runtime.tracking import missing_packages

    problems = missing_packages(spec.tracking)
    if problems:
        raise _spec_problems(path, problems)


def _first_point(dim: Any) -> Any:
    return dim.points()[0]


def _probe(path: str, spec: Any) -> None:
    """Build the spec's workload once and evaluate it at step 0, as a trial's first
    evaluation does: bad input (exit 2) when the build raises, a metric is named like a
    report key, or the target metric is not reported; a warning when the untrained model
    already meets the target."""
    from trainables.errors import TrialInputError
    from trainables.probe import probe_workload
    from trainables.settings import Hyperparameters, Target
    from tuner.config.trial_settings import trial_settings

    first = {name: _first_point(dim) for name, dim in spec.space.dimensions().items()}
    hp = Hyperparameters.from_config(first, spec.fixed_hyperparameters())
    try:
        probe = probe_workload(trial_settings(spec, ""), hp)
    except TrialInputError as exc:
        raise _spec_problems(path, [f"workload {spec.workload!r}: {exc}"]) from exc
    except Exception as exc:  # the user's code, whatever it raises, in one line
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise _spec_problems(
            path,
            [
                f"workload {spec.workload!r} raised {type(exc).__name__} while being built or "
                f"evaluated at step 0: {message}"
            ],
        ) from exc
    target = Target(spec.target.metric, spec.target.value, spec.target.mode)
    if target.met(probe.target_value):
        hint = " (did you mean target.mode: max?)" if target.mode == "min" else ""
        click.echo(
            f"{path}: warning: the untrained model already meets the target {target} "
            f"({target.metric} {probe.target_value:.4g} at step 0){hint}",
            err=True,
        )


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--no-build",
    is_flag=True,
    help="Check the spec only; do not build the workload and evaluate it at step 0.",
)
def validate(spec: str, no_build: bool) -> None:
    """Check SPEC.yaml, and that its workload builds and reports the target metric; exit
    2 with one line per problem."""
    parsed = _load_spec(spec)
    _check_trackers(spec, parsed)
    if not no_build:
        _probe(spec, parsed)
    click.echo(f"{spec}: ok")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--storage",
    help="Directory or URI (s3://, gs://, file://) the run goes under "
    "(default: the spec's storage).",
)
@click.option("--name", help="Run name (default: the spec's name).")
@click.option(
    "--address",
    help="Ray cluster to join (host:port, or auto) instead of an embedded Ray on 127.0.0.1; "
    "RAY_ADDRESS is not read.",
)
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the embedded Ray.")
@click.option(
    "--no-build",
    is_flag=True,
    help="Start without building the workload once here first (validate's check).",
)
@click.option("-v", "--verbose", is_flag=True, help="Ray Tune's own tables and logs.")
def run(
    spec: str,
    storage: str | None,
    name: str | None,
    address: str | None,
    num_cpus: int | None,
    no_build: bool,
    verbose: bool,
) -> None:
    """Run the sweep SPEC.yaml and write <storage>/<name>/results/. The workload is built
    and evaluated at step 0 once here first (as `validate` does; --no-build skips it), so
    that a workload that cannot run is bad input before Ray starts."""
    _before_ray(address)
    from tuner.config.spec import run_name_problem
    from tuner.runtime.run_location import RunDirError
    from tuner.runtime.runner import run_location, run_sweep, sweep_finished
    from tuner.runtime.tracking import storage_problems

    parsed = _load_spec(spec)
    problem = run_name_problem(name) if name is not None else None
    if problem:
        raise BadInput([f"--name {problem}"])
    _check_trackers(spec, parsed)
    if not no_build:
        _probe(spec, parsed)
    with _storage_errors():  # checked before Ray starts: bad input writes nothing
        run = run_location(parsed, storage, name)
        run.check()  # an unsafe staging directory is bad input too
        problems = storage_problems(parsed.tracking, run.is_local)
        if problems:
            raise _spec_problems(spec, problems)
        if run.holds_sweep():
            where = shlex.quote(str(run))
            with _run_spec_errors(run):
                finished = sweep_finished(run)
            if finished:
                state, advice = "a finished", f"read it with `noisetune report {where}`"
            else:
                state, advice = "an unfinished", f"resume it with `noisetune resume {where}`"
            raise BadInput(
                [f"{run} already holds {state} sweep: {advice} or choose another --name"]
            )
    _start_ray(address, num_cpus, verbose)
    try:
        with _storage_errors():
            outcome = run_sweep(parsed, run=run, verbose=verbose)
    except RunDirError as exc:
        raise BadInput([str(exc)]) from exc
    _print_outcome(outcome)
    _sweep_exit(outcome)


@cli.command()
@click.argument("run_dir")
@click.option(
    "--address",
    help="Ray cluster to join (host:port, or auto) instead of an embedded Ray on 127.0.0.1; "
    "RAY_ADDRESS is not read.",
)
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the embedded Ray.")
@click.option("-v", "--verbose", is_flag=True, help="Ray Tune's own tables and logs.")
def resume(run_dir: str, address: str | None, num_cpus: int | None, verbose: bool) -> None:
    """Continue an interrupted sweep in RUN_DIR (a directory or a URI) without rerunning
    finished trials."""
    _before_ray(address)
    from tuner.runtime.runner import resume_check, resume_sweep, write_results

    run = _run_location(run_dir)
    with _storage_errors():
        run.check()  # an unsafe staging directory is bad input too
        with _run_spec_errors(run):
            run.load_spec()
        check = resume_check(run)
    if check.problems:  # checked before Ray starts: bad input writes nothing
        raise BadInput(check.problems)
    if check.finished:  # no Ray: the tables are (re)written from what Tune recorded
        click.echo(f"{run}: every trial has finished; nothing to resume", err=True)
        with _storage_errors():
            outcome = write_results(run.load_spec(), run)
    else:
        _start_ray(address, num_cpus, verbose)
        with _storage_errors():
            outcome = resume_sweep(run, verbose=verbose)
    _print_outcome(outcome)
    _sweep_exit(outcome)


def _read_tables(location: Any, curves: bool = True) -> Any:
    """The results tables of the run at `location` (the curves only if asked for); a run
    at a URI is read through a local copy of its results/ (figures left out)."""
    from tuner.results.tables import RESULTS_DIR, no_tables_message, read_tables

    if location.is_local:
        try:
            return read_tables(location.local_path, curves=curves)
        except FileNotFoundError as exc:
            raise BadInput([str(exc)]) from exc
    with _storage_errors():
        if not location.exists(f"{RESULTS_DIR}/trials.parquet"):
            raise BadInput([no_tables_message(location)])
        with tempfile.TemporaryDirectory(prefix="noisetune-") as tmp:
            local = Path(tmp) / location.name
            location.download(
                local, lambda rel: rel.startswith(f"{RESULTS_DIR}/") and "/plots/" not in rel
            )
            return read_tables(local, curves=curves)


def _copy_table_file(location: Any, name: str, out: Path) -> None:
    """Copy results/NAME of the run at `location` to `out` (through a temporary file
    beside it, so `out` is never half-written)."""
    from tuner.results.tables import RESULTS_DIR, no_tables_message

    rel = f"{RESULTS_DIR}/{name}"
    missing = BadInput([no_tables_message(location)])
    tmp = out.with_name(f".{out.name}.tmp")
    if location.is_local:
        source = location.local_path / rel
        if not source.exists():
            raise missing
        shutil.copyfile(source, tmp)
    else:
        with _storage_errors():
            if not location.exists(rel):
                raise missing
            tmp.write_bytes(location.read_bytes(rel))
    tmp.replace(out)


EXPORT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".md": "markdown"}


def _export_format(fmt: str | None, out: str | None) -> str:
    """--format, else the one --out's suffix names; bad input when neither says."""
    if fmt is not None:
        return fmt
    if out is not None and Path(out).suffix.lower() in EXPORT_FORMATS:
        return EXPORT_FORMATS[Path(out).suffix.lower()]
    raise BadInput(
        ["give --format csv|parquet|json|markdown (or --out with one of their suffixes)"]
    )


@cli.command()
@click.argument("run_dir")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "json", "markdown"]),
    default=None,
    help="Output format (default: from --out's suffix .csv, .parquet, .json, .md).",
)
@click.option(
    "--table",
    type=click.Choice(["trials", "curves", "front", "summary"]),
    default=None,
    help="Which table (default: trials; summary for markdown).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
def export(run_dir: str, fmt: str | None, table: str | None, out: str | None) -> None:
    """Export a results table of RUN_DIR (a directory or a URI) as csv, parquet, json or
    markdown."""
    from tuner.results.tables import export as export_table

    location = _location(run_dir)
    fmt = _export_format(fmt, out)
    chosen = table or ("summary" if fmt == "markdown" else "trials")
    if fmt == "parquet" and out is None:
        raise BadInput(["--format parquet writes a binary file: give --out PATH"])
    if out is not None and fmt == "parquet" and chosen in ("trials", "curves"):
        _copy_table_file(location, f"{chosen}.parquet", Path(out))  # the table as written
        click.echo(f"wrote {out}", err=True)
        return
    tables = _read_tables(location, curves=chosen == "curves")
    text = export_table(tables, fmt, chosen, Path(out) if out else None)
    if text is not None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {out}", err=True)


@cli.command()
@click.argument("run_dir")
def report(run_dir: str) -> None:
    """Print the summary of RUN_DIR (a directory or a URI) and (re)draw its figures into
    results/plots/."""
    from tuner.results.plots import write_plots
    from tuner.results.tables import RESULTS_DIR, results_dir, summary_markdown

    location = _location(run_dir)
    tables = _read_tables(location)
    if location.is_local:
        figures = write_plots(tables, results_dir(location.local_path) / "plots")
    else:
        with tempfile.TemporaryDirectory(prefix="noisetune-") as tmp, _storage_errors():
            figures = write_plots(tables, Path(tmp))
            location.upload(Path(tmp), f"{RESULTS_DIR}/plots")
    click.echo(summary_markdown(tables))
    names = ", ".join(figure.name for figure in figures)
    where = location.join(RESULTS_DIR, "plots")
    click.echo(f"noisetune: figures written to {where}: {names}", err=True)


def _number_list(option: str, text: str, kind: type) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise BadInput([f"{option} {text!r}: give comma-separated numbers"]) from exc
    if not values:
        raise BadInput([f"{option}: give at least one number"])
    return values


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--batch-size", type=click.IntRange(min=1), required=True, help="Base B.")
@click.option("--lr", type=float, required=True, help="Base lr (constant schedule).")
@click.option(
    "--momentum", type=float, default=None, help="Base momentum (default: spec's, else 0)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option(
    "--at", default="0.1,0.3,0.5,0.7", show_default=True,
    help="Checkpoints, as fractions of the spec's step budget at B.",
)  # fmt: skip
@click.option("--multipliers", default="2,4,8,16", show_default=True, help="k of the k·B branches.")
@click.option(
    "--delta-steps", type=int, default=None,
    help="Δ in base steps (default: the smallest multiple of lcm(k) >= 5% of the budget).",
)  # fmt: skip
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="A branch keeps up if its loss <= (1 + tolerance) x the reference's "
                   "(the base's continuation, best over --lr-factors).")  # fmt: skip
@click.option(
    "--lr-factors", default="0.25,0.5,1", show_default=True,
    help="Each branch (and the base's continuation) runs at lr x law(k) x f for each f; "
    "its loss is the best over f (1: the law's lr alone).",
)  # fmt: skip
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch streams per checkpoint, shared by the base and branches.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False),
              help="Output directory (default: <storage>/<spec name>-branched).")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)  # fmt: skip
def branch(
    spec: str,
    batch_size: int,
    lr: float,
    momentum: float | None,
    seed: int,
    at: str,
    multipliers: str,
    delta_steps: int | None,
    tolerance: float,
    lr_factors: str,
    seeds: int,
    out: str | None,
    device: str,
) -> None:
    """The critical batch size along training by branching (Merrill et al. 2025): from
    checkpoints of a base run at --batch-size/--lr, branches at k·B (lr scaled by the
    optimiser's law, times each of --lr-factors) for the same examples, each repeated on
    --seeds batch streams; B_crit is the largest k·B that keeps up."""
    import dataclasses

    from tabulate import tabulate

    from trainables.errors import BranchInputError
    from trainables.settings import Hyperparameters
    from tuner.runtime.branched import default_delta_steps, run_branched

    parsed = _load_spec(spec)
    fractions = _number_list("--at", at, float)
    ks = _number_list("--multipliers", multipliers, int)
    factors = _number_list("--lr-factors", lr_factors, float)
    problems = [f"--at {f:g} is not in [0, 1)" for f in fractions if not 0 <= f < 1]
    problems += [f"--multipliers {k} is not >= 2" for k in ks if k < 2]
    problems += [f"--lr-factors {f:g} is not > 0" for f in factors if not 0 < f < math.inf]
    if delta_steps is not None and delta_steps < 1:
        problems.append(f"--delta-steps {delta_steps} is not >= 1")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("--device cuda: no CUDA device here")
    if problems:
        raise BadInput(problems)
    _probe(spec, parsed)  # a workload that cannot build or evaluate: bad input, as for run
    fixed = parsed.fixed_hyperparameters()
    config = {"batch_size": batch_size, "lr": lr, "seed": seed, "schedule": "constant"}
    if momentum is not None:
        config["momentum"] = momentum
    base = dataclasses.replace(
        Hyperparameters.from_config(config, fixed), warmup_steps=0, schedule="constant"
    )
    from tuner.config.trial_settings import trial_settings

    budget = trial_settings(parsed, "").max_steps_for(batch_size)
    delta = delta_steps if delta_steps is not None else default_delta_steps(budget, ks)
    checkpoints = sorted({round(f * budget) for f in fractions})
    if out is None:
        if "://" in parsed.storage:
            raise BadInput([f"the spec's storage {parsed.storage} is a URI: give --out DIR"])
        out = str(Path(parsed.storage) / f"{parsed.name}-branched")
    try:
        result = run_branched(
            parsed, base, checkpoints, ks, delta, tolerance, Path(out), device, factors, seeds
        )
    except BranchInputError as exc:
        raise BadInput(exc.problems) from exc
    rows = [
        [
            f"{r['progress']:.3g}",
            r["step"],
            _fmt(float(r["b_crit"])),
            f"[{_fmt(float(r['interval_lo']))}, {_fmt(float(r['interval_hi']))})"
            if not r["capped"]
            else f">= {_fmt(float(r['b_crit']))} (capped)",
        ]
        for r in result.table.to_dict("records")
    ]
    headers = ["progress", "step", "B_crit", "interval"]
    if len(set(factors)) > 1:
        headers.append("best lr factor at k")
        for row, r in zip(rows, result.table.to_dict("records"), strict=True):
            row.append(" ".join(f"{k}:{r[f'lr_factor_{k}']:g}" for k in [1, *sorted(set(ks))]))
    click.echo(
        f"Branched B_crit (base B={batch_size}, lr={lr:g}, delta={delta} steps, "
        f"{seeds} seed(s) per checkpoint):"
    )
    click.echo(tabulate(rows, headers=headers))
    plan = ", ".join(f"{b:g} from {p:.3g}" for p, b in result.schedule)
    click.echo(f"recommended batch size: {plan}")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")


# --- cluster jobs (Ray Jobs) ------------------------------------------------------------------

_ADDRESS_HELP = "Ray dashboard URL, http://HOST:8265 (default: $RAY_ADDRESS)."


@contextlib.contextmanager
def _jobs_errors() -> Iterator[None]:
    """tuner.cluster.jobs errors -> exit 2 (bad input) or 1 (the cluster), one line each."""
    from tuner.cluster.jobs import JobsError, JobsInputError

    try:
        yield
    except JobsInputError as exc:
        raise BadInput([str(exc)]) from exc
    except JobsError as exc:
        raise click.ClickException(str(exc)) from exc


def _token_warning(address: str | None) -> None:
    """Warn once (stderr) when the auth token would travel unencrypted."""
    from tuner.cluster import jobs

    warning = jobs.token_warning(address)
    if warning:
        click.echo(f"noisetune: warning: {warning}", err=True)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--address", help=_ADDRESS_HELP)
@click.option("--storage", help="Where the run goes on the cluster: an absolute path or URI.")
@click.option("--name", help="Run name (default: the spec's name).")
@click.option(
    "--python",
    "python",
    default="python",
    show_default=True,
    help="The head's interpreter that has noisetune installed.",
)
@click.option(
    "--working-dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory shipped with the job (less runs/, .git, virtualenvs); holds the spec.",
)
def submit(
    spec: str,
    address: str | None,
    storage: str | None,
    name: str | None,
    python: str,
    working_dir: str,
) -> None:
    """Submit the sweep SPEC.yaml to a Ray cluster through Ray Jobs; print the job id."""
    from tuner.cluster import jobs
    from tuner.config.spec import SpecError

    with _jobs_errors():
        url = jobs.resolve_address(address)
        try:
            submission, parsed = jobs.prepare(
                spec, storage=storage, name=name, python=python, working_dir=working_dir
            )
        except SpecError as exc:
            raise _spec_problems(spec, exc.problems) from exc
        warning = jobs.storage_warning(parsed, storage)
        _token_warning(url)
        job_id = jobs.send(submission, url)
    if warning:
        click.echo(f"noisetune: warning: {warning}", err=True)
    click.echo(job_id)
    click.echo(f"entrypoint: {submission.entrypoint}", err=True)
    click.echo(f"follow it with: noisetune logs {job_id} --follow --address {url}", err=True)


@cli.command()
@click.argument("job_id")
@click.option("--address", help=_ADDRESS_HELP)
def status(job_id: str, address: str | None) -> None:
    """Print the status of JOB_ID (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from tuner.cluster import jobs

    with _jobs_errors():
        _token_warning(address)
        state, message = jobs.status(address, job_id)
    click.echo(state)
    if message:
        click.echo(message, err=True)


@cli.command()
@click.argument("job_id")
@click.option("--address", help=_ADDRESS_HELP)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
def logs(job_id: str, address: str | None, follow: bool) -> None:
    """Print the driver log of JOB_ID (the sweep's output).

    With --follow, exit 1 unless the job ends SUCCEEDED."""
    from tuner.cluster import jobs

    with _jobs_errors():
        _token_warning(address)
        if not follow:
            click.echo(jobs.logs(address, job_id), nl=False)
            return
        final = jobs.follow_logs(address, job_id, lambda chunk: click.echo(chunk, nl=False))
    click.echo(f"job {job_id}: {final}", err=True)
    if final != "SUCCEEDED":
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.argument("job_id")
@click.option("--address", help=_ADDRESS_HELP)
@click.option("--no-wait", is_flag=True, help="Return once the stop is requested.")
def stop(job_id: str, address: str | None, no_wait: bool) -> None:
    """Stop JOB_ID and wait until it has stopped; print its status."""
    from tuner.cluster import jobs

    with _jobs_errors():
        _token_warning(address)
        click.echo(jobs.stop(address, job_id, wait_s=0 if no_wait else 60))


@cli.command(name="list")
@click.option("--address", help=_ADDRESS_HELP)
def list_(address: str | None) -> None:
    """List the jobs submitted to the cluster, oldest first."""
    from datetime import datetime

    from tabulate import tabulate

    from tuner.cluster import jobs

    with _jobs_errors():
        _token_warning(address)
        rows = jobs.list_jobs(address)

    def when(stamp: float | None) -> str:
        return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"

    table = [[r.job_id, r.status, when(r.start_time), r.entrypoint] for r in rows]
    click.echo(tabulate(table, headers=["job", "status", "submitted", "entrypoint"]))


def _run_guarded(entry: Callable[[], Any], verbose: bool) -> int:
    try:
        entry()
    except BadInput as exc:
        for problem in exc.problems:
            click.echo(f"noisetune: error: {problem}", err=True)
        return EXIT_BAD_INPUT
    except click.UsageError as exc:
        click.echo(f"noisetune: error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"noisetune: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo("noisetune: interrupted", err=True)
        return EXIT_FAILURE
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        message = str(exc).strip().splitlines()
        click.echo(
            f"noisetune: error: {type(exc).__name__}: {message[0] if message else ''}", err=True
        )
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (and exits with it from the shell)."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    code = _run_guarded(
        lambda: cli.main(args=args, prog_name="noisetune", standalone_mode=False), verbose
    )
    if argv is None:
        sys.exit(code)
    return code
