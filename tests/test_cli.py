"""The `noisetune` command as a user runs it: exit codes, messages, files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _helpers import run_noisetune

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def noisetune(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return run_noisetune(*args, cwd=cwd or ROOT, timeout=timeout)


def write_spec(path: Path, **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "cli",
        "workload": "linear_regression",
        "workload_args": {"dim": 16, "noise": 0.5, "n_train": 4096},
        "target": {"metric": "loss", "value": 0.16},
        "budget": {"max_steps": 200},
        "eval_every": 10,
        "space": {"batch_size": [32, 128], "lr": [0.25, 1.0]},
        "search": {"algorithm": "grid"},
        "storage": str(path.parent / "runs"),
    }
    spec.update(overrides)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_validate_accepts_the_quickstart() -> None:
    result = noisetune("validate", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_bad_spec_exits_2_with_one_line_per_problem_and_writes_nothing(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "bad.yaml",
        space={"batch_size": [0], "lr": {"log_uniform": [1.0, 0.1]}, "momentum": [1.0]},
        extra_key=1,
    )
    for command in ("validate", "run"):
        result = noisetune(command, str(spec))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 4, result.stderr
        assert all(line.startswith(f"noisetune: error: {spec}: ") for line in lines)
        for field in ("space.batch_size", "space.lr", "space.momentum", "extra_key"):
            assert field in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "missing.yaml"], "no such file"),
        (["export", "no/such/run", "--format", "csv"], "no/such/run: no such directory"),
        (["export", "."], "give --format"),
        (["resume", "no/such/run"], "no/such/run: no such directory"),
        (["resume", "."], "not a noisetune run directory"),
        (["frobnicate"], "No such command"),
        (["run"], "Missing argument"),
    ],
)
def test_bad_arguments_exit_2_without_traceback(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = noisetune(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def cli_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    spec = write_spec(tmp_path_factory.mktemp("cli") / "spec.yaml")
    return spec, noisetune("run", str(spec))


@pytest.mark.ray
def test_run_prints_the_front_and_writes_results(cli_run: Any) -> None:
    spec, result = cli_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Best steps to loss <= 0.16" in result.stdout
    run_dir = spec.parent / "runs" / "cli"
    assert f"Results: {run_dir / 'results'}" in result.stdout
    for name in (
        "trials.csv",
        "trials.parquet",
        "curves.parquet",
        "front.csv",
        "summary.json",
        "summary.md",
    ):
        assert (run_dir / "results" / name).is_file(), name
    assert "trials done 4" in result.stderr  # the compact live progress line


@pytest.mark.ray
@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "parquet"])
def test_export_formats_read_back(cli_run: Any, fmt: str, tmp_path: Path) -> None:
    spec, _ = cli_run
    run_dir = spec.parent / "runs" / "cli"
    trials = pd.read_parquet(run_dir / "results" / "trials.parquet")
    out = tmp_path / f"trials.{fmt}"
    args = ["export", str(run_dir), "--format", fmt, "--out", str(out)]
    if fmt == "markdown":
        args += ["--table", "trials"]
    assert noisetune(*args).returncode == 0
    if fmt == "csv":
        assert pd.read_csv(out)["trial_id"].tolist() == trials["trial_id"].tolist()
    elif fmt == "json":
        assert [r["trial_id"] for r in json.loads(out.read_text())] == trials["trial_id"].tolist()
    elif fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(out), trials)
    else:
        assert all(t in out.read_text() for t in trials["trial_id"])


@pytest.mark.ray
def test_export_curves_as_parquet_is_the_table_as_written(cli_run: Any, tmp_path: Path) -> None:
    spec, _ = cli_run
    run_dir = spec.parent / "runs" / "cli"
    out = tmp_path / "curves.parquet"
    args = ["export", str(run_dir), "--format", "parquet", "--table", "curves", "--out", str(out)]
    assert noisetune(*args).returncode == 0
    written = pd.read_parquet(run_dir / "results" / "curves.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), written)
    assert len(written) > 4


def test_export_parquet_of_a_directory_without_tables_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = noisetune("export", str(tmp_path), "--format", "parquet", "--out", str(out))
    assert result.returncode == 2 and "no results/ tables" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.ray
def test_export_markdown_summary_to_stdout_and_report(cli_run: Any) -> None:
    spec, _ = cli_run
    run_dir = spec.parent / "runs" / "cli"
    exported = noisetune("export", str(run_dir), "--format", "markdown")
    assert exported.returncode == 0 and "B_crit" in exported.stdout
    assert noisetune("export", str(run_dir), "--format", "parquet").returncode == 2
    report = noisetune("report", str(run_dir))
    assert report.returncode == 0 and "## Front" in report.stdout


@pytest.mark.ray
def test_running_into_a_finished_run_exits_2_and_resuming_it_starts_no_ray(cli_run: Any) -> None:
    spec, _ = cli_run
    run_dir = spec.parent / "runs" / "cli"
    result = noisetune("run", str(spec))
    assert result.returncode == 2
    assert "already holds a finished sweep" in result.stderr
    assert "noisetune report" in result.stderr and "resume" not in result.stderr
    before = set(Path(tempfile.gettempdir()).glob("noisetune-ray-*"))
    resumed = noisetune("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "nothing to resume" in resumed.stderr and "Best steps" in resumed.stdout
    assert set(Path(tempfile.gettempdir()).glob("noisetune-ray-*")) == before  # no Ray started


@pytest.mark.ray
def test_the_summary_exports_as_json_with_its_target(cli_run: Any) -> None:
    spec, _ = cli_run
    run_dir = spec.parent / "runs" / "cli"
    result = noisetune("export", str(run_dir), "--format", "json", "--table", "summary")
    summary = json.loads(result.stdout)
    assert summary["target"] == {"metric": "loss", "value": 0.16, "mode": "min"}
    assert summary == json.loads((run_dir / "results" / "summary.json").read_text())


@pytest.mark.ray
def test_export_takes_the_format_from_the_out_suffix(cli_run: Any, tmp_path: Path) -> None:
    spec, _ = cli_run
    out = tmp_path / "front.json"
    args = ["export", str(spec.parent / "runs" / "cli"), "--table", "front", "--out", str(out)]
    assert noisetune(*args).returncode == 0
    assert isinstance(json.loads(out.read_text()), list)


@pytest.mark.ray
def test_report_says_where_the_figures_went(cli_run: Any) -> None:
    spec, _ = cli_run
    plots = spec.parent / "runs" / "cli" / "results" / "plots"
    report = noisetune("report", str(spec.parent / "runs" / "cli"))
    assert f"figures written to {plots}: pareto_front.png" in report.stderr


@pytest.mark.ray
def test_ctrl_c_keeps_finished_trials_and_resume_completes_them(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        name="interrupted",
        space={"batch_size": [16], "lr": [0.01, 0.011, 0.012, 0.013, 0.014, 0.015]},
        target={"metric": "loss", "value": 0.0},
        budget={"max_steps": 1500},
        search={"algorithm": "grid", "max_concurrent": 1},
    )
    run_dir = tmp_path / "runs" / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(run_dir.glob("*/result.json"))) < 2:
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-2000:]
    assert f"noisetune resume {run_dir}" in stderr
    trials = pd.read_parquet(run_dir / "results" / "trials.parquet")
    finished = set(trials[trials["status"] == "exhausted"]["trial_id"])
    assert 1 <= len(finished) < 6

    resumed = noisetune("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = pd.read_parquet(run_dir / "results" / "trials.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert (trials["status"] == "exhausted").all()
    assert sorted(trials["lr"]) == [0.01, 0.011, 0.012, 0.013, 0.014, 0.015]
    assert finished <= set(trials["trial_id"])


# --- what fails, fails loudly ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "target", "message"),
    [
        ("failing_build", {"metric": "loss", "value": 0.1}, "FileNotFoundError while being built"),
        ("classifier", {"metric": "acc", "value": 0.9}, "target metric 'acc' is not reported"),
        ("reserved_metric", {"metric": "loss", "value": 0.1}, "'step' would overwrite"),
    ],
)
def test_validate_builds_the_workload_once(
    workload: str, target: dict[str, Any], message: str, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml", workload=f"tests.user_workloads:{workload}", target=target
    )
    result = noisetune("validate", str(spec))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert noisetune("validate", "--no-build", str(spec)).returncode == 0


def test_validate_warns_of_a_target_the_untrained_model_meets(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        workload="tests.user_workloads:classifier",
        target={"metric": "accuracy", "value": 0.9},
    )
    result = noisetune("validate", str(spec))
    assert result.returncode == 0
    assert "already meets the target accuracy <= 0.9" in result.stderr
    assert "did you mean target.mode: max?" in result.stderr


def test_run_checks_the_workload_before_ray_starts(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload="tests.user_workloads:failing_build")
    result = noisetune("run", str(spec))
    assert result.returncode == 2 and "FileNotFoundError while being built" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written
    named = noisetune("run", str(spec), "--name", "../outside")
    assert named.returncode == 2 and "--name '../outside' must match" in named.stderr


@pytest.mark.ray
def test_a_sweep_whose_every_trial_errored_exits_1_with_each_error_once(tmp_path: Path) -> None:
    """--no-build: the trials meet the failing build, each on its own."""
    spec = write_spec(tmp_path / "spec.yaml", workload="tests.user_workloads:failing_build")
    result = noisetune("run", str(spec), "--no-build")
    assert result.returncode == 1
    assert "4 of 4 trials raised an error:" in result.stderr
    assert result.stderr.count("FileNotFoundError: no dataset at /data/cifar10") == 1
    assert "Traceback" not in result.stderr and "Trial task failed" not in result.stderr
    traceback = next(line for line in result.stderr.splitlines() if "traceback:" in line)
    assert Path(traceback.split("traceback: ")[1]).is_file()
    assert "no trial produced a result" in result.stderr
    trials = pd.read_parquet(tmp_path / "runs" / "cli" / "results" / "trials.parquet")
    assert (trials["status"] == "error").all()
