"""Names of the results tables' columns and the summary's fields, each written once."""

from typing import Final

# Columns and fields named by a metric of the report (step, examples, lr, b_simple,
# batch_size, seed, ...) are `trainables.keys` names; the rest are named here. The
# values are the tables' public contract: the column names of the files in results/.

# -- trials table (one row per trial) -----------------------------------------------------
TRIAL_ID: Final = "trial_id"  # also the curves' and the front's
STATUS: Final = "status"  # a trainables.keys status, or tables.UNFINISHED
FINAL_LOSS: Final = "final_loss"
STEPS: Final = "steps"  # also the front's: steps to the target there
EFFECTIVE_LR: Final = "effective_lr"  # lr/(1 - momentum)

# -- curves table (one row per report) ------------------------------------------------------
# TRIAL_ID, then the reports' own metrics (trainables.keys and the workload's).

# -- front table (one row per batch size) ---------------------------------------------------
PARETO: Final = "pareto"
STEPS_INTERP: Final = "steps_interp"
EXAMPLES_INTERP: Final = "examples_interp"
SEEDS_REACHED: Final = "seeds_reached"
SEEDS: Final = "seeds"  # also the summary's: how many training seeds
STEPS_LO: Final = "steps_lo"
STEPS_HI: Final = "steps_hi"

# -- summary (summary.json) -----------------------------------------------------------------
TARGET: Final = "target"
OPTIMIZER: Final = "optimizer"
S_MIN: Final = "s_min"
E_MIN: Final = "e_min"
B_CRIT: Final = "b_crit"
B_CRIT_INTERVAL: Final = "b_crit_interval"
B_CRIT_KIND: Final = "b_crit_kind"
B_CRIT_NOTE: Final = "b_crit_note"
B_CRIT_INTERVAL_COVERS: Final = "b_crit_interval_covers"
FIT_RMS_LOG: Final = "fit_rms_log"
FIT_POINTS: Final = "fit_points"
FIT_NOTE: Final = "fit_note"
RESOLUTION_NOTE: Final = "resolution_note"
B_NOISE_SOURCE: Final = "b_noise_source"
LR_LAW: Final = "lr_law"
LR_NOTE: Final = "lr_note"
N_TRIALS: Final = "n_trials"
N_REACHED: Final = "n_reached"
N_PRUNED: Final = "n_pruned"
N_DIVERGED: Final = "n_diverged"
N_EXHAUSTED: Final = "n_exhausted"
N_STALLED: Final = "n_stalled"
N_ERROR: Final = "n_error"
N_UNFINISHED: Final = "n_unfinished"
TOTAL_EXAMPLES: Final = "total_examples"
