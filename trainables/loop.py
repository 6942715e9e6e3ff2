"""The training loop every trial runs, on one worker or on each of N DDP workers.

`run_trial` reads top to bottom: evaluate at step 0 (or continue from a checkpoint),
then step, evaluate every `eval_every` steps, report, checkpoint, until the judge ends
the trial (target reached, budget exhausted, diverged or stalled: trainables.parts.judge).
`TrainingRun` composes the parts, each in its own module with one job:

- the step strategy (trainables.steps): one process, DDP workers, or workers taking local
  steps whose parameters are averaged every `sync_period` steps (local SGD), micro-batches;
  a report's `syncs` counts the workers' synchronisations so far;
- the batches (trainables.parts.batches) from the trial's random streams (trainables.parts.streams);
- the optimiser (trainables.parts.optimizers), the lr schedule and the batch-size schedule
  (trainables.parts.schedule: under batch_step the batch size grows at milestones in
  examples; a report's `examples` is the sum of its steps' batch sizes, `batch_size_now`
  its step's batch size), or the adaptive batch size (trainables.parts.adaptive_batch:
  after each measured step, the batch size of the next ones from the measured noise);
- the noise meter (trainables.measure.noise_meter: B_simple every `noise_every` steps, B_noise
  and ε_max every `curvature_every` steps by trainables.measure.curvature);
- the evaluator (trainables.parts.evaluator: loss, workload metrics, target value);
- the checkpoints (trainables.parts.checkpointing): every `checkpoint_every` evaluations the
  report carries the run's whole state, so a trial restarted after a worker or driver
  failure continues from there and trains on exactly the batches it would have seen.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from trainables import keys
from trainables.errors import TrialInputError
from trainables.measure.curvature import CurvatureProbe
from trainables.measure.noise_capture import grad_sq_norm
from trainables.measure.noise_meter import NoiseMeter
from trainables.parts.adaptive_batch import AdaptiveBatch
from trainables.parts.checkpointing import Checkpoints, checkpoint_due
from trainables.parts.data_sources import batch_source
from trainables.parts.evaluator import Evaluator
from trainables.parts.forward import Forward, autocast_for
from trainables.parts.judge import Judge
from trainables.parts.optimizers import make_optimizer
from trainables.parts.schedule import BatchSchedule, LrSchedule
from trainables.parts.streams import (
    HESSIAN_STREAM,
    TORCH_STREAM,
    seeded_generator,
    stream_seed,
    training_batch_generator,
)
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.steps import NOT_MEASURED, step_strategy
from trainables.workload import Workload, build_workload

Report = Callable[[dict[str, Any]], None]


class TrainingRun:
    """One trial's training: its parts, one step, one evaluation, its whole state."""

    def __init__(
        self,
        settings: TrialSettings,
        hp: Hyperparameters,
        device: torch.device,
        world: World,
        workload: Workload | None = None,
    ) -> None:
        if hp.batch_size % world.size:
            raise TrialInputError(
                f"batch_size {hp.batch_size} is not divisible by {world.size} workers"
            )
        self.settings, self.hp, self.device, self.world = settings, hp, device, world
        self.workload = workload or build_workload(
            settings.workload, settings.workload_args, seed=hp.seed
        )
        self.model = self.workload.model.to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        loss_fn = self.workload.loss
        forward = Forward(
            self.model, self.params, loss_fn, autocast_for(settings.precision, device)
        )
        self.strategy = step_strategy(
            forward,
            world,
            device,
            hp.batch_size,
            settings.micro_batches,
            settings.max_micro_batch,
            settings.noise_method,
            settings.per_example_rows,
            loose_check=settings.precision == "bf16",
            sync_period=settings.sync_period,
            sync_warmup_steps=settings.sync_warmup_steps,
        )
        if self.strategy.local_steps and settings.curvature_every > 0:
            raise TrialInputError(
                "curvature needs the global gradient at weights shared by every worker: "
                "not measured under local SGD (sync period > 1)"
            )
        self.optimizer = make_optimizer(settings.optimizer, self.params, hp)
        self.max_steps = settings.max_steps_for(hp.batch_size)
        horizon = settings.horizon_steps or self.max_steps
        self.schedule = LrSchedule(
            hp.lr,
            hp.warmup_steps,
            hp.schedule,
            settings.final_lr_fraction,
            horizon,
            settings.decay_factor,
            settings.milestones,
        )
        # The batch size of each step (B₀ throughout but under batch_step), and the
        # examples consumed so far: the sum of the steps' batch sizes.
        self.batch_schedule = BatchSchedule.for_trial(
            hp.schedule, hp.batch_size, settings.decay_factor, settings.milestones, horizon
        )
        # Or, with an adaptive rule, the batch size decided after the last measured step.
        self.adaptive = AdaptiveBatch.for_trial(
            settings.adaptive_rule,
            hp.batch_size,
            settings.adaptive_max_batch_size,
            settings.adaptive_eta,
            settings.adaptive_multiple,
            shares=world.size if self.strategy.local_steps else 1,
            min_measurements=settings.adaptive_min_measurements,
        )
        # Local SGD decides at synchronisations: whether a step measured since the last.
        self.undecided = False
        self.batch_size, self.examples = hp.batch_size, 0
        # The steps since the last evaluation (after `window_step`, `window_examples`
        # consumed by then): their batch sizes, for the examples at an interpolated
        # crossing of an adaptive trial's batch sizes.
        self.window_step, self.window_examples = 0, 0
        self.window_sizes: list[int] = []
        train_data = self.workload.train_data
        self.batches = batch_source(
            train_data,
            hp.batch_size,
            training_batch_generator(hp.seed, hp.batch_size),
            world,
            device,
            settings.loader_workers,
            settings.pin_memory,
            settings.prefetch_factor,
        )
        # The Hessian batches have their own random stream (the same on every worker), so
        # measuring curvature does not shift the training batches; a streaming dataset
        # is read again by a second reader of its own. They stay at B₀ under batch_step:
        # the Hessian's batch is a sample of its own, its size in no estimate (the two
        # batch sizes of the forms are the step's, from the step strategy).
        hessian_batches = batch_source(
            train_data,
            hp.batch_size,
            seeded_generator(hp.seed, hp.batch_size, HESSIAN_STREAM),
            world,
            device,
        )
        self.curvature = CurvatureProbe(forward, hessian_batches, world.size)
        self.meter = NoiseMeter(settings.noise_every, settings.curvature_every, settings.noise_ema)
        self.evaluator = Evaluator(
            self.workload,
            self.model,
            settings.target_metric,
            hp.seed,
            world,
            device,
            settings.eval_max_examples,
            settings.eval_batch_size,
        )
        self.judge = Judge(
            settings.target,
            self.max_steps,
            divergence_factor=settings.divergence_factor,
            patience_steps=settings.patience_steps_for(hp.batch_size),
            min_delta=settings.min_delta,
            warmup_steps=hp.warmup_steps,
            max_examples=settings.max_examples,
        )
        # What the trial trains with beyond its config, said in every report.
        self.recipe = {
            keys.WEIGHT_DECAY: hp.weight_decay,
            keys.BETA2: hp.beta2 if settings.optimizer == "adamw" else math.nan,
            keys.SCHEDULE: hp.schedule,
        }
        self.skips_nonfinite = settings.precision == "bf16"  # such a step is skipped
        self.skipped_steps = 0
        self.wall_before = 0.0  # wall time spent before a restart (the work lost not counted)
        self.started = time.perf_counter()

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def start(self) -> dict[str, Any]:
        """The step-0 report, on a fresh trial. Dropout and augmentation drawn in `loss`
        follow the trial, not the order in which a reused actor ran trials before it; the
        same stream on every worker: their evaluations, and so their decisions, must not
        differ."""
        torch.manual_seed(stream_seed(self.hp.seed, self.hp.batch_size, TORCH_STREAM))
        return self.evaluate(0)

    def use_batch_size(self, batch_size: int) -> None:
        """Draw and compute global batches of `batch_size` from now on (batch_step): the
        same random stream draws more examples a step, the step strategy splits them
        into micro-batches and over workers, and measures the noise scale at that size."""
        if batch_size != self.batch_size:
            self.strategy.resize(batch_size)
            self.batches.resize(batch_size)
            self.batch_size = batch_size

    def next_batch_size(self) -> int:
        """The batch size of the next step: the adaptive rule's last decision, or the one
        the examples consumed so far give (B₀ but under batch_step)."""
        if self.adaptive is not None:
            return self.adaptive.decided
        return self.batch_schedule.batch_size(self.examples)

    def train_step(self, step: int) -> None:
        """One optimisation step, at the batch size `next_batch_size` gives, then the
        workers synchronised where due (trainables.steps: `after_step`). A measured step
        decides the adaptive batch size of the steps after it; under local SGD the first
        synchronisation after a measured step does (its workers step apart until then)."""
        measure = self.strategy.can_measure and self.meter.measures_norms(step)
        taken = self.optimise(step, measure)
        synced = self.strategy.after_step(step, evaluates=self.evaluates_at(step))
        if self.adaptive is None:
            return
        if not self.strategy.local_steps:
            if measure and taken:
                self.decide_batch_size(self.adaptive)
            return
        # A step due to measure counts even where this worker skipped it (bf16): the
        # workers agree on when to decide without a collective. An evaluation step
        # synchronises, so no decision is pending at a checkpoint.
        self.undecided = self.undecided or measure
        if synced and self.undecided:
            self.decide_batch_size(self.adaptive)
            self.undecided = False

    def optimise(self, step: int, measure: bool) -> bool:
        """The optimiser's `step` (measuring the norms where `measure`); False where a
        non-finite bf16 gradient skipped it (its examples count as consumed)."""
        self.use_batch_size(self.next_batch_size())
        self.schedule.apply(self.optimizer, step)
        self.optimizer.zero_grad(set_to_none=True)
        # Curvature steps measure the norms too (same step, same weights).
        curvature = measure and self.meter.measures_curvature(step)
        captured = self.strategy.backward(self.batches.next(), measure, keep_grads=curvature)
        self.examples += self.batch_size
        if self.adaptive is not None:
            self.window_sizes.append(self.batch_size)
        self.evaluator.add_train_loss(captured.loss)
        if self.skips_nonfinite and not math.isfinite(float(grad_sq_norm(self.params))):
            self.skipped_steps += 1
            return False
        if captured.pair is not None and captured.small_grads is not None:
            # Every worker gets here on the same steps (the skip above is decided on the
            # all-reduced gradient), as the all-reduce inside requires.
            self.meter.add_curvature(self.curvature.measure(captured.pair, captured.small_grads))
        self.optimizer.step()
        if captured.pair is not None:
            self.meter.add_norms(captured.pair)
        return True

    def decide_batch_size(self, adaptive: AdaptiveBatch) -> None:
        """The adaptive batch size of the next steps, from the smoothed |G|² and tr Σ.

        On DDP each worker has folded its own share's norms into its own averages since
        the last merge (`DataParallel.merge_worker_averages`). They are made one first:
        one all-reduce of two numbers, on every worker at this step (whether a step is
        measured, or skipped, is decided alike everywhere), so that every worker holds
        the same averages, bit for bit, and decides the same size. Merging before the
        evaluation changes nothing at it (up to rounding): the averages are linear in the
        norms, with the same weights on every worker. One process: no merge. Local SGD
        merges its workers' averages of their own shares alike, at a synchronisation."""
        self.strategy.merge_worker_averages(self.meter)
        ema = self.meter.b_simple
        adaptive.decide(self.batch_size, ema.signal, ema.noise, ema.count)

    def noise_method(self) -> str:
        """What measures the noise scale (trainables.steps), "none" where nothing does.
        Curvature steps measure it too, by micro-batches (they need the small batches'
        gradient vectors): with curvature only, that is the method."""
        if self.settings.noise_every > 0:
            return self.strategy.method
        if self.settings.curvature_every > 0:
            return self.strategy.curvature_method
        return NOT_MEASURED

    def evaluates_at(self, step: int) -> bool:
        """Every `eval_every` steps, and at the end of the budget: its steps, or its
        examples where the batch size grew (at B₀ the step budget ends first)."""
        return (
            step % self.settings.eval_every == 0
            or step >= self.max_steps
            or self.judge.examples_spent(self.examples)
        )

    def checkpoint_due(self, step: int) -> bool:
        return checkpoint_due(step, self.settings.checkpoint_every, self.settings.eval_every)

    def evaluate(self, step: int) -> dict[str, Any]:
        """Evaluate, judge and return the report of `step`. The workers' noise-scale
        averages are made one first: reports and checkpoints follow evaluations."""
        self.strategy.merge_worker_averages(self.meter)
        evaluation = self.evaluator.evaluate()
        verdict = self.judge.judge(step, evaluation.loss, evaluation.target_value, self.examples)
        reached = verdict.status == keys.REACHED
        examples = self.examples
        report = {
            keys.STEP: step,
            keys.EXAMPLES: examples,
            keys.BATCH_SIZE_NOW: self.batch_size,
            keys.SYNCS: self.strategy.syncs,
            keys.LOSS: evaluation.loss,
            keys.LR: self.schedule.lr(max(step, 1)),
            **self.meter.report(),
            keys.NOISE_METHOD: self.noise_method(),
            keys.TARGET_VALUE: evaluation.target_value,
            keys.TRIAL_STATUS: verdict.status,
            keys.STEPS_TO_TARGET: step if reached else math.nan,
            keys.EXAMPLES_TO_TARGET: examples if reached else math.nan,
            keys.STEPS_TO_TARGET_INTERP: verdict.steps_interp,
            # The examples consumed by the interpolated crossing (B₀ times it at one size).
            keys.EXAMPLES_TO_TARGET_INTERP: self.examples_at(verdict.steps_interp),
            keys.REASON: verdict.reason,
            keys.WALL_S: self.wall_s(),
            **self.recipe,
            **evaluation.metrics,
        }
        self.window_step, self.window_examples = step, examples
        self.window_sizes = []
        return report

    def examples_at(self, step: float) -> float:
        """The examples consumed by (fractional) `step`, one of the steps since the last
        evaluation: the sum of the steps' batch sizes, a fractional step taking that part
        of its batch (`BatchSchedule.examples_at` where the sizes follow from the examples:
        B₀ throughout, or batch_step's)."""
        if self.adaptive is None:
            return self.batch_schedule.examples_at(step)
        if not math.isfinite(step):
            return math.nan
        examples = float(self.window_examples)
        for i, size in enumerate(self.window_sizes):
            examples += min(max(step - self.window_step - i, 0.0), 1.0) * size
        return examples

    def checkpoint_state(self, step: int) -> Callable[[], dict[str, Any]]:
        """`state_dict(step)` for `Checkpoints.report`, which calls it where the checkpoint
        is written (rank 0 only): every worker first hands in its own optimiser state
        where the workers' differ (local SGD's momentum)."""
        own = self.strategy.gather_own_states(self.optimizer.state_dict())
        return functools.partial(self.state_dict, step, own)

    def state_dict(self, step: int, worker_optimizers: list[Any] | None = None) -> dict[str, Any]:
        """Everything the loop needs to continue after `step` as if never stopped; with
        `worker_optimizers`, each worker's own optimiser state, in rank order.

        Reads the state only (the samplers' positions are copied, not advanced). The
        training-loss window is empty here: checkpoints are taken right after an
        evaluation, which empties it. The weights are every worker's: local SGD averages
        them before an evaluation.
        """
        state: dict[str, Any] = {
            "step": step,
            "examples": self.examples,
            "batch_size_now": self.batch_size,
            "syncs": self.strategy.syncs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.batches.state_dict(),
            "hessian_sampler": self.curvature.hessian_batches.state_dict(),
            **self.meter.state_dict(),
            "skipped_steps": self.skipped_steps,
            "torch_rng": torch.get_rng_state(),
            "judge": self.judge.state_dict(),
            "wall_s": self.wall_s(),
        }
        if self.adaptive is not None:
            state["adaptive_batch"] = self.adaptive.state_dict()
        if worker_optimizers is not None:
            state["worker_optimizers"] = worker_optimizers
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Continue from `state_dict(step)`; returns that step."""
        step = int(state["step"])
        # A checkpoint from before batch-size schedules: its examples follow from its step.
        self.examples = int(state.get("examples", self.batch_schedule.examples_at(step)))
        self.use_batch_size(int(state.get("batch_size_now", self.hp.batch_size)))
        self.window_step, self.window_examples = step, self.examples
        if self.adaptive is not None:
            # The size decided after the checkpoint's step, which it did not take yet.
            decided = {"decided": self.batch_size}
            self.adaptive.load_state_dict(state.get("adaptive_batch", decided))
        # A checkpoint from before `syncs`: a DDP trial's were its steps.
        self.strategy.restart(step, int(state.get("syncs", step if self.world.size > 1 else 0)))
        self.model.load_state_dict(state["model"])
        own = state.get("worker_optimizers")
        self.optimizer.load_state_dict(state["optimizer"] if own is None else own[self.world.rank])
        self.batches.load_state_dict(state["sampler"])
        self.curvature.hessian_batches.load_state_dict(state["hessian_sampler"])
        self.meter.load_state_dict(dict(state))
        self.skipped_steps = int(state["skipped_steps"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if "judge" in state:
            self.judge.load_state_dict(state["judge"])
        else:  # a checkpoint from before the judge: no record history, so no stall rule
            self.judge.initial_loss = float(state.get("initial_loss", math.nan))
            self.judge.patience_steps = 0
        self.wall_before = float(state["wall_s"])
        return step


def run_trial(
    settings: TrialSettings,
    hp: Hyperparameters,
    report: Report,
    device: torch.device | None = None,
    world: World | None = None,
    workload: Workload | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Train one configuration until it ends (trainables.parts.judge); report every evaluation.

    Returns the last report. Every worker of a DDP trial calls this and takes the same
    decisions, since evaluations run on identical weights. With `checkpoints`, a trial
    that has one continues from it (its reports up to there were made before), and every
    `checkpoint_every`-th evaluation that does not end the trial is reported together
    with a checkpoint.
    """
    run = TrainingRun(settings, hp, device or torch.device("cpu"), world or World(), workload)
    saved = checkpoints.restore() if checkpoints is not None else None
    if saved is None:
        step, last = 0, run.start()
        report(last)
    else:
        step = run.load_state_dict(saved)
        last = {keys.STEP: step, keys.TRIAL_STATUS: keys.RUNNING}
    while last[keys.TRIAL_STATUS] == keys.RUNNING:
        step += 1
        run.train_step(step)
        if not run.evaluates_at(step):
            continue
        last = run.evaluate(step)
        if (
            checkpoints is not None
            and last[keys.TRIAL_STATUS] == keys.RUNNING
            and run.checkpoint_due(step)
        ):
            checkpoints.report(last, run.checkpoint_state(step))
        else:
            report(last)
    return last
