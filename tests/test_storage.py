"""Storage URIs: a run at s3:// (a real S3 API: moto's server on 127.0.0.1) or file://.

The sweeps run as a user runs them, `noisetune run --storage URI` with an embedded Ray
whose workers inherit the dummy credentials from the command's environment; `export`,
`report` and `resume` then take the run's URI.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _helpers import ROOT, S3Server, free_port, run_noisetune

from trainables.execution.executors import train_storage_path
from tuner.config import uris
from tuner.config.spec import SpecError, parse_spec
from tuner.results.tune_state import read_trials
from tuner.runtime import storage
from tuner.runtime.runner import resume_sweep, run_sweep

SPEC: dict[str, Any] = {
    "name": "uri",
    "workload": "linear_regression",
    "workload_args": {"dim": 16, "noise": 0.5, "n_train": 4096},
    "target": {"metric": "loss", "value": 0.16},
    "budget": {"max_steps": 200},
    "eval_every": 10,
    "space": {"batch_size": [32, 128], "lr": [0.25, 1.0]},
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "pruning": {"kind": "eps_opt", "grace_steps": 20, "mode": "fitted"},
}
RESULT_FILES = (
    "trials.csv", "trials.parquet", "curves.parquet", "front.csv", "summary.json",
    "summary.md", "plots/pareto_front.png", "plots/lr_vs_batch.png", "plots/noise_scale.png",
)  # fmt: skip


def noisetune(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return run_noisetune(*args, cwd=cwd, env=full)


def one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- locations, without a store ----------------------------------------------------------------


def test_local_paths_and_file_uris_are_the_same_local_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = str((tmp_path / "runs").resolve())
    for where in ("runs", tmp_path / "runs", f"file://{tmp_path}/runs", f"file://{tmp_path}/runs/"):
        location = storage.resolve(where)
        assert location.is_local and location.uri == expected, where
    run = storage.resolve("runs").join("name")
    assert run.local_path == tmp_path.resolve() / "runs" / "name"
    assert run.parent_uri() == expected and run.name == "name"
    assert train_storage_path(run.uri) == str(run.local_path / "train")


def test_uri_join_and_parent_keep_the_query() -> None:
    query = "?endpoint_override=127.0.0.1:9&scheme=http"
    runs = storage.resolve(f"s3://bucket/runs/{query}")  # no request: the endpoint is given
    assert not runs.is_local and runs.uri == f"s3://bucket/runs{query}"
    run = runs.join("tiny")
    assert run.uri == f"s3://bucket/runs/tiny{query}"
    assert (run.path, run.name) == ("bucket/runs/tiny", "tiny")
    assert run.parent_uri() == runs.uri  # Ray Tune's storage_path; name=tiny
    assert storage.resolve(f"s3://bucket{query}").join("x").parent_uri() == f"s3://bucket{query}"
    assert train_storage_path(run.uri) == f"s3://bucket/runs/tiny/train{query}"


def test_secrets_in_a_uri_are_refused_and_never_shown() -> None:
    """A URI with credentials is bad input (tests/test_security.py has every form); the
    redaction still covers what a Location prints."""
    query = "?endpoint_override=127.0.0.1:9&scheme=http"
    with pytest.raises(storage.StorageError) as caught:
        storage.resolve(f"s3://AKID:SEKRIT@bucket/r{query}")
    assert "SEKRIT" not in str(caught.value)
    assert str(caught.value).startswith(f"s3://AKID:***@bucket/r{query}: credentials ")
    assert uris.redact(f"s3://AKID:SEKRIT@bucket/r{query}") == f"s3://AKID:***@bucket/r{query}"
    location = storage.resolve(f"s3://bucket/r{query}")
    assert str(location.join("x")) == f"s3://bucket/r/x{query}"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("foo://bucket/runs", "unknown storage scheme 'foo'"),
        ("http://127.0.0.1/runs", "unknown storage scheme 'http'"),
        ("s3://", "no bucket or host after s3://"),
        ("s3://[bucket/runs", "not a URI"),  # was a ValueError: exit 1 with its type name
        ("s3://bucket:9000/runs", "a bucket name has no ':'"),
        ("s3://bucket/r?endpoint_override=127.0.0.1:9&bogus=1", "Unexpected query parameter"),
    ],
)
def test_bad_uris_are_storage_errors(where: str, message: str) -> None:
    with pytest.raises(storage.StorageError, match=message):
        storage.resolve(where)


def test_the_spec_checks_the_form_of_its_storage() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**SPEC, "storage": "foo://bucket/runs"})
    assert any(p.startswith("storage") and "'foo'" in p for p in caught.value.problems)
    assert parse_spec({**SPEC, "storage": "s3://bucket/runs"}).storage == "s3://bucket/runs"


# --- against a real S3 API, without Ray ---------------------------------------------------------


def test_a_location_writes_reads_and_copies_whole_directories(
    s3_server: S3Server, tmp_path: Path
) -> None:
    run = storage.resolve(s3_server.uri("unit")).join("run")
    run.check()
    assert not run.exists() and run.files() == []
    run.write_bytes("a/b.txt", b"hello")
    assert run.exists("a/b.txt") and run.read_bytes("a/b.txt") == b"hello"

    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "x.csv").write_text("1,2\n")
    (src / "plots" / "p.png").write_bytes(b"\x89PNG")
    (src / ".x.csv.tmp").write_text("half")  # a temporary: stays behind
    assert run.upload(src, "results") == ["results/plots/p.png", "results/x.csv"]
    assert run.files() == ["a/b.txt", "results/plots/p.png", "results/x.csv"]

    copied = run.download(tmp_path / "dst", lambda rel: rel.startswith("results/"))
    assert copied == ["results/plots/p.png", "results/x.csv"]
    assert (tmp_path / "dst" / "results" / "x.csv").read_text() == "1,2\n"
    assert not (tmp_path / "dst" / "a").exists()

    missing = storage.resolve(s3_server.uri("x").replace(s3_server.bucket, "nobucket", 1))
    with pytest.raises(storage.StorageError, match="bucket 'nobucket' does not exist"):
        missing.check()


# --- real sweeps ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_run(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """`noisetune run` of a small eps_opt grid into s3://noisetune/runs/uri."""
    cwd = tmp_path_factory.mktemp("s3run")
    (cwd / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    result = noisetune(
        "run", "spec.yaml", "--storage", s3_server.uri("runs"), cwd=cwd, env=s3_server.env
    )
    return cwd, s3_server.uri("runs/uri"), result


@pytest.mark.ray
def test_a_sweep_at_an_s3_uri_writes_everything_there(s3_run: Any) -> None:
    cwd, uri, result = s3_run
    assert result.returncode == 0, result.stderr[-3000:]
    run = storage.resolve(uri)
    assert f"Results: {run.join('results')}" in result.stdout
    files = run.files()
    for name in RESULT_FILES:
        assert f"results/{name}" in files, (name, files)
    assert "noisetune_spec.yaml" in files
    assert any(f.startswith("experiment_state-") for f in files)  # Ray Tune's own
    assert sum(f.endswith("/result.json") for f in files) == 4
    assert not (cwd / "runs").exists()  # nothing written locally
    assert not storage.staging_dir(run).exists()  # the staging copy is gone once uploaded


@pytest.mark.ray
def test_export_and_report_read_the_tables_back_from_the_uri(
    s3_server: S3Server, s3_run: Any, tmp_path: Path
) -> None:
    cwd, uri, _ = s3_run
    run = storage.resolve(uri)
    at_uri = f"{run.path}/results"
    trials = pd.read_parquet(f"{at_uri}/trials.parquet", filesystem=run.filesystem)
    curves = pd.read_parquet(f"{at_uri}/curves.parquet", filesystem=run.filesystem)
    assert len(trials) == 4 and not curves.empty

    out = tmp_path / "trials.parquet"
    exported = noisetune("export", uri, "--format", "parquet", "--out", str(out), cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out), trials)
    exported = noisetune("export", uri, "--format", "csv", "--table", "curves", cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(exported.stdout)), curves)

    pruned = trials[trials["status"] == "pruned"]
    if not pruned.empty:  # the scheduler's reasons went to the URI with the tables
        decisions = run.read_bytes("results/decisions.jsonl").decode()
        assert all(reason in decisions for reason in pruned["reason"])

    for name in ("pareto_front.png", "lr_vs_batch.png"):
        run.filesystem.delete_file(f"{at_uri}/plots/{name}")
    report = noisetune("report", uri, cwd=cwd)
    assert report.returncode == 0, report.stderr
    assert "## Front" in report.stdout
    assert f"figures written to {run.join('results', 'plots')}: pareto_front.png" in report.stderr
    assert run.exists("results/plots/pareto_front.png")  # redrawn at the URI
    assert run.exists("results/plots/lr_vs_batch.png")


@pytest.mark.ray
def test_resume_from_the_uri_reruns_nothing(s3_server: S3Server, s3_run: Any) -> None:
    cwd, uri, _ = s3_run
    run = storage.resolve(uri)
    before = pd.read_parquet(f"{run.path}/results/trials.parquet", filesystem=run.filesystem)
    resumed = noisetune("resume", uri, cwd=cwd, env=s3_server.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(f"{run.path}/results/trials.parquet", filesystem=run.filesystem)
    pd.testing.assert_frame_equal(  # the same trials, with the same wall time: none ran again
        after.set_index("trial_id").sort_index(), before.set_index("trial_id").sort_index()
    )


@pytest.mark.ray
def test_unusable_storage_exits_2_with_one_line(s3_server: S3Server, s3_run: Any) -> None:
    cwd, uri, _ = s3_run
    env = s3_server.env
    existing = noisetune("run", "spec.yaml", "--storage", s3_server.uri("runs"), cwd=cwd, env=env)
    one_line_error(existing, f"{storage.resolve(uri)} already holds a finished sweep")
    assert f"`noisetune report '{uri}'`" in existing.stderr  # quoted: the query has a &

    unknown = noisetune("run", "spec.yaml", "--storage", "foo://bucket/runs", cwd=cwd, env=env)
    one_line_error(unknown, "unknown storage scheme 'foo'")

    no_bucket = s3_server.uri("runs").replace(s3_server.bucket, "nobucket", 1)
    missing = noisetune("run", "spec.yaml", "--storage", no_bucket, cwd=cwd, env=env)
    one_line_error(missing, "bucket 'nobucket' does not exist")

    closed = s3_server.uri("runs").replace(s3_server.endpoint, f"127.0.0.1:{free_port()}")
    unreachable = noisetune("export", closed, "--format", "csv", cwd=cwd, env=env)
    one_line_error(unreachable, "Could not connect")

    not_a_run = noisetune("resume", s3_server.uri("nothing"), cwd=cwd, env=env)
    one_line_error(not_a_run, "not a noisetune run directory")


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_at_an_s3_uri_then_resume_from_it(s3_server: S3Server, tmp_path: Path) -> None:
    """What an interrupted sweep leaves at the URI is enough to resume it: the spec copy
    (uploaded at the start), Tune's state and the tables of what finished."""
    spec = {
        **SPEC, "name": "stopped", "pruning": {"kind": "none"},
        "space": {"batch_size": [16], "lr": [0.01, 0.011, 0.012, 0.013, 0.014, 0.015]},
        "target": {"metric": "loss", "value": 0.0}, "budget": {"max_steps": 1500},
        "search": {"algorithm": "grid", "max_concurrent": 1},
    }  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **s3_server.env}
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", "spec.yaml", "--storage", s3_server.uri("ctrl-c")],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # the progress line
        if "trials done 2" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-3000:]
    uri = s3_server.uri("ctrl-c/stopped")
    assert f"noisetune resume '{uri}'" in stderr
    run = storage.resolve(uri)
    trials = pd.read_parquet(f"{run.path}/results/trials.parquet", filesystem=run.filesystem)
    assert 2 <= (trials["status"] == "exhausted").sum() < 6
    with tempfile.TemporaryDirectory() as tmp:  # Tune's snapshot at the URI
        run.download(Path(tmp), lambda rel: "/" not in rel)
        terminated = [t.trial_id for t in read_trials(Path(tmp)) if t.status == "TERMINATED"]
    # A trial that had sent its last report, but that Tune had not yet marked
    # TERMINATED when Ctrl-C came, runs again from its checkpoint; the others do not.
    assert terminated
    finished = trials.set_index("trial_id")["wall_s"].reindex(terminated)

    resumed = noisetune("resume", uri, cwd=tmp_path, env=s3_server.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(f"{run.path}/results/trials.parquet", filesystem=run.filesystem)
    assert len(trials) == 6 and (trials["status"] == "exhausted").all()
    kept = trials.set_index("trial_id")["wall_s"].reindex(finished.index)
    pd.testing.assert_series_equal(kept, finished)  # the finished ones did not run again
    assert not storage.staging_dir(run).exists()


@pytest.mark.ray
def test_a_sweep_at_a_file_uri(ray_session: None, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/runs"
    outcome = run_sweep(parse_spec({**SPEC, "name": "file", "storage": uri}), progress=False)
    assert outcome.location.is_local
    assert outcome.run_dir == tmp_path.resolve() / "runs" / "file"
    trials = pd.read_parquet(outcome.run_dir / "results" / "trials.parquet")
    exported = noisetune("export", f"{uri}/file", "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    listed = pd.read_csv(io.StringIO(exported.stdout))["trial_id"]
    assert listed.tolist() == trials["trial_id"].tolist()
    again = resume_sweep(f"{uri}/file", progress=False)
    assert sorted(again.tables.trials["trial_id"]) == sorted(trials["trial_id"])
