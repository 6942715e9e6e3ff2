"""What every trial of a sweep is told: the spec's settings as plain picklable data (the
workers never see the spec)."""

from __future__ import annotations

from pathlib import Path

from trainables.settings import TrialSettings
from tuner.config.spec import Spec


def trial_settings(spec: Spec, run_dir: Path | str) -> TrialSettings:
    """The plain data every trial of this sweep needs (the workers never see the spec)."""
    return TrialSettings(
        workload=spec.workload,
        workload_args=dict(spec.workload_args),
        target_metric=spec.target.metric,
        target_value=spec.target.value,
        target_mode=spec.target.mode,
        max_steps=spec.budget.max_steps,
        max_examples=spec.budget.max_examples,
        eval_every=spec.eval_every,
        optimizer=spec.optimizer,
        noise_every=spec.measure.noise_every,
        micro_batches=spec.measure.micro_batches,
        noise_ema=spec.measure.noise_ema,
        curvature_every=spec.measure.curvature_every,
        precision=spec.measure.precision,
        workers=spec.resources.workers_per_trial,
        cpus_per_worker=spec.resources.cpus_per_worker,
        gpus_per_worker=spec.resources.gpus_per_worker,
        max_failures=spec.resources.max_failures,
        checkpoint_every=spec.resources.checkpoint_every,
        stall_patience_steps=spec.stall.patience_steps,
        stall_min_delta=spec.stall.min_delta,
        run_dir=str(run_dir),
    )
