"""Experiment tracking (`tracking:` in the spec) through Ray Tune's logger callbacks: a
real sweep logged to TensorBoard event files, a local MLflow store and offline W&B, each
read back; a missing tracker package is bad input."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from tuner.config.spec import Tracking, parse_spec
from tuner.runtime import tracking
from tuner.runtime.runner import run_sweep


def _scalar_tags(event_file: Path) -> set[str]:
    """The scalar tags in a TensorBoard event file (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    data, tags, offset = event_file.read_bytes(), set(), 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        tags.update(value.tag for value in event.summary.value)
        offset += 12 + length + 4
    return tags


@pytest.mark.ray
def test_a_sweep_logs_to_tensorboard_mlflow_and_offline_wandb(
    ray_session: None, tmp_path: Path
) -> None:
    spec = parse_spec(
        {
            "name": "tracked",
            "workload": "linear_regression",
            "workload_args": {"dim": 8, "n_train": 2048},
            "target": {"metric": "loss", "value": 0.0},
            "budget": {"max_steps": 20},
            "eval_every": 10,
            "space": {"batch_size": [16, 64], "lr": [0.1]},
            "search": {"algorithm": "grid"},
            "tracking": {"tensorboard": True, "mlflow": {}, "wandb": {"project": "nt-test"}},
            "storage": str(tmp_path / "runs"),
        }
    )
    outcome = run_sweep(spec, progress=False)
    run_dir = outcome.run_dir
    assert len(outcome.tables.trials) == 2

    events = sorted(run_dir.glob("*/events.out.tfevents.*"))
    assert len(events) == 2
    assert {"ray/tune/loss", "ray/tune/b_simple"} <= _scalar_tags(events[0])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert all("loss" in run.data.metrics for run in runs)
    assert {run.data.params["batch_size"] for run in runs} == {"16", "64"}

    offline = sorted((run_dir / "wandb").glob("wandb/offline-run-*"))
    assert len(offline) == 2
    assert all(any(d.glob("*.wandb")) for d in offline)


def test_nothing_is_tracked_by_default(tmp_path: Path) -> None:
    assert tracking.chosen(Tracking()) == []
    assert tracking.tracking_callbacks(Tracking(), tmp_path, "x") == []


def test_a_missing_tracker_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_wandb(name: str, *args: Any) -> Any:
        return None if name == "wandb" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_wandb)
    chosen = Tracking.model_validate({"tensorboard": True, "wandb": {}})
    assert tracking.missing_packages(chosen) == [
        "tracking.wandb: needs the wandb package (pip install 'noisetune[wandb]')"
    ]


def test_local_trackers_are_refused_for_a_run_at_a_uri() -> None:
    local = Tracking.model_validate({"tensorboard": True, "mlflow": {}, "wandb": {}})
    assert tracking.storage_problems(local, run_is_local=True) == []
    problems = tracking.storage_problems(local, run_is_local=False)
    assert [p.split(":")[0] for p in problems] == ["tracking.mlflow", "tracking.wandb"]
    remote = Tracking.model_validate(
        {"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}, "wandb": {"mode": "online"}}
    )
    assert tracking.storage_problems(remote, run_is_local=False) == []
