"""The compact progress line, fed plain trial events (no Ray)."""

from __future__ import annotations

import io
import pickle
import time
from types import SimpleNamespace

from trainables import keys
from tuner.runtime.progress import ProgressLine, SweepCounts


def test_counts_and_best_steps_per_batch_size() -> None:
    counts = SweepCounts()
    counts.record("a", 64, {keys.TRIAL_STATUS: keys.REACHED, keys.STEPS_TO_TARGET: 120})
    counts.record("b", 64, {keys.TRIAL_STATUS: keys.REACHED, keys.STEPS_TO_TARGET: 90})
    counts.record("c", 16, {keys.TRIAL_STATUS: keys.DIVERGED})
    counts.record("d", 16, {keys.TRIAL_STATUS: keys.RUNNING})
    counts.finish("d", failed=False)  # stopped by the scheduler while running
    counts.record("e", 16, {keys.TRIAL_STATUS: keys.RUNNING})
    counts.finish("e", failed=True)
    line = counts.line(running=1, elapsed_s=12.0)
    assert "trials done 5 running 1" in line
    assert "reached 2 pruned 1 diverged 1 exhausted 0 error 1" in line
    assert "best steps B64:90" in line


def test_prints_only_when_something_changed_and_pickles() -> None:
    stream = io.StringIO()
    clock = iter([0.0, 5.0, 10.0, 15.0])
    progress = ProgressLine(stream=stream, every_s=1.0, clock=lambda: next(clock))
    trial = SimpleNamespace(trial_id="t1", config={keys.BATCH_SIZE: 32}, status="RUNNING")
    progress.on_trial_result(0, [trial], trial, {keys.TRIAL_STATUS: keys.RUNNING})
    progress.on_step_end(1, [trial])  # nothing new: no second line
    progress.on_trial_result(
        2, [trial], trial, {keys.TRIAL_STATUS: keys.REACHED, keys.STEPS_TO_TARGET: 40}
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "B32:40" in lines[1]
    progress.clock = time.monotonic  # the default; a test lambda does not pickle
    restored = pickle.loads(pickle.dumps(progress))  # Tune pickles its callbacks
    assert restored.counts.best_steps == {32: 40}
