"""Trial schedulers: none (FIFO), ASHA as the generic baseline, and eps_opt pruning.

`EpsOptScheduler` wraps another scheduler (FIFO or ASHA) and delegates everything it
does not decide itself (the Syne Tune pattern). Its decisions are pure functions over
plain records (`decide`, `start_priority`), each a short ladder of early returns (the
Optuna percentile-pruner pattern), so they are tested without Ray.

Rules, in order (DESIGN.md §1 pitfalls handled: 1-2 by pooling measurements of trials
that reached the target, 4 by refusing Adam-style optimisers in the spec, 9 by a
tolerance near 4, 10 by judging only against the sweep's own target):
1. a trial that has taken as many steps as the best trial at its batch size took to
   reach the target can no longer improve the front there: stop it;
2. a trial whose effective rate ε/(1 − m) lies outside
   [ε_opt(B)/tolerance, tolerance·ε_opt(B)] of the pooled model is stopped at its first
   report once the model exists (the rule reads only the trial's configuration, so
   training it longer teaches nothing), at batch sizes inside the span where trials
   have reached the target (the model interpolates; it does not extrapolate);
3. everything else goes to the wrapped scheduler.
Cold start: until the model exists only rule 1 applies.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from trainables import keys
from trainables.settings import Hyperparameters
from tuner import theory
from tuner.config.spec import Spec

DECISIONS_FILE = "decisions.jsonl"  # results/decisions.jsonl: why each trial was pruned


# --- plain data and pure decisions -------------------------------------------------------


@dataclass
class TrialRecord:
    """What the eps_opt rules know about one trial."""

    batch_size: int
    lr: float
    momentum: float
    seed: int = 0  # the training seed
    status: str = keys.RUNNING
    step: int = 0
    steps_to_target: float = math.nan
    b_noise_at_target: float = math.nan
    eps_max_at_target: float = math.nan
    started: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrialRecord:
        hp = Hyperparameters.from_config(config)
        return cls(hp.batch_size, hp.lr, hp.momentum, hp.seed)

    @property
    def leader_key(self) -> tuple[int, int]:
        """(batch size, seed): rule 1 compares a trial with the leader of its own seed."""
        return (self.batch_size, self.seed)

    @property
    def effective_lr(self) -> float:
        """ε/(1 − m) (Smith et al. 2017)."""
        return float(theory.effective_lr(self.lr, self.momentum))

    def observe(self, result: Mapping[str, Any]) -> None:
        self.started = True
        self.step = int(result.get(keys.STEP, self.step))
        self.status = str(result.get(keys.TRIAL_STATUS, self.status))
        if self.status == keys.REACHED:
            self.steps_to_target = float(result[keys.STEPS_TO_TARGET])
            self.b_noise_at_target = float(result.get(keys.B_NOISE, math.nan))
            self.eps_max_at_target = float(result.get(keys.EPS_MAX, math.nan))


@dataclass(frozen=True)
class PruneRule:
    """The eps_opt settings of a sweep."""

    mode: str = "calibrated"
    tolerance: float = 4.0


def best_per_batch(records: Iterable[TrialRecord]) -> dict[int, TrialRecord]:
    """Per batch size the trial that reached the target in the fewest steps."""
    best: dict[int, TrialRecord] = {}
    for record in records:
        if record.status != keys.REACHED:
            continue
        current = best.get(record.batch_size)
        if current is None or record.steps_to_target < current.steps_to_target:
            best[record.batch_size] = record
    return best


def fit_model(records: Iterable[TrialRecord], mode: str) -> theory.EpsOptFit | None:
    """The pooled ε_opt(B) model (None until there is enough data for `mode`).

    Measured noise scales are pooled over the trials that reached the target, taken at
    the target, so that every trial enters at the same loss. B_simple never stands in
    for B_noise: near the target it is often 10x the B_noise that the best lrs follow,
    and a model built on it prunes the best trials at small batch sizes. A trial that
    met the target at step 0 says nothing about the lr (any lr meets it there): it is
    left out.
    """
    reached = [r for r in records if r.status == keys.REACHED and r.steps_to_target > 0]
    best = best_per_batch(reached)
    batch_sizes = [float(b) for b in best]
    best_lrs = [r.effective_lr for r in best.values()]
    if mode == "fitted":  # the best lrs alone: nothing measured to pool
        return theory.eps_opt_model(mode, batch_sizes, best_lrs)
    sizes = [float(r.batch_size) for r in reached]
    b_noise = theory.pooled_noise_scale([r.b_noise_at_target for r in reached], sizes)
    eps_max = theory.pooled_noise_scale(
        [r.eps_max_at_target for r in reached], sizes, reference=b_noise
    )
    return theory.eps_opt_model(mode, batch_sizes, best_lrs, b_noise, eps_max)


def _front_reason(record: TrialRecord, leader: TrialRecord | None) -> str | None:
    if leader is None or record.status == keys.REACHED or record.step < leader.steps_to_target:
        return None
    return (
        f"pruned: at step {record.step} without reaching the target, which the best "
        f"trial at B={record.batch_size} reached in {leader.steps_to_target:.0f} steps"
    )


def _lr_reason(
    record: TrialRecord,
    best: Mapping[int, TrialRecord],
    model: theory.EpsOptFit | None,
    rule: PruneRule,
) -> str | None:
    if model is None or not best:
        return None
    if not min(best) <= record.batch_size <= max(best):
        return None
    predicted = float(theory.eps_opt(record.batch_size, model.eps_max, model.b_noise))
    ratio = record.effective_lr / predicted
    if 1.0 / rule.tolerance <= ratio <= rule.tolerance:
        return None
    side = f"{ratio:.1f}x above" if ratio > 1 else f"{1 / ratio:.1f}x below"
    rate = "lr" if record.momentum == 0 else "lr/(1-m)"
    return f"pruned: {rate} {side} eps_opt(B={record.batch_size})={predicted:.3g}"


def decide(
    record: TrialRecord,
    best: Mapping[int, TrialRecord],
    model: theory.EpsOptFit | None,
    rule: PruneRule,
    leaders: Mapping[tuple[int, int], TrialRecord] | None = None,
) -> str | None:
    """The reason to stop this trial now, or None to let the wrapped scheduler decide.

    `best` is per batch size; `leaders`, per (batch size, seed), is what rule 1 compares
    with when trials repeat over training seeds (default: `best`, one seed)."""
    if record.status != keys.RUNNING:
        return None  # it has ended by itself (reached, exhausted, diverged, stalled)
    leader = leaders.get(record.leader_key) if leaders is not None else best.get(record.batch_size)
    return _front_reason(record, leader) or _lr_reason(record, best, model, rule)


RATE_RESOLUTION = 2**0.25  # effective lrs closer than this are one rate
REPEAT_PENALTY = math.log(2.0)  # a repeated rate ranks like one an octave further away
# Another momentum than the batch size's best trial so far ranks like a rate 3/4 of an
# octave further away (measured on the replays of BENCHMARKS.md, "my_workload").
MOMENTUM_PENALTY = 0.75 * math.log(2.0)


def rate_key(record: TrialRecord) -> tuple[int, int]:
    """(B, effective lr to RATE_RESOLUTION): configurations that differ only in momentum
    at equal ε/(1 − m), or in warmup, share it and mostly train alike (Smith et al. 2017)."""
    return (record.batch_size, round(math.log(record.effective_lr) / math.log(RATE_RESOLUTION)))


@dataclass
class Started:
    """How many trials have started per batch size and per rate (`rate_key`)."""

    per_batch: Counter[int] = field(default_factory=Counter)
    per_rate: Counter[tuple[int, int]] = field(default_factory=Counter)

    def add(self, record: TrialRecord) -> None:
        self.per_batch[record.batch_size] += 1
        self.per_rate[rate_key(record)] += 1


def start_priority(
    record: TrialRecord,
    started: Started,
    middle_lr: Mapping[int, float],
    model: theory.EpsOptFit | None,
    best: Mapping[int, TrialRecord] | None = None,
) -> tuple[float, float]:
    """Lower starts first. With a model: nearest the prediction. Before one: spread
    over batch sizes, the middle of each batch size's (log) lr range first, so that
    trials reach the target early and the model appears soon. A rate already started at
    this batch size (another momentum or warmup at the same ε/(1 − m)) waits behind
    new rates, which tell more about where ε_opt(B) lies. At a batch size whose `best`
    trial so far used another momentum, the configuration waits behind rates at the
    leader's momentum: ε/(1 − m) makes momenta alike only well below B_crit, and above
    it the leader's momentum is the one known to work there."""
    repeats = REPEAT_PENALTY * started.per_rate[rate_key(record)]
    leader = best.get(record.batch_size) if best else None
    if leader is not None and leader.momentum != record.momentum:
        repeats += MOMENTUM_PENALTY
    if model is not None:
        predicted = float(theory.eps_opt(record.batch_size, model.eps_max, model.b_noise))
        return (abs(math.log(record.effective_lr / predicted)) + repeats, 0.0)
    middle = middle_lr.get(record.batch_size, record.effective_lr)
    return (
        float(started.per_batch[record.batch_size]),
        abs(math.log(record.effective_lr / middle)) + repeats,
    )


def middle_lrs(records: Iterable[TrialRecord]) -> dict[int, float]:
    """Per batch size the geometric middle of the effective lrs of its trials."""
    logs: dict[int, list[float]] = {}
    for record in records:
        logs.setdefault(record.batch_size, []).append(math.log(record.effective_lr))
    return {b: math.exp((min(v) + max(v)) / 2) for b, v in logs.items()}


# --- the Ray Tune scheduler ----------------------------------------------------------------


@dataclass
class SweepState:
    """What the scheduler has learnt, shared with the searcher that orders the trials.

    `best` (per batch size, the trial that reached the target in the fewest steps) is
    kept up to date as trials reach it, so a decision per result costs the same
    whatever the number of trials; the model is refitted only when a trial reaches it.
    """

    records: dict[str, TrialRecord] = field(default_factory=dict)
    model: theory.EpsOptFit | None = None
    best: dict[int, TrialRecord] = field(default_factory=dict)
    leaders: dict[tuple[int, int], TrialRecord] = field(default_factory=dict)  # per (B, seed)
    reached: list[TrialRecord] = field(default_factory=list)

    def observe(self, record: TrialRecord, result: Mapping[str, Any], mode: str) -> None:
        """Take in a trial's report; on reaching the target, update the best and refit."""
        was_reached = record.status == keys.REACHED
        record.observe(result)
        if record.status != keys.REACHED or was_reached:
            return
        self.reached.append(record)
        if _leads(record, self.best.get(record.batch_size)):
            self.best[record.batch_size] = record
        if _leads(record, self.leaders.get(record.leader_key)):
            self.leaders[record.leader_key] = record
        self.model = fit_model(self.reached, mode)


def _leads(record: TrialRecord, leader: TrialRecord | None) -> bool:
    return leader is None or record.steps_to_target < leader.steps_to_target


class EpsOptScheduler(TrialScheduler):
    """Prunes trials by the noise-scale prediction ε_opt(B) = ε_max/(1 + B_noise/B)."""

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
        record = self.state.records.get(trial.trial_id)
        if record is None:
            record = TrialRecord.from_config(trial.config)
            self.state.records[trial.trial_id] = record
        return record

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        record = self._record(trial)
        if trial.last_result:  # a trial of a resumed sweep: what it had reported
            self.state.observe(record, trial.last_result, self.rule.mode)
        self.base.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        record = self._record(trial)
        self.state.observe(record, result, self.rule.mode)
        reason = decide(record, self.state.best, self.state.model, self.rule, self.state.leaders)
        if reason is not None:
            self._log(trial.trial_id, record.step, reason)
            return str(TrialScheduler.STOP)
        return str(self.base.on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        if result:
            self.state.observe(self._record(trial), result, self.rule.mode)
        self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._record(trial).status = keys.ERROR
        self.base.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.base.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        running = sum(1 for t in trials if t.status == Trial.RUNNING)
        if running >= self.max_concurrent:
            return None
        paused = [t for t in trials if t.status == Trial.PAUSED]
        if paused:
            return paused[0]
        pending = [t for t in trials if t.status == Trial.PENDING]
        if not pending:
            return None
        started = Started()
        for record in self.state.records.values():
            if record.started:
                started.add(record)
        model = self.state.model
        middle = middle_lrs(self.state.records.values())
        best = self.state.best
        return min(
            pending, key=lambda t: start_priority(self._record(t), started, middle, model, best)
        )

    def _log(self, trial_id: str, step: int, reason: str) -> None:
        if self.decisions_path is None:
            return
        self.decisions_path.parent.mkdir(parents=True, exist_ok=True)
        with self.decisions_path.open("a") as handle:
            handle.write(json.dumps({"trial_id": trial_id, "step": step, "reason": reason}) + "\n")

    def debug_string(self) -> str:
        model = self.state.model
        if model is None:
            return "eps_opt pruning (no model yet)"
        return f"eps_opt pruning: eps_max={model.eps_max:.3g} B_noise={model.b_noise:.3g}"


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


def _asha(spec: Spec) -> PerBatchSize:
    """ASHA per batch size, on our own monotonic step counter, not training_iteration
    (DESIGN.md §4): grace `pruning.grace_steps`, reduction factor 4, each batch size's
    own step budget, the target metric in the target's direction."""
    return PerBatchSize(
        lambda batch_size: ASHAScheduler(
            time_attr=keys.STEP,
            metric=keys.TARGET_VALUE,
            mode=spec.target.mode,
            max_t=max(spec.budget.max_steps_for(batch_size), spec.pruning.grace_steps, 1),
            grace_period=max(1, spec.pruning.grace_steps),
            reduction_factor=4,
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
    base = _asha(spec) if spec.pruning.base == "asha" else FIFOScheduler()
    return EpsOptScheduler(
        base,
        PruneRule(spec.pruning.mode, spec.pruning.tolerance),
        max_concurrent=spec.search.max_concurrent,
        decisions_path=run_dir / "results" / DECISIONS_FILE,
        state=state,
    )
