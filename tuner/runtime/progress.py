"""A compact live view of a running sweep (Tune's full tables stay behind --verbose)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from trainables import keys

TUNE_RUNNING = "RUNNING"
# Tune's own lines about failed trials (a traceback per trial): noisetune prints each
# distinct error once at the end instead, with where its traceback is.
_TRIAL_ERROR_LOGS = {
    "ray.tune.execution.tune_controller": "Trial task failed for trial",
    "ray.tune.tune": "Trials did not complete",
}


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_trial_errors() -> None:
    """Drop Tune's per-trial error tracebacks from the console (they stay in each
    trial's error.txt)."""
    for name, prefix in _TRIAL_ERROR_LOGS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(prefix))


@dataclass
class SweepCounts:
    """What the progress line shows; updated from Tune's trial events."""

    statuses: dict[str, str] = field(default_factory=dict)  # trial id -> our status
    best_steps: dict[int, int] = field(default_factory=dict)  # batch size -> fewest steps

    def record(self, trial_id: str, batch_size: int, result: dict[str, Any]) -> None:
        status = result.get(keys.TRIAL_STATUS, keys.RUNNING)
        self.statuses[trial_id] = status
        steps = result.get(keys.STEPS_TO_TARGET, math.nan)
        if status == keys.REACHED and math.isfinite(steps):
            best = self.best_steps.get(batch_size)
            self.best_steps[batch_size] = int(steps) if best is None else min(best, int(steps))

    def finish(self, trial_id: str, failed: bool) -> None:
        status = self.statuses.get(trial_id, keys.RUNNING)
        if failed:
            self.statuses[trial_id] = keys.ERROR
        elif status == keys.RUNNING:
            self.statuses[trial_id] = keys.PRUNED  # stopped by the scheduler

    def line(self, running: int, elapsed_s: float) -> str:
        counts = dict.fromkeys(keys.FINAL_STATUSES, 0)
        for status in self.statuses.values():
            if status in counts:
                counts[status] += 1
        done = sum(counts.values())
        best = " ".join(f"B{b}:{s}" for b, s in sorted(self.best_steps.items())) or "-"
        rare = "".join(f" {s} {counts[s]}" for s in (keys.STALLED, keys.ERROR) if counts[s])
        return (
            f"[{elapsed_s:6.0f}s] trials done {done} running {running} | "
            f"reached {counts[keys.REACHED]} pruned {counts[keys.PRUNED]} "
            f"diverged {counts[keys.DIVERGED]} exhausted {counts[keys.EXHAUSTED]}{rare} | "
            f"best steps {best}"
        )


class ProgressLine(Callback):
    """Prints one status line, rewritten in place on a terminal, at most every `every_s`."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts = SweepCounts()
        self._stream, self.every_s, self.clock = stream, every_s, clock
        self.started = clock()
        self.last_print = -math.inf
        self.last_line = ""

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; a stream does not pickle.
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    def _show(self, trials: list[Any], force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_print < self.every_s:
            return
        running = sum(1 for t in trials if t.status == TUNE_RUNNING)
        state = self.counts.line(running, 0.0)
        if state == self.last_line and not force:
            return
        self.last_print, self.last_line = now, state
        line = self.counts.line(running, now - self.started)
        if self.stream.isatty():
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.counts.record(trial.trial_id, int(trial.config.get(keys.BATCH_SIZE, 0)), result)
        self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.counts.finish(trial.trial_id, failed=False)
        self._show(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.counts.finish(trial.trial_id, failed=True)
        self._show(trials)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._show(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._show(trials, force=True)
        if self.stream.isatty():
            self.stream.write("\n")
        self.stream.flush()
