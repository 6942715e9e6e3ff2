"""Module names of earlier noisetune versions, for the pickles a sweep they started left.

`Tuner.restore` unpickles the searcher, the scheduler and the run config (callbacks)
that the interrupted sweep saved, by the module path each class had then. A sweep
interrupted under a version before the subpackages (tuner.guided, trainables.executors,
...) is resumed by this one once those names lead to where the classes are now; a
module that was split is the union of the modules it became.
"""

from __future__ import annotations

import importlib
import sys
import types

EARLIER_NAMES: dict[str, tuple[str, ...]] = {
    "tuner.spec": ("tuner.config.spec",),
    "tuner.search": ("tuner.strategy.search",),
    "tuner.guided": ("tuner.strategy.guided",),
    "tuner.schedulers": (
        "tuner.strategy.schedulers",
        "tuner.strategy.records",
        "tuner.strategy.eps_opt_rules",
        "tuner.strategy.start_order",
    ),
    "tuner.plots": ("tuner.results.plots",),
    "tuner.tune_state": ("tuner.results.tune_state",),
    "tuner.runner": ("tuner.runtime.runner",),
    "tuner.ray_runtime": ("tuner.runtime.ray_runtime",),
    "tuner.progress": ("tuner.runtime.progress",),
    "tuner.storage": ("tuner.runtime.storage",),
    "tuner.tune_loggers": ("tuner.runtime.tune_loggers",),
    "tuner.jobs": ("tuner.cluster.jobs",),
    "trainables.executors": ("trainables.execution.executors",),
    "trainables.process_group": ("trainables.execution.process_group",),
}


def accept_earlier_names() -> None:
    """Let pickles name the modules as earlier versions did (idempotent). `tuner.results`
    is a package now; no pickle of a sweep holds an object of the old results module."""
    for earlier, now in EARLIER_NAMES.items():
        if earlier in sys.modules:
            continue
        if len(now) == 1:
            sys.modules[earlier] = importlib.import_module(now[0])
            continue
        merged = types.ModuleType(earlier)
        for name in now:
            merged.__dict__.update(
                (k, v)
                for k, v in vars(importlib.import_module(name)).items()
                if not k.startswith("__")
            )
        sys.modules[earlier] = merged
