"""The trial's noise-scale meter: which steps measure, and the moving averages of B_simple
(from |G|², tr(Σ)) and B_noise (from GᵀHG, tr(HΣ)), two instances of one estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trainables import keys
from trainables.measure.curvature import CurvaturePair
from trainables.measure.noise_capture import NormPair
from trainables.parts.world import World
from tuner.theory import NoiseScaleEMA, eps_max


@dataclass
class NoiseMeter:
    """Measures the norms every `noise_every` steps and the curvature every
    `curvature_every` steps (0: never); folds what was measured into its averages."""

    noise_every: int
    curvature_every: int
    beta: float
    b_simple: NoiseScaleEMA = field(init=False)  # fed (|G|², tr(Σ))
    b_noise: NoiseScaleEMA = field(init=False)  # fed (GᵀHG, tr(HΣ))

    def __post_init__(self) -> None:
        self.b_simple = NoiseScaleEMA(beta=self.beta)
        self.b_noise = NoiseScaleEMA(beta=self.beta)

    def measures_norms(self, step: int) -> bool:
        """Whether `step` measures the two-batch norms (curvature steps do too)."""
        return self._due(step, self.noise_every) or self.measures_curvature(step)

    def measures_curvature(self, step: int) -> bool:
        return self._due(step, self.curvature_every)

    @staticmethod
    def _due(step: int, every: int) -> bool:
        return every > 0 and step % every == 0

    def add_norms(self, pair: NormPair) -> None:
        """Fold in one step's norm pair (skipped where a norm is not finite)."""
        if math.isfinite(pair.sq_small) and math.isfinite(pair.sq_big):
            self.b_simple.update(pair.g2(), pair.trace_sigma())

    def add_curvature(self, forms: CurvaturePair) -> None:
        """Fold in one step's quadratic forms (skipped where one is not finite)."""
        if forms.is_finite():
            self.b_noise.update(forms.ghg(), forms.trace_h_sigma())

    def average_over(self, world: World, device: torch.device) -> None:
        """Replace this worker's B_simple averages by their mean over the workers (one
        all-reduce of two numbers; every worker must call it at the same point)."""
        ema = self.b_simple
        averages = torch.tensor([ema.signal_avg, ema.noise_avg], dtype=torch.float64)
        ema.signal_avg, ema.noise_avg = world.mean(averages.to(device)).tolist()

    def report(self) -> dict[str, float]:
        """The measured scales and their parts under their report keys (nan: not measured)."""
        return {
            keys.B_SIMPLE: self.b_simple.scale,
            keys.G2: self.b_simple.signal,
            keys.TRACE_SIGMA: self.b_simple.noise,
            keys.B_NOISE: self.b_noise.scale,
            keys.GHG: self.b_noise.signal,
            keys.TRACE_H_SIGMA: self.b_noise.noise,
            keys.EPS_MAX: float(eps_max(self.b_simple.signal, self.b_noise.signal)),
        }

    def state_dict(self) -> dict[str, Any]:
        """The averages, under the names checkpoints have always used."""
        return {"noise": _ema_state(self.b_simple), "curvature": _ema_state(self.b_noise)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.b_simple = _ema_from_state(state["noise"])
        self.b_noise = _ema_from_state(state["curvature"])


def _ema_state(ema: NoiseScaleEMA) -> dict[str, Any]:
    return {
        "beta": ema.beta,
        "horizon": ema.horizon,
        "g2_avg": ema.signal_avg,
        "trace_sigma_avg": ema.noise_avg,
        "count": ema.count,
    }


def _ema_from_state(state: dict[str, Any]) -> NoiseScaleEMA:
    return NoiseScaleEMA(
        beta=state["beta"],
        horizon=state["horizon"],
        signal_avg=state["g2_avg"],
        noise_avg=state["trace_sigma_avg"],
        count=state["count"],
    )
