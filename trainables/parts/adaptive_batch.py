"""The adaptive batch size (spec section `adaptive_batch`): after each measured step, the
batch size the next steps take, grown from the noise meter's smoothed estimates
(tuner.theory.adaptive_batch).

- `norm_test`: b = tr Σ / (η² ‖g_B‖²) at the current B, with ‖g_B‖² = |G|² + tr Σ/B. From
  the meter's two-batch estimates at b_big = B, |G|² + tr Σ/B is exactly the measured
  ‖g_B‖² (the estimates are linear in the two squared norms), so this is Byrd et al.'s
  sample test with its numerator and denominator smoothed like the noise scale's;
- `noise_scale`: b = c·B_simple, B_simple = tr Σ/|G|² of the smoothed estimates (the
  meter's own B_simple).

The proposal only ever grows the batch, rounded up to a multiple of B₀, capped at the
largest multiple of B₀ not above `maximum` (`grown_batch_size`). B₀ is the granularity
because every size the trial can take is then a multiple of B₀, as its own is: B₀ was
checked to divide over the DDP workers (and a stream reads whole global batches), so
every grown batch splits into equal worker shares, and the examples consumed stay a
multiple of B₀ as under `batch_step`. Gradient accumulation above
`resources.max_micro_batch` is the step strategy's, at any size.

Under local SGD (spec `sync.period` > 1, trainables.steps.LocalSGD) each optimiser step
takes one worker's share b = B/N, not B: the rule applies to b, and the proposal is
N × rule(b), granularity and cap as above (the global B, multiples of B₀), following
Lau et al. (2024, "Communication-Efficient Adaptive Batch Size Strategies for
Distributed Local Gradient Methods"), whose local batch sizes grow by a norm test taken
at synchronisations only: the loop decides at the averages, from the workers' merged
noise averages, so that the workers decide alike without another collective.

The decision is the state: the batch size of the next step (`decided`), checkpointed,
since a checkpoint taken right after a measured step has decided a size the step it
holds did not take yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.theory.adaptive_batch import (
    ADAPTIVE_RULES,
    grown_batch_size,
    noise_scale_batch,
    norm_test_batch,
)

ADAPTIVE_OFF = "none"


@dataclass
class AdaptiveBatch:
    """Decides the next step's batch size from the smoothed |G|² and tr Σ (module doc)."""

    rule: str  # one of ADAPTIVE_RULES
    base: int  # B₀, the trial's configured batch size: the first size and the granularity
    maximum: int  # the largest batch size (capped to a multiple of B₀)
    eta: float = 0.7  # norm_test's η: it settles at B = B_simple(1/η² − 1)
    multiple: float = 1.0  # noise_scale's c
    decided: int = 0  # the batch size of the next step (0: B₀)
    # Local SGD: the workers whose shares (B/shares) each take an optimiser step.
    shares: int = 1
    # No growth before this many measured steps are in the estimates: the first are the
    # noisiest, and a batch size grown from one of them never shrinks back.
    min_measurements: int = 0

    def __post_init__(self) -> None:
        if self.rule not in ADAPTIVE_RULES:
            raise ValueError(
                f"unknown adaptive rule {self.rule!r} (choose from {', '.join(ADAPTIVE_RULES)})"
            )
        if not 0 < self.base <= self.maximum:
            raise ValueError(
                f"need 0 < batch size <= max_batch_size, got {self.base}, {self.maximum}"
            )
        if not (self.eta > 0 and self.multiple > 0):
            raise ValueError(f"eta and multiple must be > 0, got {self.eta}, {self.multiple}")
        if self.shares < 1 or self.base % self.shares:
            raise ValueError(f"{self.base} does not split into {self.shares} shares")
        self.decided = self.decided or self.base

    @classmethod
    def for_trial(
        cls,
        rule: str,
        base: int,
        maximum: int | None,
        eta: float,
        multiple: float,
        shares: int = 1,
        min_measurements: int = 0,
    ) -> AdaptiveBatch | None:
        """The trial's rule; None where it is off (`none`)."""
        if rule == ADAPTIVE_OFF:
            return None
        if maximum is None:
            raise ValueError(f"adaptive rule {rule} needs a max_batch_size")
        return cls(
            rule, base, maximum, eta, multiple, shares=shares, min_measurements=min_measurements
        )

    def proposal(self, batch_size: int, g2: float, trace_sigma: float) -> float:
        """What the rule asks for at `batch_size` from the estimates (nan: nothing yet)."""
        if self.rule == "norm_test":
            return norm_test_batch(trace_sigma, g2, batch_size, self.eta)
        b_simple = trace_sigma / g2 if g2 > 0 else float("nan")  # the meter's own ratio
        return noise_scale_batch(b_simple, self.multiple)

    def decide(
        self, batch_size: int, g2: float, trace_sigma: float, measurements: int | None = None
    ) -> int:
        """The batch size from the next step on, given the current one and the smoothed
        estimates of `measurements` measured steps (None: enough): grown, never shrunk, a
        multiple of B₀, capped; kept before `min_measurements`. Local SGD: `shares` times
        the rule at a share (module docstring)."""
        if measurements is not None and measurements < self.min_measurements:
            return self.decided
        proposed = self.shares * self.proposal(batch_size // self.shares, g2, trace_sigma)
        self.decided = grown_batch_size(batch_size, proposed, self.maximum, self.base)
        return self.decided

    def state_dict(self) -> dict[str, Any]:
        return {"decided": self.decided}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decided = int(state["decided"])
