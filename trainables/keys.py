"""Names of the metrics a trial reports, shared by the workers and the driver.

Tune fills in `pid`, `hostname`, `node_ip`, `timestamp`, `date`, `done` and `time_*`
itself; none of our keys may use those names.
"""

from typing import Final

STEP: Final = "step"
EXAMPLES: Final = "examples"
LOSS: Final = "loss"
LR: Final = "lr"
B_SIMPLE: Final = "b_simple"
G2: Final = "g2"
TRACE_SIGMA: Final = "trace_sigma"
B_NOISE: Final = "b_noise"
EPS_MAX: Final = "eps_max"
GHG: Final = "g_h_g"
TRACE_H_SIGMA: Final = "trace_h_sigma"
TARGET_VALUE: Final = "target_value"  # the value of the spec's target metric at this report
TRIAL_STATUS: Final = "trial_status"
STEPS_TO_TARGET: Final = "steps_to_target"
EXAMPLES_TO_TARGET: Final = "examples_to_target"
REASON: Final = "reason"
WALL_S: Final = "wall_s"
OBJECTIVE: Final = "objective"  # what a searcher minimises (issue 3)

# Trial statuses in the trials table.
RUNNING: Final = "running"
REACHED: Final = "reached"
PRUNED: Final = "pruned"
DIVERGED: Final = "diverged"
EXHAUSTED: Final = "exhausted"
ERROR: Final = "error"
FINAL_STATUSES: Final = (REACHED, PRUNED, DIVERGED, EXHAUSTED, ERROR)

# Hyperparameters searched, as they appear in a trial's config.
BATCH_SIZE: Final = "batch_size"
MOMENTUM: Final = "momentum"
WARMUP_STEPS: Final = "warmup_steps"
HYPERPARAMETERS: Final = (BATCH_SIZE, LR, MOMENTUM, WARMUP_STEPS)
