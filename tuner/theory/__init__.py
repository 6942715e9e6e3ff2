"""Pure math of the gradient noise scale and the critical batch size (numpy only).

McCandlish, Kaplan, Amodei 2018, "An Empirical Model of Large-Batch Training": two-batch
estimators of |G|², tr(Σ) (and GᵀHG, tr(HΣ)), B_simple, B_noise, ε_max, ε_opt(B), and the
steps/examples trade-off S(B) = S_min(1 + B_crit/B).
"""

from tuner.theory.eps_opt import (
    EPS_OPT_MODES,
    EpsOptFit,
    effective_lr,
    eps_opt,
    eps_opt_model,
    fit_eps_max,
    fit_eps_opt,
    lr_ratio_to_eps_opt,
)
from tuner.theory.noise import (
    FloatArray,
    NoiseScaleEMA,
    b_noise,
    b_simple,
    b_simple_halfwidth,
    eps_max,
    g2_estimate,
    ghg_estimate,
    pooled_noise_scale,
    pooling_weight,
    trace_h_sigma_estimate,
    trace_sigma_estimate,
)
from tuner.theory.tradeoff import (
    TradeoffFit,
    bootstrap_b_crit,
    examples_for,
    fit_tradeoff,
    pareto_mask,
    steps_for,
)

__all__ = [
    "EPS_OPT_MODES",
    "EpsOptFit",
    "FloatArray",
    "NoiseScaleEMA",
    "TradeoffFit",
    "b_noise",
    "b_simple",
    "b_simple_halfwidth",
    "bootstrap_b_crit",
    "effective_lr",
    "eps_max",
    "eps_opt",
    "eps_opt_model",
    "examples_for",
    "fit_eps_max",
    "fit_eps_opt",
    "fit_tradeoff",
    "g2_estimate",
    "ghg_estimate",
    "lr_ratio_to_eps_opt",
    "pareto_mask",
    "pooled_noise_scale",
    "pooling_weight",
    "steps_for",
    "trace_h_sigma_estimate",
    "trace_sigma_estimate",
]
