"""What an evaluation says about a trial: still running, or how it ended.

A trial ends at the first evaluation where, in this order:
1. diverged: the loss or the target value is not finite, or the loss exceeds
   `divergence_factor` times its (positive) value at step 0;
2. reached: the target value meets the target (at or below it for mode "min", at or above
   for "max"); step 0 counts (an untrained model that already meets it);
3. exhausted: the step budget is spent, or the examples budget (`max_examples`: a
   trial whose batch grows, batch_step or adaptive, spends it before its steps);
4. stalled: the last record is `patience_steps` or more steps old, counting from the
   end of the warmup at the earliest; a record is an evaluation that closed at least
   `min_delta` of the distance that remained between the previous record and the target
   (early stopping's "no improvement for a while", relative to what is left to do): a
   net stuck where it started, or on a plateau, stops instead of spending its whole
   budget, while a curve that keeps closing in on the target, however slowly in
   absolute terms, does not.

Steps to the target is that evaluation's step, and also the crossing interpolated between
it and the evaluation before (`tuner.theory.crossing_step`): the first evaluation rounds
the crossing up by up to one evaluation interval, which biases B_crit low.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainables import keys
from trainables.settings import Target
from tuner.theory import crossing_step


@dataclass(frozen=True)
class Verdict:
    """One evaluation's outcome: `status` (keys.RUNNING or a final status), its reason,
    and for a trial that reached the target, the interpolated steps to it."""

    status: str
    reason: str = ""
    steps_interp: float = math.nan


@dataclass
class Judge:
    """Applies the end rules (module doc) evaluation by evaluation; its state
    (`state_dict`) travels with a trial's checkpoint."""

    target: Target
    max_steps: int
    divergence_factor: float = 10.0
    max_examples: int | None = None  # None: no examples budget
    patience_steps: int = 0  # 0: no stall rule
    min_delta: float = 0.01
    warmup_steps: int = 0
    initial_loss: float = math.nan
    record_value: float = math.nan  # the target value at the last record
    record_step: int = 0
    last_step: int = 0  # the evaluation before the one being judged
    last_value: float = math.nan

    def judge(self, step: int, loss: float, value: float, examples: int = 0) -> Verdict:
        """The verdict of the evaluation at `step` (step 0 first, then increasing), the
        trial having consumed `examples` by then."""
        if step == 0:
            self.initial_loss = loss
            self.record_value, self.record_step = value, 0
        verdict = self._verdict(step, loss, value, examples)
        if verdict.status == keys.RUNNING:
            self._record(step, value)
        return verdict

    def _verdict(self, step: int, loss: float, value: float, examples: int) -> Verdict:
        if not (math.isfinite(loss) and math.isfinite(value)):
            what = "loss" if not math.isfinite(loss) else self.target.metric
            return Verdict(keys.DIVERGED, f"diverged: non-finite {what} at step {step}")
        if step > 0 and self.initial_loss > 0 and loss > self.divergence_factor * self.initial_loss:
            return Verdict(
                keys.DIVERGED,
                f"diverged: loss {loss:.4g} > {self.divergence_factor:g}x the initial "
                f"{self.initial_loss:.4g} at step {step}",
            )
        if self.target.met(value):
            before = None if step == 0 else self.last_step
            interp = crossing_step(
                before, self.last_value, step, value, self.target.value, self.target.mode
            )
            where = "already at step 0" if step == 0 else f"at step {step}"
            return Verdict(
                keys.REACHED,
                f"reached {self.target.metric} {value:.4g} {self.target.relation} "
                f"{self.target.value:g} {where}",
                interp,
            )
        if step >= self.max_steps:
            return Verdict(keys.EXHAUSTED, f"exhausted: {step} steps without {self.target}")
        if self.examples_spent(examples):
            return Verdict(keys.EXHAUSTED, f"exhausted: {examples} examples without {self.target}")
        return self._stall(step, value)

    def examples_spent(self, examples: int) -> bool:
        """Whether `examples` consumed spend the examples budget."""
        return self.max_examples is not None and examples >= self.max_examples

    def _stall(self, step: int, value: float) -> Verdict:
        since = step - max(self.record_step, self.warmup_steps)
        if self.patience_steps <= 0 or since < self.patience_steps or self._is_record(value):
            return Verdict(keys.RUNNING)
        return Verdict(
            keys.STALLED,
            f"stalled: {self.target.metric} {value:.4g} at step {step}, no evaluation since "
            f"step {step - since} closed {self.min_delta:g} of the distance left to the "
            f"target ({self.target.metric} {self.record_value:.4g} at step {self.record_step})",
        )

    def _is_record(self, value: float) -> bool:
        gain = self.target.gain(value, self.record_value)
        return gain > 0 and gain >= self.min_delta * abs(self.record_value - self.target.value)

    def _record(self, step: int, value: float) -> None:
        if step > 0 and self._is_record(value):
            self.record_value, self.record_step = value, step
        self.last_step, self.last_value = step, value

    def state_dict(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in asdict(self).items()
            if name == "initial_loss" or name.startswith(("record_", "last_"))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
