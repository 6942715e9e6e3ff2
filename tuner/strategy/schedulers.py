"""Trial schedulers: none (FIFO), ASHA as the generic baseline, and front / eps_opt pruning.

`EpsOptScheduler` wraps another scheduler (FIFO or ASHA) and delegates everything it
does not decide itself (the Syne Tune pattern). Its decisions are the pure functions of
tuner.strategy.eps_opt_rules over the records of tuner.strategy.records; `pruning.kind:
front` is the same scheduler with the lr rule off.

DESIGN.md §1 pitfalls handled: 1-2 by pooling measurements of trials that reached the
target, 4 by each optimiser's own ε_opt(B) law (tuner.theory.lr_laws), 9 by a tolerance
near 4, 10 by judging only against the sweep's own target. Trials start in the order
their searcher proposed them (tuner.strategy.start_order).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from trainables import keys
from tuner import theory
from tuner.config.spec import Spec
from tuner.strategy.eps_opt_rules import PruneRule, decide
from tuner.strategy.records import SweepState, TrialRecord

HYPERBAND_BRACKETS = 3
DECISIONS_FILE = "decisions.jsonl"  # results/decisions.jsonl: why each trial was pruned


class EpsOptScheduler(TrialScheduler):
    """Prunes trials that can no longer improve the front, and (`rule.lr_rule`) trials
    whose lr is far from the prediction ε_opt(B) of the optimiser's law."""

    def __init__(
        self,
        base: TrialScheduler,
        rule: PruneRule,
        max_concurrent: int,
        decisions_path: Path | None = None,
        state: SweepState | None = None,
    ) -> None:
        super().__init__()
        self.base, self.rule, self.max_concurrent = base, rule, max_concurrent
        self.decisions_path = decisions_path
        self.state = state if state is not None else SweepState()

    # Tune hands the metric to schedulers; the wrapped one may need it.
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return bool(self.base.set_search_properties(metric, mode, **spec))

    def _record(self, trial: Trial) -> TrialRecord:
        return self.state.record(trial.trial_id, trial.config)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        record = self._record(trial)
        self.state.reopen(record)  # a retry: Tune adds an errored trial again
        if trial.last_result:  # a trial of a resumed sweep: what it had reported
            self.state.observe(record, trial.last_result, self.rule.mode)
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            # Ended before the resume; one stopped by this scheduler still said "running".
            # Whether its end was informative is not known: it does not widen a bracket.
            self.state.ended(record, keys.ERROR if trial.status == Trial.ERROR else keys.PRUNED)
        self.base.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        record = self._record(trial)
        self.state.observe(record, result, self.rule.mode)
        state = self.state
        stop = decide(record, state.best, state.model, self.rule, state.leaders, state.bracketed)
        if stop is not None:
            state.stopped(record, stop.informative)
            self._log(trial.trial_id, record.step, stop.reason)
            return str(TrialScheduler.STOP)
        decision = str(self.base.on_trial_result(tune_controller, trial, result))
        if decision == TrialScheduler.STOP:  # the wrapped scheduler compared it and it lost
            state.stopped(record, informative=True)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        record = self._record(trial)
        if result:
            self.state.observe(record, result, self.rule.mode)
        self.state.ended(record, keys.PRUNED)  # if still running: stopped from outside
        self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.state.ended(self._record(trial), keys.ERROR)
        self.base.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.state.ended(self._record(trial), keys.PRUNED)  # if still counted as running
        self.base.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """A paused trial first, then the pending one proposed first (the searcher
        decides the order), while fewer than `max_concurrent` run."""
        trials = tune_controller.get_trials()
        if sum(1 for t in trials if t.status == Trial.RUNNING) >= self.max_concurrent:
            return None
        for status in (Trial.PAUSED, Trial.PENDING):
            waiting = [t for t in trials if t.status == status]
            if waiting:
                return waiting[0]
        return None

    def _log(self, trial_id: str, step: int, reason: str) -> None:
        if self.decisions_path is None:
            return
        self.decisions_path.parent.mkdir(parents=True, exist_ok=True)
        with self.decisions_path.open("a") as handle:
            handle.write(json.dumps({"trial_id": trial_id, "step": step, "reason": reason}) + "\n")

    def debug_string(self) -> str:
        model = self.state.model
        if not self.rule.lr_rule:
            return "front pruning"
        if model is None:
            return "eps_opt pruning (no model yet)"
        return (
            f"eps_opt pruning ({model.law} law): eps_max={model.eps_max:.3g} "
            f"B_noise={model.b_noise:.3g}"
        )


class PerBatchSize(FIFOScheduler):
    """One scheduler per batch size, each seeing only that batch size's trials.

    Generic pruners compare trials at equal steps; across batch sizes that compares
    unlike things (at step t a larger batch has seen more examples and sits lower), so a
    single ASHA stops the small-batch trials the front needs. Trials start in FIFO order.
    """

    def __init__(self, make: Callable[[int], TrialScheduler]) -> None:
        super().__init__()
        self.make = make
        self.by_batch_size: dict[int, TrialScheduler] = {}

    def _for(self, trial: Trial) -> TrialScheduler:
        batch_size = int(trial.config[keys.BATCH_SIZE])
        if batch_size not in self.by_batch_size:
            self.by_batch_size[batch_size] = self.make(batch_size)
        return self.by_batch_size[batch_size]

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return str(self._for(trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"{len(self.by_batch_size)} batch sizes, each its own scheduler"


def _asha(spec: Spec, brackets: int = 1) -> PerBatchSize:
    """ASHA per batch size, on our own monotonic step counter, not training_iteration
    (DESIGN.md §4): grace `pruning.grace_steps`, reduction factor 4, each batch size's
    own step budget, the target metric in the target's direction. With several
    `brackets` it is asynchronous Hyperband (Li et al. 2020, "A System for Massively
    Parallel Hyperparameter Tuning"): bracket k's first rung is grace·4^k, so its trials
    are judged only later; Tune draws each trial's bracket at random (numpy's global
    generator), weighted towards the brackets with more rungs."""
    return PerBatchSize(
        lambda batch_size: ASHAScheduler(
            time_attr=keys.STEP,
            metric=keys.TARGET_VALUE,
            mode=spec.target.mode,
            max_t=max(spec.budget.max_steps_for(batch_size), spec.pruning.grace_steps, 1),
            grace_period=max(1, spec.pruning.grace_steps),
            reduction_factor=4,
            brackets=brackets,
        )
    )


def make_scheduler(
    spec: Spec, run_dir: Path, state: SweepState | None = None
) -> TrialScheduler | None:
    """The scheduler `pruning.kind` asks for; None means Tune's FIFO (no pruning).

    `state` is shared with the searcher that orders the trials (tuner.strategy.guided)."""
    kind = spec.pruning.kind
    if kind == "none":
        return None
    if kind == "asha":
        return _asha(spec)
    if kind == "hyperband":
        return _asha(spec, brackets=HYPERBAND_BRACKETS)
    base = _asha(spec) if spec.pruning.base == "asha" else FIFOScheduler()
    if state is None:  # no searcher reads it (Optuna, or a plain start order)
        state = SweepState(
            law=theory.LAW_OF_OPTIMIZER[spec.optimizer], target_mode=spec.target.mode
        )
    return EpsOptScheduler(
        base,
        PruneRule(spec.pruning.mode, spec.pruning.tolerance, lr_rule=kind == "eps_opt"),
        max_concurrent=spec.search.max_concurrent,
        decisions_path=run_dir / "results" / DECISIONS_FILE,
        state=state,
    )
