"""Seconds per tiny trial through `run_sweep`, per executor, against the plain loop.

    python bench/trial_overhead.py                          # ~6 min on 2 cores
    python bench/trial_overhead.py --executors loop,single --workloads teacher_mlp
    python bench/trial_overhead.py --against HEAD~1         # A/B: this checkout vs a commit
    python bench/trial_overhead.py --loggers                # driver cost of Tune's loggers

Runs the same tiny trials (a grid of `--trials` learning rates at B = 16, `--steps` steps,
an evaluation every `--eval-every` steps, a target no trial reaches, so every trial runs
all its steps) three ways, interleaved in rotating order within each repeat:

- `loop`: `trainables.loop.run_trial` in this process, one trial after the other, the
  workload built for each trial as a bare loop does (`build` and `train` timed apart),
  after one untimed trial;
- `single`: `tuner.runtime.runner.run_sweep` on an embedded Ray
  (`tuner.runtime.ray_runtime.init_ray`),
  one worker per trial: the loop runs in the Tune function actor, with actor reuse;
- `multi`: `run_sweep` with `workers_per_trial: 2`, a Ray Train V2 TorchTrainer per trial.

Sweeps run `--max-concurrent` trials at a time (1 by default, so a trial's cost is its
latency). A Tune callback (installed through RAY_TUNE_CALLBACKS) stamps every trial's
completion, which splits a sweep into
- `first`: run_sweep's start to the first trial's end (Tune setup, actor start, imports,
  the first trial);
- `steady`: seconds per further trial, (last end - first end) / (n - 1): the per-trial
  cost of a warm sweep;
- `tail`: the last trial's end to run_sweep's return (Tune teardown, tables, figures);
- `per trial`: run_sweep's wall time / n, everything included.

The code runs from a copy of this checkout taken at the start (or of `--code REF`). With
`--against REF`, REF is exported with `git archive` and every repeat runs twice in fresh
subprocesses (one Ray each), once on REF and once on this checkout (or `--code`), in
alternating order; the table then gives each side's medians and the median of the
per-repeat ratios (this checkout / REF), with their min…max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tuner.runtime.ray_runtime import keep_local_ray_on_loopback

# Before Ray is imported: the embedded Ray this script may start stays on 127.0.0.1.
keep_local_ray_on_loopback()

from ray import tune

WORKLOAD_ARGS: dict[str, dict[str, Any]] = {
    "linear_regression": {"dim": 10, "noise": 0.5, "n_train": 1024},
    "teacher_mlp": {},
}
EXECUTORS = ("loop", "single", "multi")
BATCH_SIZE = 16
LR_RANGE = (0.01, 0.1)
ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model


class Timeline(tune.Callback):
    """Stamps trial ends on the driver (installed through RAY_TUNE_CALLBACKS)."""

    ends: list[float] = []  # noqa: RUF012  (shared by the instance Tune creates)

    def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        Timeline.ends.append(time.perf_counter())

    def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        Timeline.ends.append(time.perf_counter())


def lrs(n: int) -> list[float]:
    """n learning rates log-spaced over LR_RANGE (all stable for both workloads)."""
    lo, hi = LR_RANGE
    return [lo * (hi / lo) ** (i / max(n - 1, 1)) for i in range(n)]


def make_spec(workload: str, executor: str, n: int, args: argparse.Namespace, storage: str) -> Any:
    from tuner.config.spec import parse_spec

    return parse_spec(
        {
            "name": f"{workload}-{executor}",
            "workload": workload,
            "workload_args": WORKLOAD_ARGS[workload],
            "target": {"metric": "loss", "value": 0.0},  # never reached: every trial runs out
            "budget": {"max_steps": args.steps},
            "eval_every": args.eval_every,
            "space": {"batch_size": [BATCH_SIZE], "lr": lrs(n), "momentum": [0.0]},
            "search": {"algorithm": "grid", "max_concurrent": args.max_concurrent},
            "resources": {"workers_per_trial": 2 if executor == "multi" else 1},
            "storage": storage,
        }
    )


def time_loop(workload: str, args: argparse.Namespace, storage: str) -> dict[str, float]:
    """The same trials as the single-worker sweep, run by `run_trial` in this process."""
    import torch

    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters
    from trainables.workload import build_workload
    from tuner.config.trial_settings import trial_settings
    from tuner.runtime.runner import run_location

    torch.set_num_threads(1)  # as in the Tune actor (cpus_per_worker = 1)
    spec = make_spec(workload, "loop", args.trials, args, storage)
    settings = trial_settings(spec, run_location(spec).uri)
    warm = Hyperparameters(batch_size=BATCH_SIZE, lr=LR_RANGE[0], momentum=0.0, warmup_steps=0)
    # One untimed trial first: a process's first trial pays one-off imports (torch._dynamo
    # on the first optimiser), which the sweeps pay in `first`.
    run_trial(settings, warm, lambda metrics: None)
    build = train = 0.0
    for lr in lrs(args.trials):
        started = time.perf_counter()
        built = build_workload(settings.workload, settings.workload_args)
        built_at = time.perf_counter()
        hp = Hyperparameters(batch_size=BATCH_SIZE, lr=lr, momentum=0.0, warmup_steps=0)
        last = run_trial(settings, hp, lambda metrics: None, workload=built)
        assert last["trial_status"] == "exhausted", last["reason"]
        build += built_at - started
        train += time.perf_counter() - built_at
    n = args.trials
    return {"per_trial": (build + train) / n, "build": build / n, "train": train / n}


def time_sweep(workload: str, executor: str, args: argparse.Namespace, storage: str) -> dict:
    from tuner.runtime.runner import run_sweep

    n = args.multi_trials if executor == "multi" else args.trials
    spec = make_spec(workload, executor, n, args, storage)
    Timeline.ends.clear()
    started = time.perf_counter()
    outcome = run_sweep(spec, progress=False)
    done = time.perf_counter()
    ends = sorted(Timeline.ends)
    statuses = outcome.tables.trials["status"].value_counts().to_dict()
    if len(ends) != n or statuses != {"exhausted": n}:
        raise RuntimeError(f"{workload}/{executor}: {len(ends)} trial ends, statuses {statuses}")
    return {
        "per_trial": (done - started) / n,
        "first": ends[0] - started,
        "steady": (ends[-1] - ends[0]) / (n - 1) if n > 1 else float("nan"),
        "tail": done - ends[-1],
        "wall": done - started,
    }


def run_repeat(args: argparse.Namespace, turn: int) -> dict[str, dict[str, float]]:
    """One repeat: every (workload, executor) once, in an order rotated by `turn`."""
    cells = [(w, e) for w in args.workloads for e in args.executors]
    shift = turn % len(cells)
    out: dict[str, dict[str, float]] = {}
    for workload, executor in cells[shift:] + cells[:shift]:
        storage = tempfile.mkdtemp(prefix="noisetune-bench-")
        try:
            if executor == "loop":
                timings = time_loop(workload, args, storage)
            else:
                timings = time_sweep(workload, executor, args, storage)
        finally:
            shutil.rmtree(storage, ignore_errors=True)  # the sweep's run directory
        out[f"{workload}/{executor}"] = timings
        print(
            f"  {workload}/{executor}: " + ", ".join(f"{k} {v:.3f}" for k, v in timings.items()),
            file=sys.stderr,
            flush=True,
        )
    return out


def start_ray(args: argparse.Namespace) -> None:
    from tuner.runtime.ray_runtime import init_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables between our lines
    os.environ["RAY_TUNE_CALLBACKS"] = "__main__.Timeline"
    init_ray(num_cpus=2)


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    import ray
    import torch

    dirty = git("status", "--porcelain", "--", "trainables", "tuner")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "code": git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
    }


# --- Tune's per-trial loggers on the driver ---------------------------------------------


class _LoggedTrial:
    """What Tune's logger callbacks read of a trial."""

    checkpoint = None

    def __init__(self, index: int, root: Path, config: dict[str, Any]) -> None:
        self.trial_id = f"t{index:05d}"
        self.local_path = str(root / self.trial_id)
        self.config = self.evaluated_params = config
        Path(self.local_path).mkdir(parents=True)

    def init_local_path(self) -> None:
        pass


def logger_costs(args: argparse.Namespace, trials: int = 100) -> dict[str, list[float]]:
    """Driver CPU seconds per trial of each of Tune's default loggers (TensorBoard, JSON,
    CSV), fed the reports of one of this benchmark's linear_regression trials with the
    keys Tune adds, `trials` trials per repeat: what a sweep's driver spends on them."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters
    from tuner.config.trial_settings import trial_settings
    from tuner.runtime.runner import run_location

    spec = make_spec("linear_regression", "loop", 2, args, tempfile.gettempdir())
    settings = trial_settings(spec, run_location(spec).uri)
    reports: list[dict[str, Any]] = []
    hp = Hyperparameters(batch_size=BATCH_SIZE, lr=LR_RANGE[0], momentum=0.0, warmup_steps=0)
    run_trial(settings, hp, reports.append)
    config = {"batch_size": BATCH_SIZE, "lr": LR_RANGE[0], "momentum": 0.0, "warmup_steps": 0}
    tune_keys = {
        "timestamp": 1795350000, "checkpoint_dir_name": None, "done": False, "trial_id": "t",
        "date": "2026-11-22_12-00-00", "time_this_iter_s": 0.003, "time_total_s": 1.1,
        "pid": 11024, "hostname": "vm", "node_ip": "127.0.0.1", "config": config,
        "time_since_restore": 1.1,
    }  # fmt: skip
    results = [
        {**r, **tune_keys, "training_iteration": i + 1, "iterations_since_restore": i + 1}
        for i, r in enumerate(reports)
    ]
    loggers = {"tensorboard": TBXLoggerCallback, "json": JsonLoggerCallback}
    loggers["csv"] = CSVLoggerCallback
    costs: dict[str, list[float]] = {name: [] for name in loggers}
    for _ in range(args.repeats):
        for name, make in loggers.items():
            logger, root = make(), Path(tempfile.mkdtemp(prefix="noisetune-loggers-"))
            started = time.process_time()
            for index in range(trials):
                trial = _LoggedTrial(index, root, config)
                logger.log_trial_start(trial)
                for i, result in enumerate(results):
                    logger.log_trial_result(i, trial, dict(result))
                logger.log_trial_end(trial)
            costs[name].append((time.process_time() - started) / trials)
            shutil.rmtree(root, ignore_errors=True)
    return costs


def loggers_table(costs: dict[str, list[float]], reports: int) -> str:
    lines = [f"| Tune logger | driver CPU ms per trial of {reports} reports, median (min…max) |"]
    lines.append("|---|---|")
    for name, values in costs.items():
        lines.append(f"| {name} | {spread([1e3 * v for v in values])} |")
    return "\n".join(lines)


# --- summaries ---------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}…{max(values):.3f})"


def table(repeats: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    """One row per workload and executor: median (min…max) over repeats, the ratio of
    the sweep's steady seconds per trial to the loop's (build + train), and what a sweep's
    trial costs beyond the loop's training alone."""
    head = ["workload", "executor", "trials × repeats", "per trial, s", "first, s"]
    head += ["steady, s/trial", "tail, s", "steady / loop", "steady − loop train, s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload in args.workloads:
        loop_key = f"{workload}/loop"
        for executor in args.executors:
            key = f"{workload}/{executor}"
            runs = [r[key] for r in repeats]
            n = args.multi_trials if executor == "multi" else args.trials
            row = [workload, executor, f"{n} × {len(runs)}", spread([r["per_trial"] for r in runs])]
            if executor == "loop":
                build = statistics.median(r["build"] for r in runs)
                train = statistics.median(r["train"] for r in runs)
                row += [f"build {build:.3f} + train {train:.3f}", "", "", "", ""]
            else:
                row += [spread([r[k] for r in runs]) for k in ("first", "steady", "tail")]
                if loop_key in repeats[0]:
                    ratios = [r[key]["steady"] / r[loop_key]["per_trial"] for r in repeats]
                    extra = [r[key]["steady"] - r[loop_key]["train"] for r in repeats]
                    row += [spread(ratios) + "×", spread(extra)]
                else:
                    row += ["", ""]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ab_table(
    base: list[dict[str, dict[str, float]]],
    new: list[dict[str, dict[str, float]]],
    args: argparse.Namespace,
) -> str:
    """Per cell and measure: REF's median, this checkout's, and their per-repeat ratio."""
    head = ["workload", "executor", "measure", str(args.against), "this checkout"]
    head.append("ratio (min…max)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in base[0]:
        workload, executor = key.split("/")
        measures = ["per_trial", "build", "train"] if executor == "loop" else ["per_trial"]
        if executor != "loop":
            measures += ["first", "steady", "tail"]
        for measure in measures:
            a = [r[key][measure] for r in base]
            b = [r[key][measure] for r in new]
            ratios = [y / x for x, y in zip(a, b, strict=True) if x > 0]
            cell = spread(ratios) + "×" if ratios else ""
            row = [workload, executor, measure, spread(a), spread(b), cell]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- A/B against a commit ----------------------------------------------------------------


def export_ref(ref: str) -> Path:
    """The tracked files of `ref` in a fresh temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="noisetune-ref-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def snapshot_checkout() -> Path:
    """This checkout's files (tracked and untracked, not ignored) copied as they are now,
    so that editing the checkout while the benchmark runs changes nothing it imports (Ray
    workers import the code when they start)."""
    target = Path(tempfile.mkdtemp(prefix="noisetune-code-"))
    files = git("ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0")
    listing = "\0".join(f for f in files if f and (ROOT / f).is_file()).encode()
    archive = subprocess.run(
        ["tar", "-c", "--null", "-T", "-"], cwd=ROOT, input=listing, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def use_code(code: Path) -> None:
    """Import `tuner` and `trainables` from `code`, here and in the Ray workers."""
    sys.path.insert(0, str(code))
    os.environ["PYTHONPATH"] = str(code)
    os.chdir(code)


def child_repeat(
    script: Path, code: Path, turn: int, argv: list[str]
) -> dict[str, dict[str, float]]:
    """One repeat in a fresh process whose `tuner` and `trainables` come from `code`."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, str(script), *argv]
    cmd += ["--child-turn", str(turn), "--child-out", str(out)]
    subprocess.run(cmd, cwd=code, env=env, check=True)
    result: dict[str, dict[str, float]] = json.loads(out.read_text())
    out.unlink()
    return result


def strip_against(argv: list[str]) -> list[str]:
    """The command line without --against/--code/--out (for the child processes)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--against", "--out", "--code"):
            skip = True
            continue
        if arg.startswith(("--against=", "--out=", "--code=")):
            continue
        kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="linear_regression,teacher_mlp")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--trials", type=int, default=16, help="trials per loop/single run")
    parser.add_argument("--multi-trials", type=int, default=3, help="trials per multi run")
    parser.add_argument("--steps", type=int, default=20, help="steps per trial")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="a git ref to compare this checkout with (A/B)")
    parser.add_argument("--code", help="a git ref to run instead of this checkout")
    parser.add_argument("--out", type=Path, help="write the raw timings (.json)")
    parser.add_argument(
        "--loggers", action="store_true", help="only the driver cost of Tune's loggers"
    )
    parser.add_argument("--child-turn", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.executors = [e for e in args.executors.split(",") if e]
    unknown = sorted(set(args.workloads) - set(WORKLOAD_ARGS)) + sorted(
        set(args.executors) - set(EXECUTORS)
    )
    if unknown or args.trials < 2 or args.repeats < 1:
        parser.error(f"unknown {unknown}" if unknown else "need --trials >= 2, --repeats >= 1")

    if args.loggers:
        costs = logger_costs(args)
        reports = args.steps // args.eval_every + 1
        load = f"1-min load average {os.getloadavg()[0]:.1f}"
        print(f"{cpu_model()}, nproc {os.cpu_count()}, {load}\n\n" + loggers_table(costs, reports))
        return 0

    if args.child_out is not None:  # one repeat of an A/B run
        use_code(Path.cwd())
        start_ray(args)
        args.child_out.write_text(json.dumps(run_repeat(args, args.child_turn)))
        return 0

    # The code is copied before anything else, so that the checkout may change meanwhile.
    new_code = export_ref(args.code) if args.code else snapshot_checkout()
    ref_code = export_ref(args.against) if args.against else None
    print(f"code copied to {new_code}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    info = machine()
    if args.code:
        info["code"] = git("rev-parse", "--short", args.code)
    payload: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if ref_code is not None:
        info["against"] = git("rev-parse", "--short", args.against)
        child_argv = strip_against(argv)
        base: list[dict[str, dict[str, float]]] = []
        new: list[dict[str, dict[str, float]]] = []
        for turn in range(args.repeats):
            sides = [("ref", ref_code), ("new", new_code)]
            for side, code in sides if turn % 2 == 0 else sides[::-1]:
                print(f"repeat {turn + 1}/{args.repeats}, {side}", file=sys.stderr, flush=True)
                script = new_code / "bench" / Path(__file__).name
                if not script.exists():  # --code REF older than this benchmark
                    script = Path(__file__).resolve()
                result = child_repeat(script, code, turn, child_argv)
                (base if side == "ref" else new).append(result)
        text = ab_table(base, new, args)
        payload.update(ref=base, new=new)
    else:
        use_code(new_code)
        start_ray(args)
        repeats = []
        for turn in range(args.repeats):
            print(f"repeat {turn + 1}/{args.repeats}", file=sys.stderr, flush=True)
            repeats.append(run_repeat(args, turn))
        text = table(repeats, args)
        payload["repeats"] = repeats
    wall = time.perf_counter() - started
    load = f"{load_before[0]:.1f} → {os.getloadavg()[0]:.1f}"
    header = (
        f"{info['cpu_model']}, nproc {info['nproc']}, python {info['python']}, "
        f"torch {info['torch']}, ray {info['ray']}, code {info['code']}"
        + (f" vs {info['against']}" if args.against else "")
        + f"; {args.steps} steps, eval every {args.eval_every}, B={BATCH_SIZE}, "
        f"max_concurrent {args.max_concurrent}; wall {wall:.0f} s, "
        f"1-min load average {load}"
    )
    print(header + "\n\n" + text)
    if args.out is not None:
        payload.update(machine=info, wall_s=wall, load_average=load, table=text)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    for code in (new_code, ref_code):
        if code is not None:
            shutil.rmtree(code, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
