"""Module names of earlier noisetune versions, for the pickles a sweep they started left.

`Tuner.restore` unpickles the searcher, the scheduler and the run config (callbacks)
that the interrupted sweep saved, by the module path each class had then. A sweep
interrupted under a version before the subpackages (tuner.guided, trainables.executors,
...) is resumed by this one once those names lead to where the classes are now.
"""

from __future__ import annotations

import importlib
import sys

EARLIER_NAMES = {
    "tuner.spec": "tuner.config.spec",
    "tuner.search": "tuner.strategy.search",
    "tuner.guided": "tuner.strategy.guided",
    "tuner.schedulers": "tuner.strategy.schedulers",
    "tuner.plots": "tuner.results.plots",
    "tuner.tune_state": "tuner.results.tune_state",
    "tuner.runner": "tuner.runtime.runner",
    "tuner.ray_runtime": "tuner.runtime.ray_runtime",
    "tuner.progress": "tuner.runtime.progress",
    "tuner.storage": "tuner.runtime.storage",
    "tuner.tune_loggers": "tuner.runtime.tune_loggers",
    "tuner.jobs": "tuner.cluster.jobs",
    "trainables.executors": "trainables.execution.executors",
    "trainables.process_group": "trainables.execution.process_group",
}


def accept_earlier_names() -> None:
    """Let pickles name the modules as earlier versions did (idempotent). `tuner.results`
    is a package now; no pickle of a sweep holds an object of the old results module."""
    for earlier, now in EARLIER_NAMES.items():
        sys.modules.setdefault(earlier, importlib.import_module(now))
