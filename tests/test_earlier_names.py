"""A sweep an earlier version started pickled its classes under the old module paths."""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Iterator

import pytest

from tuner.runtime.earlier_names import EARLIER_NAMES, accept_earlier_names


@pytest.fixture(autouse=True)
def _earlier_names_removed_after() -> Iterator[None]:
    """The aliases live in sys.modules: take them out again, so that no later test
    imports an old module path without noticing."""
    yield
    for earlier in EARLIER_NAMES:
        sys.modules.pop(earlier, None)


@pytest.mark.parametrize(
    ("earlier", "name"),
    [
        ("tuner.guided", "GuidedCandidates"),
        ("tuner.schedulers", "EpsOptScheduler"),
        ("tuner.schedulers", "SweepState"),
        ("tuner.schedulers", "TrialRecord"),
        ("tuner.schedulers", "Started"),
        ("tuner.schedulers", "PruneRule"),
        ("tuner.search", "NoiseTuneOptunaSearch"),
        ("tuner.tune_loggers", "ReportsCache"),
        ("tuner.progress", "ProgressLine"),
        ("trainables.executors", "single_worker_trial"),
    ],
)
def test_a_pickle_naming_an_earlier_module_loads(earlier: str, name: str) -> None:
    accept_earlier_names()
    loaded = pickle.loads(f"c{earlier}\n{name}\n.".encode())  # protocol 0: GLOBAL
    homes = [importlib.import_module(now) for now in EARLIER_NAMES[earlier]]
    assert any(getattr(home, name, None) is loaded for home in homes)


def test_every_earlier_name_leads_to_a_module() -> None:
    for modules in EARLIER_NAMES.values():
        for now in modules:
            importlib.import_module(now)
