"""The Optuna search algorithms over the spec's joint space, and what they minimise.

(`random` and `grid` draw their candidates with the space's one sampler,
tuner.strategy.candidates; eps-guided is tuner.strategy.guided.)

- `optuna-tpe`, `optuna-nsga2`: `NoiseTuneOptunaSearch`, an OptunaSearch over Optuna
  distributions (`optuna_space`), seeded, wrapped in a ConcurrencyLimiter of
  `search.max_concurrent`. What Optuna minimises is computed here,
  on the driver, from the keys every report carries (`Objective`); the workers know
  nothing of it.

Objective (all in log units, so that a value reads as "log of the steps this trial needs"):
- reached:   log(steps_to_target)                     [NSGA-II also log(examples_to_target)]
- exhausted: log(steps taken) + log(1 + gap), gap = (target_value − target)/|target| for
  a target the metric falls to (mode min; (target − target_value)/|target| for one it
  rises to), i.e. the steps it would need if the target metric kept falling like 1/t
  towards 0 (T·target_value/target for a positive target); capped at
  `MAX_GAP_PENALTY`. Every exhausted trial scores at least the log of its budget, so it
  ranks behind every trial that reached the target within the same budget, and closer
  misses rank better.
- stalled:   log(its budget) + log(1 + gap): as if it had spent its whole budget
  without getting closer (it stopped because it was not getting closer).
- diverged:  the worst value of the sweep, log(largest budget) + `DIVERGED_PENALTY`,
  beyond any exhausted trial: TPE must learn that those learning rates are bad (FAIL
  would make it ignore them and sample there again).
- stopped by a scheduler (its last report is still "running"): PRUNED, with no value.
  Its penalised log-steps at every report is Optuna's intermediate value, which TPE uses
  to rank pruned trials (furthest step first, then value).
- errored: FAIL.
TPE and NSGA-II only use the ranking of these values (NSGA-II's crowding distance also
their spacing, which log units make even along a log-log front).

What TPE finds: one objective over the joint space ranks large batches first (S(B) falls
with B), so past its start-up trials TPE concentrates on the batch sizes that need the
fewest steps. It is multivariate, so the lr it proposes moves with B (eps_opt(B) grows
with B). For the best lr at every batch size use optuna-nsga2, whose Pareto set spans the
batch sizes, or a TPE sweep per batch size (a one-value batch_size list).
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables import keys
from tuner.config.spec import Budget, DimModel, Spec

logger = logging.getLogger(__name__)

OPTUNA_ALGORITHMS = ("optuna-tpe", "optuna-nsga2")
MAX_GAP_PENALTY = math.log(1e3)  # a miss by more than 1000x counts as 1000x
DIVERGED_PENALTY = math.log(1e4)  # beyond any exhausted trial


# --- Optuna distributions -------------------------------------------------------------------


def _distribution(dim: DimModel) -> BaseDistribution:
    if dim.categorical:
        return CategoricalDistribution(list(dim.points()))
    lo, hi = dim.points()
    if dim.kind in ("uniform", "log_uniform"):
        return FloatDistribution(float(lo), float(hi), log=dim.kind == "log_uniform")
    if dim.kind in ("int_uniform", "log_int_uniform"):  # Optuna's int bounds are inclusive
        return IntDistribution(int(lo), int(hi), log=dim.kind == "log_int_uniform")
    raise ValueError(f"unknown dimension kind {dim.kind!r}")


def optuna_space(spec: Spec) -> dict[str, BaseDistribution]:
    """Optuna distributions for the four dimensions: lists are categorical, ranges keep
    their log flag, int ranges include both bounds (as in the spec)."""
    return {name: _distribution(dim) for name, dim in spec.space.dimensions().items()}


# --- the objective ----------------------------------------------------------------------------


def _log(value: float) -> float:
    return math.log(max(float(value), 1.0))


def _number(result: Mapping[str, Any], key: str, fallback: float = math.nan) -> float:
    """result[key] as a float; `fallback` when it is missing or not a finite number."""
    try:
        value = float(result[key])
    except (KeyError, TypeError, ValueError):
        return fallback
    return value if math.isfinite(value) else fallback


@dataclass(frozen=True)
class Objective:
    """What Optuna minimises, computed on the driver from a trial's report (module doc).

    `multi`: NSGA-II's (log steps, log examples) to target; else TPE's log steps alone.
    `worst`: the diverged value, (log steps, log examples). `budget`: the spec's per-trial
    budget, which a stalled trial is scored at (without it, at the step it stopped).
    """

    target: float
    worst: tuple[float, float]
    multi: bool = False
    mode: str = "min"
    budget: Budget | None = None

    @classmethod
    def from_spec(cls, spec: Spec) -> Objective:
        """The objective of `spec`'s algorithm, target and budget."""
        sizes = [int(b) for b in spec.space.batch_size.points()]  # a range's bounds
        most_steps = max(spec.max_steps_for(b) for b in sizes)
        most_examples = max(spec.max_steps_for(b) * b for b in sizes)
        return cls(
            target=spec.target.value,
            worst=(_log(most_steps) + DIVERGED_PENALTY, _log(most_examples) + DIVERGED_PENALTY),
            multi=spec.search.algorithm == "optuna-nsga2",
            mode=spec.target.mode,
            budget=spec.budget,
        )

    @property
    def names(self) -> list[str]:
        """The study's metric names."""
        return ["log_steps_to_target", "log_examples_to_target"][: 2 if self.multi else 1]

    @property
    def tune_metric(self) -> str | list[str]:
        """The result keys the objective stands for; Tune checks every report has them."""
        return (
            [keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET] if self.multi else keys.STEPS_TO_TARGET
        )

    @property
    def tune_mode(self) -> str | list[str]:
        return ["min", "min"] if self.multi else "min"

    def gap_penalty(self, target_value: float) -> float:
        """log(1 + relative distance short of the target), capped at MAX_GAP_PENALTY."""
        scale = abs(self.target) or 1.0
        short = target_value - self.target if self.mode == "min" else self.target - target_value
        return min(math.log1p(max(0.0, short / scale)), MAX_GAP_PENALTY)

    def scores(self, result: Mapping[str, Any]) -> tuple[float, float]:
        """(log steps, log examples) to target, penalised if not reached; a running
        report scores as if the trial were exhausted at this step."""
        status = result.get(keys.TRIAL_STATUS, keys.RUNNING)
        step, examples = _number(result, keys.STEP, 0.0), _number(result, keys.EXAMPLES, 0.0)
        if status == keys.REACHED:
            steps = _number(result, keys.STEPS_TO_TARGET, step)
            return _log(steps), _log(_number(result, keys.EXAMPLES_TO_TARGET, examples))
        value = _number(result, keys.TARGET_VALUE)
        if status == keys.DIVERGED or math.isnan(value):
            return self.worst
        penalty = self.gap_penalty(value)
        if status == keys.STALLED and self.budget is not None and step > 0:
            # As if it had spent its own budget without getting closer.
            batch_size = round(examples / step)
            steps = self.budget.max_steps_for(batch_size)
            return _log(steps) + penalty, _log(steps * batch_size) + penalty
        return _log(step) + penalty, _log(examples) + penalty

    def values(self, result: Mapping[str, Any] | None) -> list[float] | None:
        """The values to tell Optuna for a finished trial; None if it has none (pruned)."""
        if not result:
            return None
        status = result.get(keys.TRIAL_STATUS, keys.RUNNING)
        if status not in keys.SELF_ENDED:
            return None  # stopped by a scheduler while running
        return list(self.scores(result)[: len(self.names)])

    def intermediate(self, result: Mapping[str, Any]) -> float:
        """TPE's intermediate value at this report: the penalised log steps."""
        return self.scores(result)[0]


# --- the searcher -------------------------------------------------------------------------


class NoiseTuneOptunaSearch(OptunaSearch):
    """OptunaSearch told `Objective` values, with scheduler-stopped trials PRUNED.

    The Tune-facing metric is steps_to_target (and examples_to_target): every report has
    those keys, and the searcher minimises them, penalised as the module doc says.
    The study is `.study`.
    """

    def __init__(
        self,
        space: dict[str, BaseDistribution],
        objective: Objective,
        sampler: optuna.samplers.BaseSampler,
    ) -> None:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
        try:
            super().__init__(
                space=space,
                metric=objective.tune_metric,
                mode=objective.tune_mode,
                sampler=sampler,
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.objective = objective
        self._reported: dict[str, int] = {}  # the last step reported, by Tune trial id
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(objective.names)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (trials, states, values, best_trials)."""
        return cast(optuna.Study, self._ot_study)  # set up in __init__, as a space is given

    def trials_by_tune_id(self) -> dict[str, optuna.trial.FrozenTrial]:
        """The study's trials keyed by Tune's trial id."""
        frozen = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        return {tid: frozen[t.number] for tid, t in self._ot_trials.items()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Single objective: report the penalised log steps at our own step counter."""
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        if self.objective.multi or not result or trial_id not in self._ot_trials:
            return  # Optuna keeps no intermediate values for several objectives
        step = result.get(keys.STEP)
        if step is None or self._reported.get(trial_id, -1) >= int(step):
            return
        self._ot_trials[trial_id].report(self.objective.intermediate(result), int(step))
        self._reported[trial_id] = int(step)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell Optuna COMPLETE with the objective, PRUNED if stopped early, FAIL on error."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            logger.warning("ignoring a repeated or unknown completion of trial %s", trial_id)
            return
        values = None if error else self.objective.values(result)
        if error:
            state = TrialState.FAIL
        elif values is None:
            state = TrialState.PRUNED
            # Tune does not pass on the report a scheduler stopped the trial at.
            self._report(trial_id, result)
        else:
            state = TrialState.COMPLETE
        told = values if values is None or self.objective.multi else values[0]
        self.study.tell(self._ot_trials[trial_id], told, state=state)
        self._completed_trials.add(trial_id)


_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class _PicklableLocks:
    """Pickles a sampler whose instance holds thread locks (optuna 5.1's GA samplers keep
    one): Tune pickles the searcher, with its sampler, when the sweep starts and at every
    experiment snapshot. Each lock is recreated, unheld, on unpickling."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        locks = {}
        for name, value in state.items():
            if isinstance(value, (_LOCK, _RLOCK)):
                locks[name] = isinstance(value, _RLOCK)
        for name in locks:
            state[name] = None
        state["_picklable_locks"] = locks
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        locks = state.pop("_picklable_locks", {})
        vars(self).update(state)
        for name, reentrant in locks.items():
            setattr(self, name, threading.RLock() if reentrant else threading.Lock())


class NSGAIISampler(_PicklableLocks, optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable whatever locks its version holds."""


class TPESampler(_PicklableLocks, optuna.samplers.TPESampler):
    """Optuna's TPE sampler, picklable whatever locks its version holds."""


def _sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    """A seeded sampler; start-up and population sizes scale with num_samples.

    Optuna's defaults (10 random start-up trials for TPE, a population of 50 for
    NSGA-II) assume hundreds of trials; at noisetune's 16-64 a quarter of the budget goes
    to random start-up, and NSGA-II gets several generations.
    """
    n = spec.search.num_samples
    seed = spec.search.seed
    if spec.search.algorithm == "optuna-nsga2":
        return NSGAIISampler(population_size=min(50, max(4, n // 4)), seed=seed)
    # multivariate: the best lr moves with the batch size (eps_opt(B)), so model them jointly.
    return TPESampler(n_startup_trials=min(10, max(4, n // 4)), multivariate=True, seed=seed)


def optuna_search(spec: Spec) -> NoiseTuneOptunaSearch:
    """The Optuna searcher of `spec` (not yet limited in concurrency)."""
    return NoiseTuneOptunaSearch(optuna_space(spec), Objective.from_spec(spec), _sampler(spec))


def search_algorithm(spec: Spec) -> Searcher:
    """Optuna: the searcher behind a ConcurrencyLimiter of `search.max_concurrent` (the
    searcher itself is `.searcher`)."""
    algorithm = spec.search.algorithm
    if algorithm in OPTUNA_ALGORITHMS:
        return ConcurrencyLimiter(optuna_search(spec), max_concurrent=spec.search.max_concurrent)
    # Grid and random draw candidates (tuner.strategy.candidates); eps-guided shares the
    # eps_opt scheduler's state: tuner.runtime.runner.search_plan builds those.
    raise ValueError(f"search.algorithm {algorithm!r} is built by search_plan")


def expected_trials(spec: Spec) -> int | None:
    """How many trials a finished sweep has (None when the searcher decides)."""
    if spec.search.algorithm == "grid":
        axes = [len(d.points()) for d in spec.space.dimensions().values() if d.categorical]
        return math.prod(axes) * spec.search.num_samples * spec.search.seeds
    return spec.search.num_samples * spec.search.seeds
