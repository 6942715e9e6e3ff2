"""The order in which trials start, decided in one place: the searcher that proposes
them (tuner.strategy.guided) ranks its candidates by `start_priority`; the scheduler
starts pending trials in the order they were proposed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tuner import theory
from tuner.strategy.records import RATE_RESOLUTION, TrialRecord

REPEAT_PENALTY = math.log(2.0)  # a repeated rate ranks like one an octave further away
# Another momentum than the batch size's best trial so far ranks like a rate 3/4 of an
# octave further away (measured on the replays of BENCHMARKS.md, "my_workload").
MOMENTUM_PENALTY = 0.75 * math.log(2.0)
# A batch size with a trial under way and no leader yet ranks like a rate this much
# further away.
WAIT_PENALTY = 2.0 * math.log(2.0)
# A trial's examples, B·S(B) = S_min·(B + B_crit), grow with B up to B/B_min times the
# smallest batch size's: a wrong lr costs most at large B, so the law is learnt where it
# is cheap. With a model the log of that ratio adds to the lr's distance (in nats);
# before one, each octave above B_min counts as one more trial started there.
COST_WEIGHT = 1.0
COLD_TRIALS_PER_OCTAVE = 1.0
COLD_EXPONENT = {"sgd": 0.5, "sgd_ema": 0.5, "adam": 0.25}  # per law: see cold_prediction


def rate_key(record: TrialRecord) -> tuple[int, int]:
    """(B, the law's rate to RATE_RESOLUTION): configurations that differ only in warmup,
    or for SGD in momentum at equal ε/(1 − m), share it and mostly train alike (Smith et
    al. 2017); for Adam, other β1 at the same lr share it."""
    return (record.batch_size, round(math.log(record.rate) / math.log(RATE_RESOLUTION)))


@dataclass
class Started:
    """How many trials have started per batch size and per rate (`rate_key`)."""

    per_batch: Counter[int] = field(default_factory=Counter)
    per_rate: Counter[tuple[int, int]] = field(default_factory=Counter)

    def add(self, record: TrialRecord) -> None:
        self.per_batch[record.batch_size] += 1
        self.per_rate[rate_key(record)] += 1


def cold_prediction(record: TrialRecord, best: Mapping[int, TrialRecord]) -> float | None:
    """Before the law can be fitted, the rate at `record`'s batch size halfway (in log)
    between the two ends the law allows from the best trial at the nearest batch size B₀
    (rate r₀): SGD's ε_opt(B)/ε_opt(B₀) lies between 1 (past B_noise) and B/B₀ (far below
    it), so r₀·(B/B₀)^½, also for SGD-SaI's preconditioned SGD law (on its lr); Adam's
    between 1 and (B/B₀)^½ below its peak, so r₀·(B/B₀)^¼.
    None while no trial has reached the target."""
    if not best:
        return None
    anchor = min(best.values(), key=lambda r: abs(math.log(r.batch_size / record.batch_size)))
    exponent = COLD_EXPONENT[record.law]
    return anchor.rate * (record.batch_size / anchor.batch_size) ** exponent


def start_priority(
    record: TrialRecord,
    started: Started,
    middle_lr: Mapping[int, float],
    model: theory.EpsOptFit | None,
    best: Mapping[int, TrialRecord] | None = None,
    open_at: Callable[[int], int] | None = None,
) -> tuple[float, float]:
    """Lower starts first. With a model: nearest the prediction, and the smaller batch
    sizes, whose trials cost fewer examples, first (`COST_WEIGHT`). Before one: spread
    over batch sizes, the smaller ones first (`COLD_TRIALS_PER_OCTAVE`), each nearest the
    `cold_prediction` from the best trial so far (the middle of each batch size's (log)
    lr range before any), so that trials reach the target early and the model appears
    soon. `middle_lr` is per batch size of the sweep's space.

    A rate already started at this batch size (another momentum or warmup at the same
    rate) waits behind new rates, which tell more about where ε_opt(B) lies. At a batch
    size whose `best` trial so far used another momentum, the configuration waits
    behind rates at the leader's momentum: ε/(1 − m) makes momenta alike only well
    below B_crit, and above it the leader's momentum is the one known to work there. At
    a batch size where a trial is under way (`open_at`) and none has reached the target,
    another waits: once one has, the curve rule can stop the others early, while two
    racing side by side both run to the end."""
    best = best or {}
    repeats = REPEAT_PENALTY * started.per_rate[rate_key(record)]
    leader = best.get(record.batch_size)
    if leader is not None and leader.momentum != record.momentum:
        repeats += MOMENTUM_PENALTY
    if leader is None and open_at is not None and open_at(record.batch_size) > 0:
        repeats += WAIT_PENALTY
    octaves = math.log2(record.batch_size / min(middle_lr, default=record.batch_size))
    if model is not None:
        predicted = theory.predicted_eps_opt(model, record.batch_size)
        cost = COST_WEIGHT * octaves * math.log(2.0)
        return (abs(math.log(record.rate / predicted)) + repeats + cost, 0.0)
    guess = cold_prediction(record, best) or middle_lr.get(record.batch_size, record.rate)
    return (
        float(started.per_batch[record.batch_size]) + COLD_TRIALS_PER_OCTAVE * octaves,
        abs(math.log(record.rate / guess)) + repeats,
    )


def middle_lrs(records: Iterable[TrialRecord]) -> dict[int, float]:
    """Per batch size the geometric middle of the rates of its trials."""
    logs: dict[int, list[float]] = {}
    for record in records:
        logs.setdefault(record.batch_size, []).append(math.log(record.rate))
    return {b: math.exp((min(v) + max(v)) / 2) for b, v in logs.items()}
