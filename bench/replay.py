"""Replay a search strategy on recorded learning curves (a tabular benchmark).

The strategy's real searcher and scheduler objects (noisetune's and Ray Tune 2.60's) are
driven by a small discrete-event loop standing in for Tune's controller: `concurrency`
slots; a trial's reports arrive at the wall times they were recorded at; a scheduler's
STOP ends the trial at that report; a finished trial frees its slot and the searcher
proposes the next. Examples spent are counted report by report, and the running trials'
progress between reports is interpolated at the moment the front first comes within
`tolerance` of the grid's at every batch size.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from ray.tune.schedulers import TrialScheduler

from trainables import keys

CONFIG_COLUMNS = list(keys.HYPERPARAMETERS)
PENDING, RUNNING, TERMINATED = "PENDING", "RUNNING", "TERMINATED"
ConfigKey = tuple[int, float, float, int]  # batch size, lr, momentum, warmup steps


def config_key(config: dict[str, Any]) -> ConfigKey:
    return (
        int(config[keys.BATCH_SIZE]),
        float(config[keys.LR]),
        float(config.get(keys.MOMENTUM, 0.0)),
        int(config.get(keys.WARMUP_STEPS, 0)),
    )


class Curves:
    """Every recorded configuration's reports, in step order."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.reports: dict[ConfigKey, list[dict[str, Any]]] = {}
        for config, group in frame.groupby(CONFIG_COLUMNS, sort=False):
            rows = group.sort_values(keys.STEP).to_dict("records")
            self.reports[config_key(dict(zip(CONFIG_COLUMNS, config, strict=True)))] = rows

    def __getitem__(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self.reports[config_key(config)]
        except KeyError:
            raise KeyError(f"no recorded curve for {config_key(config)}") from None

    def best_configs(self) -> dict[int, tuple[ConfigKey, float]]:
        """Per batch size the configuration that reached the target in the fewest steps
        over the whole grid, with those steps."""
        best: dict[int, tuple[ConfigKey, float]] = {}
        for key, rows in self.reports.items():
            last = rows[-1]
            if last[keys.TRIAL_STATUS] != keys.REACHED:
                continue
            steps = float(last[keys.STEPS_TO_TARGET])
            if key[0] not in best or steps < best[key[0]][1]:
                best[key[0]] = (key, steps)
        return best

    def best_steps(self) -> dict[int, float]:
        """Per batch size the fewest steps to the target over the whole grid."""
        return {b: steps for b, (_, steps) in self.best_configs().items()}

    def total_examples(self) -> int:
        return sum(int(rows[-1][keys.STEP]) * key[0] for key, rows in self.reports.items())

    def total_wall_s(self) -> float:
        return sum(float(rows[-1][keys.WALL_S]) for rows in self.reports.values())


@dataclass(eq=False)
class SimTrial:
    """What Tune's schedulers read of a trial."""

    trial_id: str
    config: dict[str, Any]
    status: str = PENDING
    last_result: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return id(self)

    def __str__(self) -> str:
        return self.trial_id


class SimController:
    """The part of Tune's controller schedulers look at."""

    def __init__(self) -> None:
        self.trials: list[SimTrial] = []

    def get_trials(self) -> list[SimTrial]:
        return self.trials

    def get_live_trials(self) -> list[SimTrial]:
        return [t for t in self.trials if t.status != TERMINATED]


@dataclass
class Outcome:
    """What one replayed sweep spent, and when its front came within tolerance."""

    trials: int
    total_examples: int
    total_wall_s: float
    makespan_s: float
    examples_to_front: float  # inf if the front never came within tolerance
    wall_to_front_s: float
    front: dict[int, float]
    picks: dict[int, ConfigKey]  # per batch size the front's config


@dataclass
class _Running:
    trial: SimTrial
    rows: list[dict[str, Any]]
    index: int = 0  # the next report
    started_s: float = 0.0


def _progress(run: _Running, now: float) -> float:
    """Steps taken by `now`, interpolated between the reports around it."""
    rows = run.rows
    done = rows[run.index - 1] if run.index > 0 else None
    ahead = rows[min(run.index, len(rows) - 1)]
    t0 = run.started_s + (float(done[keys.WALL_S]) if done else 0.0)
    t1 = run.started_s + float(ahead[keys.WALL_S])
    s0 = float(done[keys.STEP]) if done else 0.0
    s1 = float(ahead[keys.STEP])
    if t1 <= t0:
        return s0
    return s0 + (s1 - s0) * min(1.0, max(0.0, (now - t0) / (t1 - t0)))


def replay(
    curves: Curves,
    suggest: Callable[[str], dict[str, Any] | None],
    scheduler: TrialScheduler,
    concurrency: int,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    on_complete: Callable[[str, dict[str, Any]], None] | None = None,
    tolerance: float = 0.10,
    per_trial_s: float = 0.0,
) -> Outcome:
    """Run one strategy to its end; `suggest(trial_id)` returns a config or None (done)."""
    controller = SimController()
    reference = curves.best_steps()
    events: list[tuple[float, int, _Running]] = []
    spent_steps: dict[str, float] = {}  # steps reported so far, per trial
    examples = 0.0
    front: dict[int, float] = {}
    picks: dict[int, ConfigKey] = {}
    hit: tuple[float, float] | None = None
    now, counter, exhausted_searcher = 0.0, 0, False

    def start_more() -> None:
        nonlocal exhausted_searcher, counter
        while not exhausted_searcher and len(events) < concurrency:
            trial_id = f"t{len(controller.trials):05d}"
            config = suggest(trial_id)
            if config is None:
                exhausted_searcher = True
                return
            trial = SimTrial(trial_id, dict(config))
            controller.trials.append(trial)
            scheduler.on_trial_add(controller, trial)
            chosen = scheduler.choose_trial_to_run(controller) or trial
            chosen.status = RUNNING
            run = _Running(chosen, curves[chosen.config], started_s=now + per_trial_s)
            counter += 1
            heapq.heappush(events, (run.started_s + float(run.rows[0][keys.WALL_S]), counter, run))

    def within_tolerance() -> bool:
        return all(
            b in front and front[b] <= (1 + tolerance) * steps for b, steps in reference.items()
        )

    start_more()
    while events:
        now, _, run = heapq.heappop(events)
        trial, row = run.trial, run.rows[run.index]
        batch_size = int(trial.config[keys.BATCH_SIZE])
        taken = float(row[keys.STEP])
        examples += (taken - spent_steps.get(trial.trial_id, 0.0)) * batch_size
        spent_steps[trial.trial_id] = taken
        run.index += 1
        trial.last_result = row
        if on_result is not None:
            on_result(trial.trial_id, row)
        decision = scheduler.on_trial_result(controller, trial, row)
        ended = row[keys.TRIAL_STATUS] != keys.RUNNING or run.index == len(run.rows)
        if row[keys.TRIAL_STATUS] == keys.REACHED:
            if taken < front.get(batch_size, math.inf):
                front[batch_size] = taken
                picks[batch_size] = config_key(trial.config)
            if hit is None and within_tolerance():
                in_flight = sum(
                    (_progress(other, now) - spent_steps.get(other.trial.trial_id, 0.0))
                    * int(other.trial.config[keys.BATCH_SIZE])
                    for _, _, other in events
                )
                hit = (examples + in_flight, now)
        if ended or decision == TrialScheduler.STOP:
            trial.status = TERMINATED
            scheduler.on_trial_complete(controller, trial, row)
            if on_complete is not None:
                on_complete(trial.trial_id, row)
            start_more()
        else:
            counter += 1
            next_at = run.started_s + float(run.rows[run.index][keys.WALL_S])
            heapq.heappush(events, (next_at, counter, run))
    wall = sum(float(t.last_result.get(keys.WALL_S, 0.0)) + per_trial_s for t in controller.trials)
    return Outcome(
        trials=len(controller.trials),
        total_examples=int(examples),
        total_wall_s=wall,
        makespan_s=now,
        examples_to_front=hit[0] if hit else math.inf,
        wall_to_front_s=hit[1] if hit else math.inf,
        front=front,
        picks=picks,
    )
