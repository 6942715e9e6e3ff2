"""Which of Ray Tune's per-trial loggers a sweep keeps, and what it adds to them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from tuner.results.tables import cache_trial_reports

logger = logging.getLogger(__name__)


class NoTensorBoard(TBXLoggerCallback):
    """Takes the place of the TensorBoard logger Tune adds to every sweep unless one is
    given: nothing reads its event files, and writing them (a writer per trial, a flush
    and an fsync per result) cost the driver about 15 ms per tiny trial (BENCHMARKS.md).
    Tune's JSON and CSV loggers stay: tuner.results.tune_state reads result.json."""

    _SAVED_FILE_TEMPLATES: list[str] = []  # noqa: RUF012  (Tune's class attribute)

    def __init__(self) -> None:  # no SummaryWriter
        pass

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


class ReportsCache(Callback):
    """As each trial ends (completed, stopped or errored), parse its result.json once
    into the Arrow file that `build_tables` reads instead
    (`cache_trial_reports`). Tune's JSON logger flushes after every report, so
    the file is whole by then; the driver is mostly idle during a sweep, and at the end
    the tables of 10,000 trials are read, not parsed (BENCHMARKS.md). A trial whose
    cache cannot be written is parsed at the end as before."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._cache(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._cache(trial)

    @staticmethod
    def _cache(trial: Any) -> None:
        if trial.local_path is None:
            return
        try:
            cache_trial_reports(Path(trial.local_path))
        except OSError as exc:  # a full disk must not end the sweep
            logger.warning("no reports cache for trial %s: %s", trial.trial_id, exc)
