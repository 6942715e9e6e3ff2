"""The two ways a trial runs under Ray Tune; both run `loop.run_trial`.

- `single_worker_trial`: the loop runs directly in the Tune actor; with actor reuse
  one process runs trial after trial, the workload built once (BENCHMARKS.md).
- `multi_worker_trial`: the Tune trial is a Ray Train driver that starts a TorchTrainer
  with N workers (Train V2 inside Tune, DESIGN.md §4); rank 0's reports reach Tune
  through TuneReportCallback.

Both checkpoint the trial every `checkpoint_every` evaluations and continue from the
latest checkpoint when restarted: a single-worker trial through Tune's function
checkpoints (Tune retries it up to `max_failures` times, and `Tuner.restore` gives it
back its checkpoint), a multi-worker one through Ray Train's (Train retries the worker
group up to `max_failures` times, and a Train run started again under the same name,
as a resumed sweep does, finds its checkpoints again).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from trainables.loop import run_trial
from trainables.parts.checkpointing import load_state, save_state
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import cached_workload

# A trial's Train run keeps this many of its latest checkpoints (a restart needs only
# the latest; the one before is a margin).
TRAIN_CHECKPOINTS_KEPT = 2


def _cpu_threads(settings: TrialSettings) -> int:
    return max(1, int(settings.cpus_per_worker))


class TuneCheckpoints:
    """A single-worker trial's checkpoints, as Ray Tune function checkpoints."""

    def restore(self) -> dict[str, Any] | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_state(directory)

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory(prefix="noisetune-ckpt-") as directory:
            save_state(state(), directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


class TrainCheckpoints:
    """A multi-worker trial's checkpoints, as Ray Train checkpoints written by rank 0.

    Every rank reports (Train waits for all of them); every rank restores the same
    checkpoint, so the workers start again on identical weights and samplers.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def restore(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_state(directory)

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="noisetune-ckpt-") as directory:
            save_state(state(), directory)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def single_worker_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable: one process trains, reporting through `tune.report`.

    With actor reuse one process runs many trials of the sweep: the workload is built
    once per process (`cached_workload`), each trial gets its own copy of the model.
    """
    from ray import tune

    torch.set_num_threads(_cpu_threads(settings))
    device = torch.device("cuda" if settings.gpus_per_worker > 0 else "cpu")
    hp = Hyperparameters.from_config(config, settings.fixed_hyperparameters)
    run_trial(
        settings,
        hp,
        tune.report,
        device=device,
        workload=cached_workload(settings.workload, settings.workload_args, hp.seed),
        checkpoints=TuneCheckpoints(),
    )


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
        Hyperparameters.from_config(loop_config["config"], settings.fixed_hyperparameters),
        lambda metrics: ray.train.report(metrics),
        device=device,
        world=world,
        checkpoints=TrainCheckpoints(world.rank),
    )


def train_storage_path(run_dir: str) -> str:
    """`<run_dir>/train`, where Ray Train keeps a multi-worker trial's own state; for a
    URI (s3://bucket/runs/name?endpoint_override=...) the query stays at the end."""
    if "://" not in run_dir:
        return os.path.join(run_dir, "train")
    base, sep, query = run_dir.partition("?")
    return f"{base.rstrip('/')}/train{sep}{query}"


# How long one put of the drain marker waits before checking whether Tune has stopped
# the trial; under FunctionTrainable.reset_config's 2 s wait for the thread.
_DRAIN_POLL_S = 0.5


def _wait_until_tune_took_train_reports() -> None:
    """Return once this trial's Tune main thread has taken, and passed on as a result,
    every report TuneReportCallback relayed from Ray Train.

    When this trainable returns, Tune's function wrapper posts its end-of-trial result
    (RESULT_DUPLICATE) straight into the session's result queue. Tune takes whichever it
    sees first. Without this wait, the last Train report can still be in the relay queue
    at that point, and the trial ends on the report before it.

    Relies on Ray internals, checked against 2.60: the relay is the session's
    ``_inter_actor_queue``, a FIFO ``ray.util.queue.Queue`` of size 1 that only the
    trainable's main thread reads (``_TrainSession._get_result_from_queues``), and that
    reader drops falsy items.
    """
    from ray.train._internal.session import get_session
    from ray.util.queue import Full

    session = get_session()
    relay = getattr(session, "_inter_actor_queue", None)
    if session is None or relay is None:  # not under Tune, or nothing was relayed
        return
    # The first None is accepted once the reader has taken the last report. The second
    # is accepted once the reader has taken the first None. It does that only in a later
    # read, after it has put the report into the result queue. A None is dropped unread.
    for _ in range(2):
        while True:
            try:
                relay.put(None, timeout=_DRAIN_POLL_S)
                break
            except Full:
                # Tune has stopped the trial and will not read again: either a STOP
                # decision on the last result (e.g. ASHA at max_t), or the actor is
                # being reset for reuse or torn down.
                if session.stop_event.is_set():
                    return


def multi_worker_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune function trainable that drives a Ray Train TorchTrainer of N workers."""
    import ray.train
    import ray.util
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainables.execution.process_group import LOOPBACK, FileStoreTorchConfig

    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    backend = "nccl" if use_gpu else "gloo"
    trial_id = tune.get_context().get_trial_id()
    with tempfile.TemporaryDirectory(prefix="noisetune-pg-") as rendezvous:
        # Every node of a Ray on 127.0.0.1 is this machine: its workers share this file.
        torch_config = (
            FileStoreTorchConfig(backend=backend, store_dir=rendezvous)
            if ray.util.get_node_ip_address() == LOOPBACK
            else TorchConfig(backend=backend)
        )
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"config": config, "settings": settings},
            torch_config=torch_config,
            scaling_config=ray.train.ScalingConfig(
                num_workers=settings.workers_per_trial,
                use_gpu=use_gpu,
                resources_per_worker=resources,
            ),
            run_config=ray.train.RunConfig(
                # Deterministic per trial: a restarted trial finds its own Train state again.
                name=f"train-{trial_id}",
                storage_path=train_storage_path(settings.run_dir),
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=TRAIN_CHECKPOINTS_KEPT),
                failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]
                    max_failures=settings.max_failures, controller_failure_limit=1
                ),
            ),
        )
        trainer.fit()
    # Only after a successful fit: with an error, nothing races the last report.
    _wait_until_tune_took_train_reports()
