"""The two ways a trial runs under Ray Tune; both run `loop.run_trial`.

- `single_worker_trial`: the loop runs directly in the Tune actor (about 0.5 s of
  overhead per trial with actor reuse).
- `multi_worker_trial`: the Tune trial is a Ray Train driver that starts a TorchTrainer
  with N workers (Train V2 inside Tune, DESIGN.md §4); rank 0's reports reach Tune
  through TuneReportCallback.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from trainables.loop import World, run_trial
from trainables.settings import Hyperparameters, TrialSettings


def _cpu_threads(settings: TrialSettings) -> int:
    return max(1, int(settings.cpus_per_worker))


def single_worker_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable: one process trains, reporting through `tune.report`."""
    from ray import tune

    torch.set_num_threads(_cpu_threads(settings))
    device = torch.device("cuda" if settings.gpus_per_worker > 0 else "cpu")
    run_trial(settings, Hyperparameters.from_config(config), tune.report, device=device)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; the process group is already set up."""
    import ray.train
    import ray.train.torch

    settings: TrialSettings = loop_config["settings"]
    torch.set_num_threads(_cpu_threads(settings))
    context = ray.train.get_context()
    world = World(rank=context.get_world_rank(), size=context.get_world_size())
    device = ray.train.torch.get_device()
    run_trial(
        settings,
        Hyperparameters.from_config(loop_config["config"]),
        lambda metrics: ray.train.report(metrics),
        device=device,
        world=world,
    )


def multi_worker_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable that drives a Ray Train TorchTrainer of N workers."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": config, "settings": settings},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            # Deterministic per trial: a restarted trial finds its own Train state again.
            name=f"train-{trial_id}",
            storage_path=os.path.join(settings.run_dir, "train"),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
            failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]
                max_failures=settings.max_failures, controller_failure_limit=1
            ),
        ),
    )
    trainer.fit()
