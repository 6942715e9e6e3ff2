"""A workload as `noisetune validate` sees it: built once, evaluated at step 0.

The same code as a trial's first evaluation (`trainables.loop.Trial`), so that what
validate accepts, a trial accepts: the build runs, the metrics are not named like a
report key, and the target metric is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.loop import Trial, World
from trainables.settings import Hyperparameters, TrialSettings


@dataclass(frozen=True)
class Probe:
    """A workload at step 0: its loss, metrics and the target metric's value."""

    loss: float
    metrics: dict[str, float]
    target_value: float


def probe_workload(settings: TrialSettings, hp: Hyperparameters) -> Probe:
    """Build the workload (training seed `hp.seed`) and evaluate the untrained model.

    Raises what the build raises, and TrialInputError for metrics named like a report
    key or a target metric that is not reported."""
    trial = Trial(settings, hp, torch.device("cpu"), World())
    loss, metrics = trial.evaluate()
    return Probe(loss, metrics, trial.target_value(loss, metrics))
