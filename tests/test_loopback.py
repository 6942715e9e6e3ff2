"""Every listener of an embedded Ray is on 127.0.0.1, read from /proc while a sweep runs.

The environment is set against it: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 (which makes Ray
listen on every interface) and a RAY_ADDRESS naming another cluster (which `run` must not
join). The sweep has 2-worker trials, so Ray Train's workers and their torch process
group are among the processes read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _helpers import ROOT, is_loopback_address, run_watching_listeners

HOSTILE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    "RAY_ADDRESS": "127.0.0.1:9",  # nothing there: joining it would fail the run
}


def test_loopback_addresses() -> None:
    assert is_loopback_address("127.0.0.1:80") and is_loopback_address("::1:80")
    assert is_loopback_address("::ffff:127.0.0.1:80")
    assert not is_loopback_address("0.0.0.0:80") and not is_loopback_address(":::80")
    assert not is_loopback_address("192.0.2.2:80")


@pytest.mark.ray
def test_run_with_two_worker_trials_listens_only_on_loopback(tmp_path: Path) -> None:
    spec = {
        "name": "loopback",
        "workload": "linear_regression",
        "workload_args": {"dim": 16, "noise": 0.5, "n_train": 4096},
        "target": {"metric": "loss", "value": 0.16},
        "budget": {"max_steps": 60},
        "eval_every": 10,
        "space": {"batch_size": [32], "lr": [0.25, 1.0]},
        "search": {"algorithm": "grid"},
        "resources": {"workers_per_trial": 2},
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **HOSTILE_ENV}
    result, listeners = run_watching_listeners(
        [sys.executable, "-m", "tuner", "run", str(path)], cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "runs" / "loopback" / "results" / "trials.parquet")
    assert len(trials) == 2
    names = {name for name, _ in listeners}
    # It read a running sweep: Ray's own servers and the Train workers of a trial.
    assert {"gcs_server", "raylet"} <= names, listeners
    assert any("RayTrainWo" in name for name in names), listeners
    outside = sorted(
        (name, address) for name, address in listeners if not is_loopback_address(address)
    )
    assert outside == [], outside
