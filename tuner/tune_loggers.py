"""Which of Ray Tune's per-trial loggers a sweep keeps."""

from __future__ import annotations

from typing import Any

from ray.tune.logger import TBXLoggerCallback


class NoTensorBoard(TBXLoggerCallback):
    """Takes the place of the TensorBoard logger Tune adds to every sweep unless one is
    given: nothing reads its event files, and writing them (a writer per trial, a flush
    and an fsync per result) cost the driver about 15 ms per tiny trial (BENCHMARKS.md).
    Tune's JSON and CSV loggers stay: tuner.tune_state reads result.json."""

    _SAVED_FILE_TEMPLATES: list[str] = []  # noqa: RUF012  (Tune's class attribute)

    def __init__(self) -> None:  # no SummaryWriter
        pass

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass
