"""The eps_opt pruning rules as pure functions over plain records, each a short ladder of
early returns (the Optuna pruner pattern), tested without Ray.

1. a trial that has taken as many steps as the best trial at its batch size took to
   reach the target can no longer improve the front there: stop it (any optimiser; on
   its own as `pruning.kind: front`);
1b. a trial whose curve lags the leader's by more than `curve_lag` times (it is at a value
   the leader had reached, less the noise between runs, in under 1/`curve_lag` of the
   steps), from `curve_from` of the leader's steps to the target on: stop it
   (`tuner.theory.curve_race`; part of rule 1, so also under `front`);
1c. a trial that has taken `larger_batch_slack` times the steps the best trial at a
   smaller batch size needed: S(B) = S_min(1 + B_crit/B) does not rise with B, so it
   cannot be its batch size's best unless the front is that far from the law (the
   slack of 2 is above the 1.4x that run-to-run noise reached on the recorded grids);
   it also stops the first trials at a batch size, which have no leader there yet;
2. a trial whose rate (ε/(1 − m) for SGD, the lr for Adam: `tuner.theory.lr_laws`) lies
   outside [ε_opt(B)/tolerance, tolerance·ε_opt(B)] of the pooled model (above: of the
   highest optimum the law leaves plausible, ε_max past Adam's peak) is stopped at its
   first report once the model exists (the rule reads only the trial's configuration,
   so training it longer teaches nothing), at batch sizes inside the span where trials
   have reached the target (the model interpolates; it does not extrapolate), and only
   where the prediction is more than the first guess confirmed: the fit is not at a
   bound of B_noise, or this batch size's best rate is bracketed by informative runs on
   both sides (`SweepState.bracketed`);
3. everything else goes to the wrapped scheduler.
Cold start: until the model exists only rules 1, 1b and 1c apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from trainables import keys
from tuner import theory
from tuner.strategy.records import TrialRecord


@dataclass(frozen=True)
class PruneRule:
    """The eps_opt settings of a sweep."""

    mode: str = "calibrated"
    tolerance: float = 4.0
    lr_rule: bool = True  # rule 2; False for `pruning.kind: front`
    curve_lag: float = 3.0  # rule 1b: inf turns it off
    curve_from: float = 0.25  # rule 1b compares from this fraction of the leader's steps
    noise_z: float = 2.0  # the margin: z·√2·σ, σ the curves' report-to-report noise
    larger_batch_slack: float = 2.0  # rule 1c: inf turns it off


FRONT, CURVE, LR = "front", "curve", "lr"  # which rule stopped a trial (1c is FRONT)


@dataclass(frozen=True)
class Stop:
    """A decision to stop a trial: the `rule` (FRONT, CURVE or LR) and why, in words."""

    rule: str
    reason: str

    @property
    def informative(self) -> bool:
        """Whether the trial's end says something of its lr: it trained and lost (rules
        1, 1b and 1c), rather than being stopped from its configuration alone (rule 2)."""
        return self.rule != LR


def _front_reason(record: TrialRecord, leader: TrialRecord | None) -> str | None:
    if leader is None or record.status == keys.REACHED or record.step < leader.steps_to_target:
        return None
    return (
        f"pruned: at step {record.step} without reaching the target, which the best "
        f"trial at B={record.batch_size} reached in {leader.steps_to_target:.0f} steps"
    )


def _larger_batch_reason(
    record: TrialRecord, best: Mapping[int, TrialRecord], rule: PruneRule
) -> str | None:
    smaller = [r.steps_to_target for b, r in best.items() if b < record.batch_size]
    if not smaller or not math.isfinite(rule.larger_batch_slack):
        return None
    bound = rule.larger_batch_slack * min(smaller)
    if record.step < bound:
        return None
    return (
        f"pruned: at step {record.step} without reaching the target, {rule.larger_batch_slack:g}x "
        f"the steps a smaller batch size needed ({min(smaller):.0f})"
    )


def _curve_reason(record: TrialRecord, leader: TrialRecord | None, rule: PruneRule) -> str | None:
    if leader is None or record.status == keys.REACHED or not math.isfinite(rule.curve_lag):
        return None
    if record.step < rule.curve_from * leader.steps_to_target or not record.curve_values:
        return None
    noise = [theory.curve_noise(c.curve_values[-32:]) for c in (leader, record)]
    sigma = max((x for x in noise if math.isfinite(x)), default=0.0)
    margin = rule.noise_z * math.sqrt(2.0) * sigma
    step, value = record.curve_steps[-1], record.curve_values[-1]  # its last finite value
    lag = theory.lag_ratio(step, value, leader.curve_steps, leader.curve_values, margin)
    if lag <= rule.curve_lag:
        return None
    return (
        f"pruned: at step {step:.0f} its target value is where the best trial at "
        f"B={record.batch_size} was {lag:.1f}x sooner (less {margin:.3g} of noise)"
    )


def _lr_reason(
    record: TrialRecord,
    best: Mapping[int, TrialRecord],
    model: theory.EpsOptFit | None,
    rule: PruneRule,
    bracketed: Callable[[int], bool],
) -> str | None:
    if not rule.lr_rule or model is None or not best:
        return None
    if not min(best) <= record.batch_size <= max(best):
        return None
    if model.at_bound and not bracketed(record.batch_size):
        return None  # the fit only confirms where the first trials happened to run
    predicted = theory.predicted_eps_opt(model, record.batch_size)
    ceiling = theory.highest_plausible_eps_opt(model, record.batch_size)
    if record.rate > rule.tolerance * ceiling:
        predicted = ceiling
    elif record.rate >= predicted / rule.tolerance:
        return None
    ratio = record.rate / predicted
    side = f"{ratio:.1f}x above" if ratio > 1 else f"{1 / ratio:.1f}x below"
    rate = "lr/(1-m)" if record.law == "sgd" and record.momentum != 0 else "lr"
    return f"pruned: {rate} {side} eps_opt(B={record.batch_size})={predicted:.3g}"


def _never(batch_size: int) -> bool:
    return False


def decide(
    record: TrialRecord,
    best: Mapping[int, TrialRecord],
    model: theory.EpsOptFit | None,
    rule: PruneRule,
    leaders: Mapping[tuple[int, int], TrialRecord] | None = None,
    bracketed: Callable[[int], bool] = _never,
) -> Stop | None:
    """Whether to stop this trial now (and why), or None to let the wrapped scheduler
    decide.

    `best` is per batch size; `leaders`, per (batch size, seed), is what rules 1 and 1b
    compare with when trials repeat over training seeds (default: `best`, one seed);
    `bracketed(B)` says whether B's best rate has informative runs on both sides."""
    if record.status != keys.RUNNING:
        return None  # it has ended by itself (reached, exhausted, diverged, stalled)
    leader = leaders.get(record.leader_key) if leaders is not None else best.get(record.batch_size)
    if (reason := _front_reason(record, leader)) is not None:
        return Stop(FRONT, reason)
    if (reason := _curve_reason(record, leader, rule)) is not None:
        return Stop(CURVE, reason)
    if (reason := _larger_batch_reason(record, best, rule)) is not None:
        return Stop(FRONT, reason)
    if (reason := _lr_reason(record, best, model, rule, bracketed)) is not None:
        return Stop(LR, reason)
    return None
