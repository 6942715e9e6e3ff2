"""A workload as `noisetune validate` sees it: built once, evaluated at step 0.

The same code as a trial's first evaluation (`trainables.loop.TrainingRun`), so that
what validate accepts, a trial accepts: the build runs, the metrics are not named like a
report key, and the target metric is reported.
"""

from __future__ import annotations

import torch

from trainables.loop import TrainingRun
from trainables.parts.evaluator import Evaluation
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings


def probe_workload(settings: TrialSettings, hp: Hyperparameters) -> Evaluation:
    """Build the workload (training seed `hp.seed`) and evaluate the untrained model.

    Raises what the build raises, and TrialInputError for metrics named like a report
    key or a target metric that is not reported."""
    return TrainingRun(settings, hp, torch.device("cpu"), World()).evaluator.evaluate()
