"""Results tables at scale: a synthetic Ray Tune 2.60 run directory of N trials × R reports.

    python bench/export_scale.py                          # 10k trials × 1k reports
    python bench/export_scale.py --sizes 100x1000,1000x1000 --against HEAD~1
    python bench/export_scale.py --only scheduler         # eps_opt decision cost only

1. Synthesize (kept under --data-dir, reused by later runs) a run directory the way Tune
   2.60 writes one, copied from real runs: `experiment_state-<date>.json` (each trial's
   state as an indent-2 JSON string, its runtime metadata with the last result, the metric
   analysis and the last-5/10 windows, the runner data), and per trial directory
   `params.json` and `result.json` (one JSON line per report: our keys, a linear_regression
   workload's seven metrics, Tune's own keys, NaN/Infinity literals, a checkpoint name on
   every fifth report), plus `noisetune_spec.yaml` and `results/decisions.jsonl`. Trials end
   reached, exhausted, diverged or pruned; one in a hundred restarted from its last
   checkpoint (its reports after the checkpoint come twice). Not written: progress.csv,
   params.pkl and TensorBoard files, which nothing here reads.
   Then, as a sweep's driver does when each trial ends (tuner.runtime.tune_loggers.ReportsCache),
   each trial's reports are cached beside its result.json
   (`tuner.results.tables.cache_trial_reports`, timed per trial, kept with the run
   directory); `--uncached` removes those caches, so that `build` parses every
   result.json as it did before they existed.
2. Measure, each step in a fresh Python process (wall time; peak RSS from wait4):
   `build` = tuner.results.tables.build_tables, `write` = write_tables (the same process, after
   build, timed apart); `export` = `python -m tuner export RUN_DIR --format F --table T
   --out FILE` (a user's command: imports, reading results/, writing) for the trials and
   curves tables as csv and parquet.
3. The eps_opt scheduler's decision cost per result against the number of trials.

With `--against REF` the build/write/export steps run for REF (exported with `git
archive`) and for this checkout, alternating, `--repeats` times; the table gives both and
the per-repeat ratio. Sizes above `--max-old-rows` reports are skipped for REF (the
row-by-row reader needs about 2.5 kB per report), and the curves are not exported as CSV
above `--max-csv-rows` (minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EVAL_EVERY = 5
BATCH_SIZES = [16, 64, 256, 1024]
LRS = [0.01 * 2 ** (i / 4) for i in range(32)]
TARGET = {"metric": "loss", "value": 0.529}
EXPERIMENT = "scale"
TRAINABLE = "single_worker_trial"
SESSION = "2026-11-22_12-00-00"
PIECES = ("build", "write")
TRUE_METRICS = (
    "true_g2", "true_trace_sigma", "true_b_simple", "true_g_h_g", "true_trace_h_sigma",
    "true_b_noise", "true_eps_max",
)  # fmt: skip
EXPORTS = [(t, f) for t in ("trials", "curves") for f in ("csv", "parquet")]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model  # noqa: E402

# --- synthesis ---------------------------------------------------------------------------


def _blob(rng: np.random.Generator, n_bytes: int) -> dict[str, str]:
    """An opaque cloudpickle fallback as Tune writes it (never unpickled here)."""
    return {"_type": "CLOUDPICKLE_FALLBACK", "value": "8005" + rng.bytes(n_bytes).hex()}


def _token(value: Any) -> str:
    """One JSON value as json.dumps writes it (NaN, Infinity, repr of floats)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    return json.dumps(value)


def trial_plan(index: int, n_reports: int, seed: int) -> dict[str, Any]:
    """Who trial `index` is and how it ends."""
    rng = np.random.default_rng([seed, index])
    batch_size = BATCH_SIZES[index % len(BATCH_SIZES)]
    lr = LRS[(index // len(BATCH_SIZES)) % len(LRS)]
    outcome = ["reached", "exhausted", "diverged", "pruned"][int(rng.integers(4))]
    return {
        "index": index,
        "trial_id": f"a1b2c_{index:05d}",
        "config": {"batch_size": batch_size, "lr": lr, "momentum": 0.0, "warmup_steps": 0},
        "outcome": outcome,
        "restarted": index % 100 == 7 and n_reports > 20,
        "curvature": bool(rng.integers(2)),
    }


def trial_dirname(plan: dict[str, Any]) -> str:
    c = plan["config"]
    tag = (
        f"{plan['index']}_batch_size={c['batch_size']},lr={c['lr']:.4f},"
        f"momentum={c['momentum']:.4f},warmup_steps={c['warmup_steps']}"
    )
    return f"{TRAINABLE}_{plan['trial_id']}_{tag}_{SESSION}"


def report_values(plan: dict[str, Any], n_reports: int, seed: int) -> dict[str, np.ndarray]:
    """Every numeric column of the trial's reports, vectorised."""
    rng = np.random.default_rng([seed, plan["index"], 1])
    k = np.arange(n_reports)
    step = k * EVAL_EVERY
    b = plan["config"]["batch_size"]
    loss = 0.5 + 0.95 * np.exp(-step / (200.0 + 5 * rng.random())) + 0.01 * rng.random(n_reports)
    noise = 1.0 + 0.1 * rng.standard_normal((9, n_reports))
    g2 = 0.2 * np.exp(-step / 2000.0) * noise[0]
    trace_sigma = 2.0 * noise[1]
    values = {
        "step": step,
        "examples": step * b,
        "loss": loss,
        "b_simple": trace_sigma / g2,
        "g2": g2,
        "trace_sigma": trace_sigma,
        "true_g2": 0.2 * np.exp(-step / 2000.0),
        "true_trace_sigma": 2.0 * noise[2],
        "true_g_h_g": 0.03 * noise[3],
        "true_trace_h_sigma": 1.4 * noise[4],
        "wall_s": 0.002 + step * 1e-3 * noise[5],
        "time_this_iter_s": 0.003 * noise[6],
        "time_total_s": 1.1 + step * 1e-3,
    }
    values["true_b_simple"] = values["true_trace_sigma"] / values["true_g2"]
    values["true_b_noise"] = values["true_trace_h_sigma"] / values["true_g_h_g"]
    values["true_eps_max"] = values["true_g2"] / values["true_g_h_g"]
    if plan["curvature"]:
        values["g_h_g"] = 0.03 * noise[7]
        values["trace_h_sigma"] = 1.4 * noise[8]
        values["b_noise"] = values["trace_h_sigma"] / values["g_h_g"]
        values["eps_max"] = values["g2"] / values["g_h_g"]
    else:
        for name in ("g_h_g", "trace_h_sigma", "b_noise", "eps_max"):
            values[name] = np.full(n_reports, math.nan)
    for name in ("b_simple", "g2", "trace_sigma", "b_noise", "g_h_g", "trace_h_sigma", "eps_max"):
        values[name][0] = math.nan  # nothing measured before the first step
    if plan["index"] % 50 == 3:
        values["true_b_simple"][-1] = math.inf  # x/0 of the exact statistics
    return values


SPECIAL_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _tokens(array: np.ndarray) -> list[str]:
    """json.dumps of every value (repr of floats, NaN/Infinity literals), vectorised."""
    tokens = list(map(repr, array.tolist()))
    if array.dtype.kind == "f":
        tokens = [SPECIAL_FLOATS.get(t, t) for t in tokens]
    return tokens


def report_lines(plan: dict[str, Any], n_reports: int, seed: int) -> tuple[list[str], dict]:
    """The trial's result.json lines and its last report (as a dict)."""
    values = report_values(plan, n_reports, seed)
    status = {
        "reached": "reached", "exhausted": "exhausted", "diverged": "diverged",
        "pruned": "running",
    }[plan["outcome"]]  # fmt: skip
    last_step = int(values["step"][-1])
    b = plan["config"]["batch_size"]
    reasons = {
        "reached": f"reached loss {values['loss'][-1]:.4g} <= 0.529 at step {last_step}",
        "exhausted": f"exhausted: {last_step} steps without loss <= 0.529",
        "diverged": f"diverged: non-finite loss at step {last_step}",
        "running": "",
    }
    if status == "diverged":
        values["loss"][-1] = math.nan
    columns = {name: _tokens(array) for name, array in values.items()}
    # Tune's key order; %s slots for what changes from report to report.
    head = (
        '{"step": %s, "examples": %s, "loss": %s, "lr": '
        + _token(plan["config"]["lr"])
        + ', "b_simple": %s, "g2": %s, "trace_sigma": %s, "b_noise": %s, "g_h_g": %s, '
        '"trace_h_sigma": %s, "eps_max": %s, "target_value": %s, "trial_status": %s, '
        '"steps_to_target": %s, "examples_to_target": %s, "reason": %s, "wall_s": %s, '
        + ", ".join(f'"{name}": %s' for name in TRUE_METRICS)
        + ', "timestamp": %s, "checkpoint_dir_name": %s, "done": %s, '
        '"training_iteration": %s, "trial_id": '
        + json.dumps(plan["trial_id"])
        + ', "date": "2026-11-22_12-00-00", "time_this_iter_s": %s, "time_total_s": %s, '
        '"pid": 11024, "hostname": "vm", "node_ip": "127.0.0.1", "config": '
        + json.dumps(plan["config"])
        + ', "time_since_restore": %s, "iterations_since_restore": %s}\n'
    )
    order = list(range(n_reports))
    if plan["restarted"]:  # reports again from the checkpoint before the last 7
        restart = ((n_reports - 8) // 5) * 5
        order = order[: n_reports - 3] + list(range(restart + 1, n_reports))
    c = columns
    true = [c[name] for name in TRUE_METRICS]
    lines = []
    final_position = len(order) - 1
    for position, k in enumerate(order):
        final = position == final_position
        st = status if final else "running"
        reached = final and st == "reached"
        step = int(values["step"][k])
        iteration = str(position + 1)
        lines.append(
            head
            % (
                c["step"][k],
                c["examples"][k],
                c["loss"][k],
                c["b_simple"][k],
                c["g2"][k],
                c["trace_sigma"][k],
                c["b_noise"][k],
                c["g_h_g"][k],
                c["trace_h_sigma"][k],
                c["eps_max"][k],
                c["loss"][k],
                f'"{st}"',
                str(step) if reached else "NaN",
                str(step * b) if reached else "NaN",
                json.dumps(reasons[st]) if final else '""',
                c["wall_s"][k],
                *[t[k] for t in true],
                1795350000 + step,
                f'"checkpoint_{k // 5:06d}"' if k % 5 == 4 and not final else "null",
                "true" if final else "false",
                iteration,
                c["time_this_iter_s"][k],
                c["time_total_s"][k],
                c["time_total_s"][k],
                iteration,
            )
        )
    return lines, json.loads(lines[-1])


def trial_state(plan: dict[str, Any], last: dict[str, Any], seed: int) -> list[str]:
    """[trial JSON, runtime JSON] of the experiment state, as Tune 2.60 writes them."""
    rng = np.random.default_rng([seed, plan["index"], 2])
    config = plan["config"]
    tag = trial_dirname(plan).split(f"{plan['trial_id']}_", 1)[1].rsplit(f"_{SESSION}", 1)[0]
    state = {
        "stub": False,
        "trainable_name": TRAINABLE,
        "trial_id": plan["trial_id"],
        "storage": _blob(rng, 700),
        "config": config,
        "_Trial__unresolved_config": config,
        "evaluated_params": config,
        "experiment_tag": tag,
        "stopping_criterion": {},
        "_setup_default_resource": True,
        "_default_placement_group_factory": "80054e2e",
        "placement_group_factory": "8005" + rng.bytes(180).hex(),
        "log_to_file": [None, None],
        "max_failures": 0,
        "_default_result_or_future": None,
        "export_formats": [],
        "status": "TERMINATED",
        "relative_logdir": trial_dirname(plan),
        "trial_name_creator": None,
        "trial_dirname_creator": None,
        "custom_trial_name": None,
        "custom_dirname": None,
        "restore_path": None,
        "_restore_checkpoint_result": None,
        "_state_json": None,
        "results": "80054e2e",
        "extra_arg": "80054e2e",
        "_resources": "80054e2e",
    }
    numeric = {k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "done"}
    runtime = {
        "start_time": 1795350000.0,
        "num_failures": 0,
        "num_failures_after_restore": 0,
        "error_filename": None,
        "pickled_error_filename": None,
        "last_result": {**last, "experiment_tag": tag},
        "last_result_time": 1795351000.0,
        "metric_analysis": {
            k: {s: v for s in ("max", "min", "avg", "last", "last-5-avg", "last-10-avg")}
            for k, v in numeric.items()
        },
        "_n_steps": [5, 10],
        "metric_n_steps": {k: {"5": _blob(rng, 40), "10": _blob(rng, 80)} for k in numeric},
        "checkpoint_manager": _blob(rng, 400),
    }
    encode = json.JSONEncoder(indent=2).encode
    return [encode(state), encode(runtime)]


def _write_trial(job: tuple[int, int, int, str]) -> list[str]:
    index, n_reports, seed, run_dir = job
    plan = trial_plan(index, n_reports, seed)
    path = Path(run_dir) / trial_dirname(plan)
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.json").write_text(json.dumps(plan["config"], indent=2))
    lines, last = report_lines(plan, n_reports, seed)
    with (path / "result.json").open("w") as handle:
        handle.writelines(lines)
    return trial_state(plan, last, seed)


SPEC_YAML = """\
name: scale
workload: linear_regression
workload_args: {dim: 100, noise: 1.0}
target: {metric: loss, value: 0.529}
budget: {max_steps: 100000}
eval_every: 5
space:
  batch_size: [16, 64, 256, 1024]
  lr: {log_uniform: [0.01, 2.0]}
search: {algorithm: random, num_samples: %d, max_concurrent: 2, seed: 0}
storage: ./runs
"""


def synthesize(run_dir: Path, n_trials: int, n_reports: int, seed: int) -> None:
    """Write the run directory (in a temporary sibling, renamed when complete)."""
    partial = run_dir.with_name(run_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    jobs = [(i, n_reports, seed, str(partial)) for i in range(n_trials)]
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        trial_data = pool.map(_write_trial, jobs, chunksize=16)
    runner_data = {
        "_reuse_actors": True, "_buffer_length": 1, "_max_pending_trials": 200,
        "_metric": None, "_total_time": 3600.0, "_iteration": n_trials * n_reports,
        "_has_errored": False, "_fail_fast": False, "_start_time": 1795350000.0,
        "_session_str": SESSION, "_checkpoint_period": "auto",
        "_stopper": {"_type": "CLOUDPICKLE_FALLBACK", "value": "8005952c"}, "_resumed": False,
    }  # fmt: skip
    state = {"trial_data": trial_data, "runner_data": runner_data, "stats": {"start_time": 0}}
    # What Tune does for a snapshot of the experiment state, once the trial states are
    # serialised (Tune caches each trial's JSON): one json.dumps, one file written.
    started = time.perf_counter()
    state_file = partial / f"experiment_state-{SESSION}.json"
    state_file.write_text(json.dumps(state))
    snapshot_s = time.perf_counter() - started
    meta = {"snapshot_s": snapshot_s, "state_mib": state_file.stat().st_size / 2**20}
    run_dir.with_name(run_dir.name + ".meta.json").write_text(json.dumps(meta))
    (partial / "noisetune_spec.yaml").write_text(SPEC_YAML % n_trials)
    decisions = partial / "results" / "decisions.jsonl"
    decisions.parent.mkdir()
    with decisions.open("w") as handle:
        for i in range(n_trials):
            plan = trial_plan(i, n_reports, seed)
            if plan["outcome"] == "pruned":
                step = (n_reports - 1) * EVAL_EVERY
                reason = f"pruned: lr 4.2x above eps_opt(B={plan['config']['batch_size']})=0.3"
                handle.write(json.dumps({"trial_id": plan["trial_id"], "step": step,
                                         "reason": reason}) + "\n")  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)
    partial.rename(run_dir)


def run_dir_for(data_dir: Path, n_trials: int, n_reports: int, seed: int) -> Path:
    run_dir = data_dir / f"scale-{n_trials}x{n_reports}-s{seed}"
    if not run_dir.exists():
        started = time.perf_counter()
        print(f"synthesizing {run_dir} ...", file=sys.stderr, flush=True)
        synthesize(run_dir, n_trials, n_reports, seed)
        print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return run_dir


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- measurement in fresh processes ------------------------------------------------------


def child_build(run_dir: Path, out_dir: Path) -> dict[str, float]:
    """In the child: build_tables, then write_tables into a copy's results/ (timed apart)."""
    from tuner.results.tables import build_tables, write_tables

    started = time.perf_counter()
    tables = build_tables(run_dir, TARGET)
    built = time.perf_counter()
    target = out_dir / "run"
    target.mkdir(parents=True, exist_ok=True)
    write_tables(target, tables)
    written = time.perf_counter()
    return {
        "build": built - started,
        "write": written - built,
        "curve_rows": float(len(tables.curves)),
        "trial_rows": float(len(tables.trials)),
    }


def child_cache(run_dir: Path) -> dict[str, float]:
    """In the child: what `tuner.runtime.tune_loggers.ReportsCache` does as each trial ends
    (`tuner.results.tables.cache_trial_reports` on its directory), for every trial, timed
    per trial."""
    from tuner.results.tables import cache_trial_reports
    from tuner.results.tune_state import read_trials

    per_trial = []
    cached = 0
    for trial in read_trials(run_dir, with_results=False):
        assert trial.path is not None
        started = time.perf_counter()
        cached += cache_trial_reports(trial.path)
        per_trial.append(time.perf_counter() - started)
    return {
        "trials": float(len(per_trial)),
        "cached": float(cached),
        "per_trial_ms": statistics.median(per_trial) * 1e3,
        "total_s": sum(per_trial),
    }


def write_caches(code: Path, run_dir: Path, script: Path) -> dict[str, float]:
    """Each trial's reports cache, written by `code` (once per synthesized run dir)."""
    marker = run_dir.with_name(run_dir.name + ".cache.json")
    if marker.exists():
        timings: dict[str, float] = json.loads(marker.read_text())
        return timings
    print(f"caching each trial's reports in {run_dir} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, str(script), "--child-cache", str(run_dir)]
    _, rss, text = measured(cmd, env, code)
    timings = {**json.loads(text.strip().splitlines()[-1]), "rss_mib": rss}
    marker.write_text(json.dumps(timings))
    return timings


def remove_caches(run_dir: Path) -> None:
    # tuner.results.tables.REPORTS_CACHE, named here: this process imports none of the code
    # it measures (--against runs another commit's).
    for cache in run_dir.glob("*/noisetune_reports.arrow"):
        cache.unlink()
    run_dir.with_name(run_dir.name + ".cache.json").unlink(missing_ok=True)


def measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stdout) of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} exited {proc.returncode}:\n{err.read().decode()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def measure_code(
    code: Path, run_dir: Path, script: Path, max_csv_rows: int
) -> dict[str, dict[str, float]]:
    """Every piece once on `code`: build+write in one child, each export in its own."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    scratch = Path(tempfile.mkdtemp(prefix="noisetune-export-"))
    out: dict[str, dict[str, float]] = {}
    try:
        cmd = [sys.executable, str(script), "--child-build", str(run_dir), str(scratch)]
        wall, rss, text = measured(cmd, env, code)
        timings = json.loads(text.strip().splitlines()[-1])
        for piece in PIECES:
            out[piece] = {"s": timings[piece], "rss_mib": rss}
        out["build+write process"] = {"s": wall, "rss_mib": rss}
        written = scratch / "run"
        # The exports read results/ as written by this code's write_tables.
        for table, fmt in EXPORTS:
            if (table, fmt) == ("curves", "csv") and timings["curve_rows"] > max_csv_rows:
                continue  # pandas writes ~50k rows/s of curves as CSV here: minutes
            target = scratch / f"{table}.{fmt}"
            cmd = [sys.executable, "-m", "tuner", "export", str(written), "--format", fmt]
            cmd += ["--table", table, "--out", str(target)]
            wall, rss, _ = measured(cmd, env, code)
            out[f"export {table} {fmt}"] = {"s": wall, "rss_mib": rss}
            target.unlink()
        out["rows"] = {"s": timings["curve_rows"], "rss_mib": timings["trial_rows"]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def export_ref(ref: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="noisetune-ref-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def snapshot_checkout() -> Path:
    """This checkout's files as they are now (tracked and untracked, not ignored)."""
    target = Path(tempfile.mkdtemp(prefix="noisetune-code-"))
    files = git("ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0")
    listing = "\0".join(f for f in files if f and (ROOT / f).is_file()).encode()
    archive = subprocess.run(
        ["tar", "-c", "--null", "-T", "-"], cwd=ROOT, input=listing, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


# --- the eps_opt scheduler's decision cost -----------------------------------------------


def scheduler_cost(n_trials: int, calls: int, seed: int = 0) -> dict[str, float]:
    """Seconds per `EpsOptScheduler.on_trial_result` call with n_trials trials known.

    The real scheduler (around FIFO, no decisions file) is fed n_trials trials, half of
    them reached (with measured B_noise and eps_max at the target), the rest running.
    Timed: a report of a running trial (observe, decide: the common case), and a report
    that reaches the target (observe, update the best per batch size, refit the model
    in the calibrated mode, which pools every reached trial's measurement).
    """
    from types import SimpleNamespace

    from ray.tune.schedulers import FIFOScheduler

    from tuner.strategy.eps_opt_rules import PruneRule
    from tuner.strategy.schedulers import EpsOptScheduler

    rng = np.random.default_rng(seed)
    scheduler = EpsOptScheduler(FIFOScheduler(), PruneRule("calibrated", 4.0), max_concurrent=2)

    def trial(trial_id: str, batch_size: int, lr: float) -> Any:
        config = {"batch_size": batch_size, "lr": lr, "momentum": 0.0}
        return SimpleNamespace(trial_id=trial_id, config=config, status="RUNNING", last_result={})

    def reached(steps: float) -> dict[str, Any]:
        return {
            "step": int(steps),
            "trial_status": "reached",
            "steps_to_target": steps,
            "b_noise": float(rng.uniform(50, 100)),
            "eps_max": float(rng.uniform(0.8, 1.2)),
        }

    for i in range(n_trials):
        b = BATCH_SIZES[i % len(BATCH_SIZES)]
        t = trial(f"t{i}", b, float(rng.choice(LRS)))
        scheduler.on_trial_add(None, t)
        if i % 2 == 0:
            scheduler.on_trial_result(None, t, reached(400.0 * (1 + 64 / b) * rng.uniform(1, 2)))
        else:
            scheduler.on_trial_result(
                None, t, {"step": int(rng.integers(0, 2000)), "trial_status": "running"}
            )
    judged = trial("judged", 64, 0.3)
    scheduler.on_trial_add(None, judged)

    def per_call(reach: bool) -> float:
        started = time.perf_counter()
        for i in range(calls):
            if reach:
                fresh = trial(f"r{i}", 64, 0.3)
                scheduler.on_trial_add(None, fresh)
                scheduler.on_trial_result(None, fresh, reached(5000.0))
            else:
                scheduler.on_trial_result(
                    None, judged, {"step": 100 + i, "trial_status": "running"}
                )
            if i == 0 and time.perf_counter() - started > 5:
                return time.perf_counter() - started  # one call is enough at this size
        return (time.perf_counter() - started) / calls

    return {"running": per_call(False), "reached": per_call(True)}


# --- tables ------------------------------------------------------------------------------


def spread3(values: list[float]) -> str:
    """Median (min…max) to 3 significant digits."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}…{max(values):.3g})"


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}…{max(values):.2f})"


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def parse_size(text: str) -> tuple[int, int]:
    trials, reports = text.lower().split("x")
    return int(trials), int(reports)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-build"]:  # in a measured child: build and write, print timings
        print(json.dumps(child_build(Path(argv[1]), Path(argv[2]))))
        return 0
    if argv[:1] == ["--child-cache"]:  # in a measured child: cache every trial's reports
        print(json.dumps(child_cache(Path(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000x1000", help="TRIALSxREPORTS,...")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="a git ref to compare this checkout with")
    parser.add_argument("--max-old-rows", type=int, default=2_000_000)
    parser.add_argument("--max-csv-rows", type=int, default=2_000_000, help="curves as csv")
    parser.add_argument("--only", choices=["tables", "scheduler"])
    parser.add_argument("--scheduler-trials", default="100,1000,10000")
    parser.add_argument("--out", type=Path, help="write the raw numbers (.json)")
    parser.add_argument(
        "--uncached",
        action="store_true",
        help="no per-trial reports caches: build_tables parses every result.json",
    )
    args = parser.parse_args(argv)

    new_code = snapshot_checkout()
    ref_code = export_ref(args.against) if args.against else None
    import pandas as pd
    import pyarrow as pa

    info = {
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "code": git("rev-parse", "--short", "HEAD")
        + ("+dirty" if git("status", "--porcelain", "--", "tuner") else ""),
        "against": git("rev-parse", "--short", args.against) if args.against else None,
    }
    load_before = os.getloadavg()
    started = time.perf_counter()
    payload: dict[str, Any] = {"machine": info, "tables": {}, "scheduler": {}}
    sections = []

    if args.only != "scheduler":
        lines = []
        for size in args.sizes.split(","):
            n_trials, n_reports = parse_size(size)
            run_dir = run_dir_for(args.data_dir, n_trials, n_reports, args.seed)
            script = new_code / "bench" / Path(__file__).name
            if args.uncached:
                remove_caches(run_dir)
            else:  # as the sweep's driver would have, trial by trial
                cache = write_caches(new_code, run_dir, script)
                payload["tables"][size + " cache"] = cache
                lines.append(
                    f"| {size} | | | reports cache as each trial ends, per trial "
                    f"({cache['cached']:.0f} of {cache['trials']:.0f} cached; "
                    f"{cache['total_s']:.0f} s in all) | {cache['per_trial_ms']:.1f} ms |"
                    + " |"
                    * (1 + (3 if ref_code is not None else 0))
                )
            mib = dir_size(run_dir) / 2**20
            sides = [("new", new_code)]
            if ref_code is not None and n_trials * n_reports <= args.max_old_rows:
                sides.append(("ref", ref_code))
            runs: dict[str, list[dict[str, dict[str, float]]]] = {s: [] for s, _ in sides}
            for turn in range(args.repeats):
                for side, code in sides if turn % 2 == 0 else sides[::-1]:
                    print(f"{size} repeat {turn + 1} {side}", file=sys.stderr, flush=True)
                    runs[side].append(measure_code(code, run_dir, script, args.max_csv_rows))
            payload["tables"][size] = runs
            meta_file = run_dir.with_name(run_dir.name + ".meta.json")
            if meta_file.exists():
                meta = json.loads(meta_file.read_text())
                payload["tables"][size + " snapshot"] = meta
                lines.append(
                    f"| {size} | | {meta['state_mib']:,.0f} (state file) | experiment-state "
                    f"snapshot (json.dumps + write, at synthesis) | {meta['snapshot_s']:.2f} |"
                    + " |"
                    * (1 + (3 if ref_code is not None else 0))
                )
            rows = int(runs["new"][0]["rows"]["s"])
            for piece in runs["new"][0]:
                if piece == "rows" or any(piece not in r for side in runs.values() for r in side):
                    continue
                new_s = [r[piece]["s"] for r in runs["new"]]
                new_rss = [r[piece]["rss_mib"] for r in runs["new"]]
                row = [size, f"{rows:,}", f"{mib:,.0f}", piece, spread(new_s)]
                row.append(f"{statistics.median(new_rss):,.0f}")
                if "ref" in runs:
                    ref_s = [r[piece]["s"] for r in runs["ref"]]
                    ref_rss = [r[piece]["rss_mib"] for r in runs["ref"]]
                    ratios = [n / r for n, r in zip(new_s, ref_s, strict=True)]
                    row += [spread(ref_s), f"{statistics.median(ref_rss):,.0f}"]
                    row.append(spread(ratios) + "×")
                elif ref_code is not None:
                    row += ["not run (too big)", "", ""]
                lines.append("| " + " | ".join(row) + " |")
        head = ["trials × reports", "curve rows", "run dir, MiB", "step", "s, median (min…max)"]
        head.append("peak RSS, MiB")
        if ref_code is not None:
            head += [f"{args.against}: s", f"{args.against}: peak RSS, MiB", "ratio"]
        sections.append(
            "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])
        )

    if args.only != "tables":
        sys.path.insert(0, str(new_code))
        lines = ["| trials | per result of a running trial | per result reaching the target |"]
        lines.append("|---|---|---|")
        for n in [int(x) for x in args.scheduler_trials.split(",")]:
            calls = max(10, 200_000 // n)
            results = [scheduler_cost(n, calls=calls) for _ in range(args.repeats)]
            payload["scheduler"][n] = results
            running = [r["running"] * 1e3 for r in results]
            reached = [r["reached"] * 1e3 for r in results]
            lines.append(f"| {n:,} | {spread3(running)} ms | {spread3(reached)} ms |")
        sections.append("\n".join(lines))

    wall = time.perf_counter() - started
    load = f"{load_before[0]:.1f} → {os.getloadavg()[0]:.1f}"
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (
        f"{info['cpu_model']}, nproc {info['nproc']}, python {info['python']}, "
        f"pandas {info['pandas']}, pyarrow {info['pyarrow']}, code {info['code']}"
        + (f" vs {info['against']}" if args.against else "")
        + f"; wall {wall:.0f} s, 1-min load average {load}; "
        f"peak RSS of this process {own_rss:.0f} MiB"
    )
    text = header + "\n\n" + "\n\n".join(sections)
    print(text)
    if args.out is not None:
        payload.update(wall_s=wall, load_average=load, table=text)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    for code in (new_code, ref_code):
        if code is not None:
            shutil.rmtree(code, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
