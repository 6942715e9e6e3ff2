"""What the eps_opt rules know: a record per trial, and the sweep's state built from them.

`SweepState` is the eps_opt scheduler's own; the searchers that order trials read only
its `FrontView` (per batch size the best trial so far, and the ε_opt(B) model fitted to
the best trials), passed to them explicitly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from trainables import keys
from trainables.settings import Hyperparameters
from tuner import theory

RATE_RESOLUTION = 2**0.25  # rates closer than this are one rate


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
    law: str = "sgd"  # the sweep's ε_opt(B) law (tuner.theory.lr_laws)
    sign: float = 1.0  # −1 for a target the metric rises to: the curve below always falls
    # The target value at each report (times `sign`), for the curve rule.
    curve_steps: list[float] = field(default_factory=list)
    curve_values: list[float] = field(default_factory=list)
    # Whether its end says something of its lr: it ran until it ended by itself or lost
    # to the leader's steps or curve (not stopped by the lr rule from its configuration).
    informative: bool = False

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], law: str = "sgd", target_mode: str = "min"
    ) -> TrialRecord:
        hp = Hyperparameters.from_config(config)
        sign = -1.0 if target_mode == "max" else 1.0
        return cls(hp.batch_size, hp.lr, hp.momentum, hp.seed, law=law, sign=sign)

    @property
    def leader_key(self) -> tuple[int, int]:
        """(batch size, seed): rule 1 compares a trial with the leader of its own seed."""
        return (self.batch_size, self.seed)

    @property
    def rate(self) -> float:
        """The rate the sweep's law is stated in: ε/(1 − m) for SGD (Smith et al. 2017),
        the lr for Adam (`tuner.theory.lr_laws.rate`)."""
        return theory.rate(self.law, self.lr, self.momentum)

    def observe(self, result: Mapping[str, Any]) -> None:
        self.step = int(result.get(keys.STEP, self.step))
        if self.status == keys.RUNNING:  # a stopped trial's last report still says running
            self.status = str(result.get(keys.TRIAL_STATUS, self.status))
        if self.status in keys.SELF_ENDED:
            self.informative = True
        value = float(result.get(keys.TARGET_VALUE, math.nan))
        if math.isfinite(value) and (not self.curve_steps or self.step > self.curve_steps[-1]):
            self.curve_steps.append(float(self.step))
            self.curve_values.append(self.sign * value)
        if self.status == keys.REACHED:
            self.steps_to_target = float(result[keys.STEPS_TO_TARGET])
            self.b_noise_at_target = float(result.get(keys.B_NOISE, math.nan))
            self.eps_max_at_target = float(result.get(keys.EPS_MAX, math.nan))


class FrontView(Protocol):
    """What a searcher may read of the sweep's state (the eps_opt scheduler writes it)."""

    @property
    def best(self) -> Mapping[int, TrialRecord]:
        """Per batch size the trial that reached the target in the fewest steps."""

    @property
    def model(self) -> theory.EpsOptFit | None:
        """The ε_opt(B) model fitted to the best trials (None until there is one)."""

    def bracketed(self, batch_size: int) -> bool:
        """Whether the best lr at this batch size has informative runs on both sides."""

    def open_at(self, batch_size: int) -> int:
        """How many trials at this batch size have been added and not ended."""


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


def fit_model(
    records: Iterable[TrialRecord], mode: str, law: str = "sgd"
) -> theory.EpsOptFit | None:
    """The pooled ε_opt(B) model of `law` (None until there is enough data for `mode`).

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
    best_rates = [r.rate for r in best.values()]
    best_steps = [r.steps_to_target for r in best.values()]
    if mode == "fitted":  # the best trials alone: nothing measured to pool
        return theory.law_model(law, mode, batch_sizes, best_rates, best_steps)
    sizes = [float(r.batch_size) for r in reached]
    b_noise = theory.pooled_noise_scale([r.b_noise_at_target for r in reached], sizes)
    eps_max = theory.pooled_noise_scale(
        [r.eps_max_at_target for r in reached], sizes, reference=b_noise
    )
    return theory.law_model(law, mode, batch_sizes, best_rates, best_steps, b_noise, eps_max)


@dataclass
class SweepState:
    """What the eps_opt scheduler has learnt; searchers read it through `front_view()`.

    `best` (per batch size, the trial that reached the target in the fewest steps) is
    kept up to date as trials reach it, so a decision per result costs the same
    whatever the number of trials; the model is refitted only when a trial reaches it.
    """

    records: dict[str, TrialRecord] = field(default_factory=dict)
    model: theory.EpsOptFit | None = None
    best: dict[int, TrialRecord] = field(default_factory=dict)
    leaders: dict[tuple[int, int], TrialRecord] = field(default_factory=dict)  # per (B, seed)
    reached: list[TrialRecord] = field(default_factory=list)
    law: str = "sgd"  # the sweep's ε_opt(B) law (tuner.theory.lr_laws)
    target_mode: str = "min"  # the spec's target direction
    # Per batch size the lowest and highest rate of the trials whose end is informative.
    rate_span: dict[int, tuple[float, float]] = field(default_factory=dict)
    open: Counter[int] = field(default_factory=Counter)  # per batch size, trials not ended

    def record(self, trial_id: str, config: Mapping[str, Any]) -> TrialRecord:
        """The record of a trial, made from its config the first time it is asked for."""
        record = self.records.get(trial_id)
        if record is None:
            record = TrialRecord.from_config(config, self.law, self.target_mode)
            self.records[trial_id] = record
            self.open[record.batch_size] += 1
        return record

    def bracketed(self, batch_size: int) -> bool:
        """Whether the best trial at this batch size has informative trials at a lower and
        at a higher rate (the steps-vs-lr curve's minimum is then between them)."""
        best, span = self.best.get(batch_size), self.rate_span.get(batch_size)
        if best is None or span is None:
            return False
        return span[0] < best.rate / RATE_RESOLUTION and span[1] > best.rate * RATE_RESOLUTION

    def open_at(self, batch_size: int) -> int:
        """How many trials at this batch size have been added and not ended."""
        return self.open[batch_size]

    def reopen(self, record: TrialRecord) -> None:
        """A trial that errored and that Tune queues again (`resources.max_failures`)."""
        if record.status == keys.ERROR:
            record.status = keys.RUNNING
            self.open[record.batch_size] += 1

    def __setstate__(self, saved: dict[str, Any]) -> None:
        """A state pickled before a field existed reads that field's default."""
        self.__dict__.update({**SweepState().__dict__, **saved})

    def stopped(self, record: TrialRecord, informative: bool) -> None:
        """A trial the scheduler stopped; `informative` unless the lr rule stopped it."""
        record.informative = record.informative or informative
        self._end(record, keys.PRUNED)

    def ended(self, record: TrialRecord, status: str) -> None:
        """A trial that ended without a report saying so (an error, or a stop from outside
        the scheduler); one that had ended already keeps its status."""
        self._end(record, status)

    def _end(self, record: TrialRecord, status: str) -> None:
        if record.status == keys.RUNNING:
            self.open[record.batch_size] -= 1
            record.status = status
        self._widen(record)

    def _widen(self, record: TrialRecord) -> None:
        if not record.informative:
            return
        lo, hi = self.rate_span.get(record.batch_size, (record.rate, record.rate))
        self.rate_span[record.batch_size] = (min(lo, record.rate), max(hi, record.rate))

    def front_view(self) -> FrontView:
        """The part a searcher may read, read-only."""
        return ReadOnlyFront(self)

    def observe(self, record: TrialRecord, result: Mapping[str, Any], mode: str) -> None:
        """Take in a trial's report; on reaching the target, update the best and refit."""
        was_running, was_reached = record.status == keys.RUNNING, record.status == keys.REACHED
        record.observe(result)
        if was_running and record.status != keys.RUNNING:
            self.open[record.batch_size] -= 1
            self._widen(record)
        if record.status != keys.REACHED or was_reached:
            return
        self.reached.append(record)
        if _leads(record, self.best.get(record.batch_size)):
            self.best[record.batch_size] = record
        if _leads(record, self.leaders.get(record.leader_key)):
            self.leaders[record.leader_key] = record
        self.model = fit_model(self.reached, mode, self.law)


def _leads(record: TrialRecord, leader: TrialRecord | None) -> bool:
    return leader is None or record.steps_to_target < leader.steps_to_target


@dataclass(frozen=True)
class ReadOnlyFront:
    """A `FrontView` of a SweepState: follows it as the scheduler updates it, and cannot
    change it."""

    state: SweepState

    @property
    def best(self) -> Mapping[int, TrialRecord]:
        return MappingProxyType(self.state.best)

    @property
    def model(self) -> theory.EpsOptFit | None:
        return self.state.model

    def bracketed(self, batch_size: int) -> bool:
        return self.state.bracketed(batch_size)

    def open_at(self, batch_size: int) -> int:
        return self.state.open_at(batch_size)
