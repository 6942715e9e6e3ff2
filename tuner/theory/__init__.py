"""Pure math of the gradient noise scale and the critical batch size (numpy only).

McCandlish, Kaplan, Amodei 2018, "An Empirical Model of Large-Batch Training": two-batch
estimators of |G|², tr(Σ) (and GᵀHG, tr(HΣ)), B_simple, B_noise, ε_max, ε_opt(B), and the
steps/examples trade-off S(B) = S_min(1 + B_crit/B) with a profile-likelihood interval for
B_crit, and steps to a target interpolated between evaluations. Li et al. 2024: Adam's
ε_opt(B) (the surge law); `lr_laws` says which law applies to which optimiser. Byrd et
al. 2012 / Lau et al. 2024: the norm test and the noise-scale rule for growing B
(`adaptive_batch`). Merrill et al. 2025: the critical batch size along training by
branching (`branched`).
"""

from tuner.theory.adam_eps_opt import eps_opt_adam, fit_eps_max_adam, fit_eps_opt_adam
from tuner.theory.adaptive_batch import (
    ADAPTIVE_RULES,
    grown_batch_size,
    noise_scale_batch,
    norm_test_batch,
    norm_test_expected,
    norm_test_from_examples,
)
from tuner.theory.branched import (
    BranchedBCrit,
    branched_b_crit,
    lr_multiplier,
    recommended_schedule,
)
from tuner.theory.crossing import CROSSING_MODES, crossing_step, first_crossing, target_met
from tuner.theory.curve_race import curve_noise, lag_ratio, step_reaching
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
from tuner.theory.lr_laws import (
    LAW_OF_OPTIMIZER,
    LR_LAWS,
    MODES_OF_LAW,
    highest_plausible_eps_opt,
    law_model,
    lr_at,
    predicted_eps_opt,
    rate,
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
    B_CRIT_KINDS,
    BCritFinding,
    BCritKind,
    TradeoffFit,
    b_crit_finding,
    b_crit_interval,
    bootstrap_b_crit,
    examples_for,
    fit_tradeoff,
    pareto_mask,
    steps_for,
    student_t_cdf,
    student_t_quantile,
)

__all__ = [
    "ADAPTIVE_RULES",
    "B_CRIT_KINDS",
    "CROSSING_MODES",
    "EPS_OPT_MODES",
    "LAW_OF_OPTIMIZER",
    "LR_LAWS",
    "MODES_OF_LAW",
    "BCritFinding",
    "BCritKind",
    "BranchedBCrit",
    "EpsOptFit",
    "FloatArray",
    "NoiseScaleEMA",
    "TradeoffFit",
    "b_crit_finding",
    "b_crit_interval",
    "b_noise",
    "b_simple",
    "b_simple_halfwidth",
    "bootstrap_b_crit",
    "branched_b_crit",
    "crossing_step",
    "curve_noise",
    "effective_lr",
    "eps_max",
    "eps_opt",
    "eps_opt_adam",
    "eps_opt_model",
    "examples_for",
    "first_crossing",
    "fit_eps_max",
    "fit_eps_max_adam",
    "fit_eps_opt",
    "fit_eps_opt_adam",
    "fit_tradeoff",
    "g2_estimate",
    "ghg_estimate",
    "grown_batch_size",
    "highest_plausible_eps_opt",
    "lag_ratio",
    "law_model",
    "lr_at",
    "lr_multiplier",
    "lr_ratio_to_eps_opt",
    "noise_scale_batch",
    "norm_test_batch",
    "norm_test_expected",
    "norm_test_from_examples",
    "pareto_mask",
    "pooled_noise_scale",
    "pooling_weight",
    "predicted_eps_opt",
    "rate",
    "recommended_schedule",
    "step_reaching",
    "steps_for",
    "student_t_cdf",
    "student_t_quantile",
    "target_met",
    "trace_h_sigma_estimate",
    "trace_sigma_estimate",
]
