"""Which ε_opt(B) law applies to which optimiser, and the rate each law is stated in.

- SGD (with heavy-ball momentum m): ε_opt(B) = ε_max/(1 + B_noise/B) (McCandlish et al.
  2018, §2.2) on the effective rate ε/(1 − m) (Smith et al. 2017): `tuner.theory.eps_opt`.
- Adam/AdamW: ε_opt(B) = ε_max/(½(√(B_noise/B) + √(B/B_noise))) (Li et al. 2024, Eq. 2)
  on the lr itself, its B_noise the critical batch size of the steps/examples trade-off:
  `tuner.theory.adam_eps_opt`.
- SGD with EMA momentum m ← μm + (1 − μ)g under a constant diagonal preconditioner P
  (SGD-SaI, Xu et al. 2024: P the per-tensor lr scales frozen at the first step), law
  "sgd_ema": SGD's ε_max/(1 + B_noise/B) on the lr itself. McCandlish's one-step quadratic
  analysis of θ ← θ − εP·G_est gives the same form with ε_max = GᵀPG/GᵀPHPG and
  B_noise = tr(PHPΣ)/GᵀPHPG (SGD in the coordinates P^(-1/2)θ); an EMA with rate ε is
  heavy ball with rate ε(1 − μ), so its effective rate is ε. Only fitted: the measured
  B_noise and ε_max are those of the unpreconditioned gradient.

All are laws of the best constant lr after warmup; with a decaying schedule they
describe its peak lr.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final

import numpy as np
import numpy.typing as npt

from tuner.theory.adam_eps_opt import eps_opt_adam, fit_eps_opt_adam
from tuner.theory.eps_opt import EpsOptFit, effective_lr, eps_opt, eps_opt_model

__all__ = [
    "LAW_OF_OPTIMIZER",
    "LR_LAWS",
    "MODES_OF_LAW",
    "highest_plausible_eps_opt",
    "law_model",
    "lr_at",
    "predicted_eps_opt",
    "rate",
]

LR_LAWS: Final = ("sgd", "adam", "sgd_ema")
LAW_OF_OPTIMIZER: Final = {"sgd": "sgd", "adamw": "adam", "sgd_sai": "sgd_ema"}
# The modes each law can be built in (tuner.theory.eps_opt.EPS_OPT_MODES): Adam's ε_max
# has no measured counterpart (|G|²/GᵀHG is SGD's), so Adam has no "measured" mode; the
# preconditioned SGD law's B_noise and ε_max are not the measured (unpreconditioned) ones.
MODES_OF_LAW: Final = {
    "sgd": ("measured", "calibrated", "fitted"),
    "adam": ("calibrated", "fitted"),
    "sgd_ema": ("fitted",),
}


def _check_law(law: str) -> None:
    if law not in LR_LAWS:
        raise ValueError(f"law must be one of {LR_LAWS}, got {law!r}")


def rate(law: str, lr: float, momentum: float) -> float:
    """The rate `law` is stated in: ε/(1 − m) for SGD's heavy ball, the lr itself for Adam
    and for SGD with EMA momentum ("sgd_ema")."""
    _check_law(law)
    return float(effective_lr(lr, momentum)) if law == "sgd" else float(lr)


def lr_at(law: str, rate_value: float, momentum: float) -> float:
    """The lr that gives `rate_value` in `law`'s terms at this momentum (inverse of `rate`)."""
    _check_law(law)
    return rate_value * (1.0 - momentum) if law == "sgd" else rate_value


def predicted_eps_opt(fit: EpsOptFit, b: float) -> float:
    """ε_opt(B) of a fitted law."""
    _check_law(fit.law)
    if fit.law == "adam":
        return float(eps_opt_adam(b, fit.eps_max, fit.b_noise))
    return float(eps_opt(b, fit.eps_max, fit.b_noise))


def highest_plausible_eps_opt(fit: EpsOptFit, b: float) -> float:
    """The largest optimum the law leaves plausible at B: the law itself for SGD (it never
    falls), and for Adam past its peak ε_max. There the law falls as √(B_noise/B), but
    Li et al.'s own Theorem 4 (their Eq. 17) bounds the fall by a plateau of unknown level
    at large B, and measured best lrs often stay near the peak: a pruner must not stop a
    rate the law's fall alone calls too high."""
    _check_law(fit.law)
    if fit.law == "adam" and b > fit.b_noise:
        return float(fit.eps_max)
    return predicted_eps_opt(fit, b)


def law_model(
    law: str,
    mode: str,
    batch_sizes: npt.ArrayLike,
    best_rates: npt.ArrayLike,
    best_steps: npt.ArrayLike,
    b_noise_measured: float = math.nan,
    eps_max_measured: float = math.nan,
) -> EpsOptFit | None:
    """The ε_opt(B) law a pruner uses, from the best trial per batch size (its rate, in the
    law's terms, and its steps to the target) and pooled measurements; None while there
    is too little data.

    SGD and SGD with EMA momentum: `tuner.theory.eps_opt.eps_opt_model`. Adam: fitted
    (B_noise from the steps, ≥ 2 distinct batch sizes) or calibrated (B_noise measured,
    ≥ 1 batch size).
    """
    _check_law(law)
    if mode not in MODES_OF_LAW[law]:
        raise ValueError(f"mode must be one of {MODES_OF_LAW[law]} for the {law} law, got {mode!r}")
    if law in ("sgd", "sgd_ema"):
        fit = eps_opt_model(mode, batch_sizes, best_rates, b_noise_measured, eps_max_measured)
        return None if fit is None else dataclasses.replace(fit, law=law)
    b = np.atleast_1d(np.asarray(batch_sizes, dtype=np.float64))
    rates = np.atleast_1d(np.asarray(best_rates, dtype=np.float64))
    if mode == "fitted":
        if np.unique(b).size < 2:
            return None
        return fit_eps_opt_adam(b, rates, steps=np.atleast_1d(np.asarray(best_steps, float)))
    if b.size == 0 or not (math.isfinite(b_noise_measured) and b_noise_measured > 0):
        return None
    return fit_eps_opt_adam(b, rates, b_noise=b_noise_measured)
