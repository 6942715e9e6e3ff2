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
        eval_every=spec.eval_every,
        eval_max_examples=spec.eval.max_examples,
        eval_batch_size=spec.eval.batch_size,
        optimizer=spec.optimizer,
        # These sections' fields are TrialSettings fields of the same names: a field
        # added to one of them fails here until the trials are told it too.
        **spec.budget.model_dump(),
        **spec.measure.model_dump(exclude={"method"}),
        noise_method=spec.measure.method,
        **spec.resources.model_dump(),
        **spec.stall.model_dump(),
        **spec.data.model_dump(),
        run_dir=str(run_dir),
        fixed_hyperparameters=spec.fixed_hyperparameters(),
        final_lr_fraction=spec.schedule.final_lr_fraction,
        horizon_steps=spec.schedule.horizon_steps,
        decay_factor=spec.schedule.decay_factor,
        milestones=tuple(spec.schedule.milestones),
        adaptive_rule=spec.adaptive_batch.rule,
        adaptive_eta=spec.adaptive_batch.eta,
        adaptive_multiple=spec.adaptive_batch.multiple,
        adaptive_max_batch_size=spec.adaptive_batch.max_batch_size,
        adaptive_min_measurements=spec.adaptive_batch.min_measurements,
        sync_period=spec.sync.period,
        sync_warmup_steps=spec.sync.warmup_steps,
    )
