"""Experiment tracking: a sweep logged to the tools practitioners already watch, through
Ray Tune's own logger callbacks, as the spec's `tracking` section asks (off by default).

- TensorBoard: Tune's `TBXLoggerCallback`, event files in each trial's directory.
- MLflow: Tune's `MLflowLoggerCallback`, one MLflow run per trial in a local store
  (`sqlite:///<run dir>/mlflow.db` unless `tracking_uri` is given; MLflow 3 refuses its
  old file store, and SQLAlchemy comes with Optuna).
- Weights & Biases: Tune's `WandbLoggerCallback`, offline by default (files under
  `<run dir>/wandb`, `wandb sync` uploads them later). Credentials are never in the spec:
  online mode reads WANDB_API_KEY from the environment, as wandb itself does.

A package a choice needs and that is not installed is bad input before Ray starts
(`missing_packages`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from tuner.config.spec import Tracking

MLFLOW_DB = "mlflow.db"  # the default MLflow store, in the run directory
# What each tracker imports, and how to install it.
PACKAGES = {
    "tensorboard": ("tensorboardX", "pip install tensorboardX"),
    "mlflow": ("mlflow", "pip install 'noisetune[mlflow]'"),
    "wandb": ("wandb", "pip install 'noisetune[wandb]'"),
}


def chosen(tracking: Tracking) -> list[str]:
    """The trackers the spec turns on, in PACKAGES order."""
    on = {"tensorboard": tracking.tensorboard, "mlflow": tracking.mlflow, "wandb": tracking.wandb}
    return [name for name in PACKAGES if on[name]]


def missing_packages(tracking: Tracking) -> list[str]:
    """One line per chosen tracker whose package is not installed."""
    problems = []
    for name in chosen(tracking):
        module, install = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            problems.append(f"tracking.{name}: needs the {module} package ({install})")
    return problems


def storage_problems(tracking: Tracking, run_is_local: bool) -> list[str]:
    """Trackers that would write only to this driver's disk while the run lives at a URI
    (its staging directory is cleared when the sweep ends): one line each."""
    if run_is_local:
        return []
    problems = []
    if tracking.mlflow is not None and tracking.mlflow.tracking_uri is None:
        problems.append(
            "tracking.mlflow: with storage at a URI, give tracking_uri (the default store "
            "in the run directory would stay on this machine's staging disk)"
        )
    if tracking.wandb is not None and tracking.wandb.mode == "offline":
        problems.append(
            "tracking.wandb: offline runs are written to this machine's staging disk, which "
            "a run at a URI clears when it ends: use mode online, or local storage"
        )
    return problems


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """The process environment with `values` set, as it was afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Wandb(WandbLoggerCallback):
    """Tune's W&B logger; offline, it asks for no API key (Tune checks WANDB_MODE before
    it looks for one, so the mode is set while it sets up)."""

    def __init__(self, project: str, mode: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, mode=mode, dir=str(directory), log_config=True)
        self.mode = mode

    def setup(self, *args: Any, **kwargs: Any) -> None:
        with _environment(WANDB_MODE=self.mode):
            super().setup(*args, **kwargs)


def tracking_callbacks(tracking: Tracking, run_dir: Path, name: str) -> list[Callback]:
    """Tune callbacks for the trackers the spec turns on (`run_dir`: where this driver
    writes the run's own files)."""
    callbacks: list[Callback] = []
    if tracking.tensorboard:
        callbacks.append(TBXLoggerCallback())
    if tracking.mlflow is not None:
        uri = tracking.mlflow.tracking_uri or f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=uri, experiment_name=tracking.mlflow.experiment or name
            )
        )
    if tracking.wandb is not None:
        callbacks.append(
            Wandb(tracking.wandb.project or name, tracking.wandb.mode, run_dir / "wandb")
        )
    return callbacks
