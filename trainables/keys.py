"""Names of the metrics a trial reports, shared by the workers and the driver.

Tune fills in `pid`, `hostname`, `node_ip`, `timestamp`, `date`, `done` and `time_*`
itself; none of our keys may use those names.
"""

from typing import Final

STEP: Final = "step"
EXAMPLES: Final = "examples"  # the examples consumed: the sum of the steps' batch sizes
# The batch size of the report's step (B₀ but under a batch-size schedule: batch_step).
BATCH_SIZE_NOW: Final = "batch_size_now"
# The workers' synchronisations so far: gradient all-reduces and parameter averages (a
# DDP trial's steps; fewer under local SGD, trainables.steps.LocalSGD; 0 on one worker).
SYNCS: Final = "syncs"
LOSS: Final = "loss"
LR: Final = "lr"
B_SIMPLE: Final = "b_simple"
G2: Final = "g2"
TRACE_SIGMA: Final = "trace_sigma"
B_NOISE: Final = "b_noise"
EPS_MAX: Final = "eps_max"
NOISE_METHOD: Final = "noise_method"  # what measured B_simple (trainables.steps)
GHG: Final = "g_h_g"
TRACE_H_SIGMA: Final = "trace_h_sigma"
TARGET_VALUE: Final = "target_value"  # the value of the spec's target metric at this report
TRIAL_STATUS: Final = "trial_status"
STEPS_TO_TARGET: Final = "steps_to_target"  # the first evaluation that met the target
EXAMPLES_TO_TARGET: Final = "examples_to_target"
# The crossing interpolated between that evaluation and the one before (trainables.parts.judge).
STEPS_TO_TARGET_INTERP: Final = "steps_to_target_interp"
EXAMPLES_TO_TARGET_INTERP: Final = "examples_to_target_interp"
REASON: Final = "reason"
WALL_S: Final = "wall_s"
OBJECTIVE: Final = "objective"  # what a searcher minimises (issue 3)

# Trial statuses in the trials table.
RUNNING: Final = "running"
REACHED: Final = "reached"
PRUNED: Final = "pruned"
DIVERGED: Final = "diverged"
EXHAUSTED: Final = "exhausted"
STALLED: Final = "stalled"  # no progress towards the target for a while (trainables.parts.judge)
ERROR: Final = "error"
FINAL_STATUSES: Final = (REACHED, PRUNED, DIVERGED, EXHAUSTED, STALLED, ERROR)
# Ended by the loop itself (the rest: by a scheduler, or by an error).
SELF_ENDED: Final = (REACHED, DIVERGED, EXHAUSTED, STALLED)

# Hyperparameters searched, as they appear in a trial's config.
BATCH_SIZE: Final = "batch_size"
MOMENTUM: Final = "momentum"
WARMUP_STEPS: Final = "warmup_steps"
HYPERPARAMETERS: Final = (BATCH_SIZE, LR, MOMENTUM, WARMUP_STEPS)
# The rest of the recipe: searched where the space gives them, else fixed for the sweep.
WEIGHT_DECAY: Final = "weight_decay"
BETA2: Final = "beta2"  # AdamW's second-moment decay
SCHEDULE: Final = "schedule"  # the lr schedule kind after warmup
SEED: Final = "seed"  # the training seed of a trial (search.seeds), beside the hyperparameters

# What Tune puts into every result beside ours (ray.tune.result; `time_*` too).
TUNE_KEYS: Final = frozenset(
    {
        "config", "date", "done", "episodes_this_iter", "episodes_total", "experiment_id",
        "experiment_tag", "hostname", "iterations_since_restore", "node_ip", "pid",
        "should_checkpoint", "timestamp", "timesteps_this_iter", "timesteps_total",
        "training_iteration", "trial_id", "checkpoint_dir_name", "checkpoint_path",
    }
)  # fmt: skip
# Every key a trial's report carries.
REPORT_KEYS: Final = frozenset(
    {
        STEP, EXAMPLES, LOSS, LR, B_SIMPLE, G2, TRACE_SIGMA, B_NOISE, EPS_MAX, GHG,
        TRACE_H_SIGMA, TARGET_VALUE, TRIAL_STATUS, STEPS_TO_TARGET, EXAMPLES_TO_TARGET,
        STEPS_TO_TARGET_INTERP, EXAMPLES_TO_TARGET_INTERP, REASON, WALL_S, OBJECTIVE,
        BATCH_SIZE, MOMENTUM, WARMUP_STEPS, SEED, WEIGHT_DECAY, BETA2, SCHEDULE, NOISE_METHOD,
        BATCH_SIZE_NOW, SYNCS,
    }
)  # fmt: skip


def is_reserved(name: str) -> bool:
    """Whether a workload metric of this name would overwrite a key of the report."""
    return name in REPORT_KEYS or name in TUNE_KEYS or name.startswith(("time_", "_"))
