"""Read a Ray Tune experiment directory into plain records, without starting Ray.

Tune's own `ExperimentAnalysis` needs a running Ray instance; `export` and `report` must
work on a laptop holding only the run directory. The experiment-state JSON and the
per-trial `result.json` (JSON lines) are all we read: line by line into dicts
(`read_trials`), or for many reports column-wise into an Arrow table (`read_result_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

# Tune's status names for a trial.
TUNE_TERMINATED = "TERMINATED"
TUNE_ERROR = "ERROR"


@dataclass
class TuneTrial:
    """One trial as Tune recorded it."""

    trial_id: str
    status: str  # Tune's: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]
    path: Path | None
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


def _newest_state_file(run_dir: Path) -> Path | None:
    files = sorted(run_dir.glob("experiment_state-*.json"))
    return files[-1] if files else None


def _read_results(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    result_file = path / "result.json"
    if not result_file.exists():
        return rows
    with result_file.open() as handle:
        for line in handle:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    # A line cut short by a killed driver; a resumed sweep appends after it.
                    continue
    return rows


@dataclass(frozen=True)
class ResultFile:
    """A trial's result.json: every report as a row of one Arrow table, in order (None
    without reports), and the last report as `read_trials` reads it ({} without)."""

    table: pa.Table | None
    last: dict[str, Any]


def read_result_file(path: Path | None) -> ResultFile:
    """A trial directory's result.json, column-wise: the same reports as `_read_results`.

    pyarrow parses the whole file in one block, so each key gets one type (it accepts
    NaN and Infinity as json does); the last line is parsed by json, as `_read_results`
    would. A file pyarrow refuses (a line cut short by a killed driver, a key whose values
    do not share a type) is read line by line like `_read_results` and converted; where a
    key's values do not share a type its numbers are kept and the rest become null.
    """
    result_file = path / "result.json" if path is not None else None
    if result_file is None or not result_file.exists():
        return ResultFile(None, {})
    data = result_file.read_bytes()
    if not data.strip():
        return ResultFile(None, {})
    try:
        block = min(len(data) + 1, 2**31 - 1)  # one block below 2 GiB
        options = pa_json.ReadOptions(use_threads=False, block_size=block)
        table = pa_json.read_json(pa.BufferReader(data), read_options=options)
        last: dict[str, Any] = json.loads(data.rstrip().rsplit(b"\n", 1)[-1])
    except (pa.ArrowInvalid, json.JSONDecodeError):
        rows = _read_results(result_file.parent)
        if not rows:
            return ResultFile(None, {})
        names = list(dict.fromkeys(name for row in rows for name in row))
        table = pa.table({name: _column([row.get(name) for row in rows]) for name in names})
        last = rows[-1]
    return ResultFile(table, last)


def _column(values: list[Any]) -> pa.Array:
    """One key's values as an Arrow array; its numbers only (booleans as 0 and 1, the rest
    null) where they do not share a type."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    numbers = [int(v) if isinstance(v, bool) else v for v in values]
    numbers = [v if isinstance(v, (int, float)) else None for v in numbers]
    try:
        return pa.array(numbers)
    except (pa.ArrowInvalid, OverflowError):  # an integer past int64
        return pa.array([None if v is None else float(v) for v in numbers], pa.float64())


ERROR_FILE = "error.txt"  # Tune's full traceback of a trial that raised


def _error_message(path: Path | None) -> str:
    """The exception a trial raised: the last line of its traceback (error.txt)."""
    if path is None or not (path / ERROR_FILE).exists():
        return ""
    lines = [ln.strip() for ln in (path / ERROR_FILE).read_text().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def is_experiment(run_dir: Path) -> bool:
    return _newest_state_file(run_dir) is not None


def restore_problems(run_dir: Path) -> list[str]:
    """Why `Tuner.restore` could not continue the experiment in `run_dir` (empty: it can).

    Where Tune cannot restore an experiment it logs an error and starts a new one in the
    same directory (whose state file then hides the old trials). Two causes are checked:
    a searcher inside Tune's SearchGenerator that saves no state of its own (Tune then
    fails to restore it; seen with the eps_opt searchers of tuner.strategy.guided), and a state
    file that does not parse (Tune copies it into the run directory in place, so a
    driver killed during the copy can leave it cut short).
    """
    state_file = _newest_state_file(run_dir)
    if state_file is None:
        return [f"{run_dir}: no Ray Tune experiment state to resume"]
    problems = []
    try:
        json.loads(state_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{state_file}: unreadable Tune experiment state ({exc})")
    if any(run_dir.glob("search_gen_state-*.json")) and not any(
        run_dir.glob("searcher-state-*.pkl")
    ):
        problems.append(
            f"{run_dir}: the sweep's searcher saved no state, so a resumed sweep would "
            "propose its trials again"
        )
    return problems


def read_trials(run_dir: Path, *, with_results: bool = True) -> list[TuneTrial]:
    """Every trial of the experiment in `run_dir`, in Tune's order (their `results` left
    empty without `with_results`)."""
    state_file = _newest_state_file(run_dir)
    if state_file is None:
        raise FileNotFoundError(f"{run_dir}: no Ray Tune experiment state found")
    state = json.loads(state_file.read_text())
    trials = []
    for trial_json, _runtime_json in state["trial_data"]:
        trial = json.loads(trial_json)
        logdir = trial.get("relative_logdir")
        path = run_dir / logdir if logdir else None
        results = _read_results(path) if path is not None and with_results else []
        trials.append(
            TuneTrial(
                trial_id=trial["trial_id"],
                status=trial["status"],
                config=trial.get("config", {}),
                path=path,
                results=results,
                error=_error_message(path) if trial["status"] == TUNE_ERROR else "",
            )
        )
    return trials
