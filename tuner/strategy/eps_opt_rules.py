"""The eps_opt pruning rules as pure functions over plain records, each a short ladder of
early returns (the Optuna pruner pattern), tested without Ray.

1. a trial that has taken as many steps as the best trial at its batch size took to
   reach the target can no longer improve the front there: stop it (any optimiser; on
   its own as `pruning.kind: front`);
2. a trial whose rate (ε/(1 − m) for SGD, the lr for Adam: `tuner.theory.lr_laws`) lies
   outside [ε_opt(B)/tolerance, tolerance·ε_opt(B)] of the pooled model (above: of the
   highest optimum the law leaves plausible, ε_max past Adam's peak) is stopped at its
   first report once the model exists (the rule reads only the trial's configuration,
   so training it longer teaches nothing), at batch sizes inside the span where trials
   have reached the target (the model interpolates; it does not extrapolate);
3. everything else goes to the wrapped scheduler.
Cold start: until the model exists only rule 1 applies.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    if not rule.lr_rule or model is None or not best:
        return None
    if not min(best) <= record.batch_size <= max(best):
        return None
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
