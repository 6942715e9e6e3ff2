"""Local SGD for multi-worker trials (`sync: {period: H}`, issue 15 part 3): the spec
section, the averages against their closed form on two gloo workers, the
synchronisations counted, a resumed local-SGD trial, the adaptive local batch (Lau et al.
2024) decided at synchronisations, and H = 4 reaching the target in about the steps of
DDP with a quarter of its synchronisations."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from _helpers import run_gloo_workers, spec_problems, spec_trial_settings
from test_fault_tolerance import LINREG as FT_LINREG
from test_fault_tolerance import MemoryCheckpoints, comparable, crash_sweep

from trainables import keys
from trainables.loop import TrainingRun, run_trial
from trainables.parts.adaptive_batch import AdaptiveBatch
from trainables.parts.checkpointing import load_state, save_state
from trainables.parts.forward import Forward
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.steps import LocalSGD, OneProcess
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings
from tuner.runtime import runner
from tuner.theory.adaptive_batch import grown_batch_size, norm_test_batch, norm_test_expected

LINREG = {"dim": 16, "noise": 0.5, "n_train": 8192}

# --- the spec --------------------------------------------------------------------------------


def spec_data(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "local-sgd",
        "workload": "linear_regression",
        "target": {"metric": "loss", "value": 0.2},
        "budget": {"max_steps": 100},
        "space": {"batch_size": [16, 64], "lr": [0.1]},
        "resources": {"workers_per_trial": 2},
        "sync": {"period": 4},
    }
    return {**data, **sections}


def test_the_section_defaults_to_ddp_and_is_told_to_the_trials() -> None:
    plain = parse_spec({k: v for k, v in spec_data().items() if k != "sync"})
    assert plain.sync.model_dump() == {"period": 1, "warmup_steps": 0}
    told = trial_settings(plain, Path("."))
    assert (told.sync_period, told.sync_warmup_steps) == (1, 0)
    spec = parse_spec(spec_data(sync={"period": 8, "warmup_steps": 20}))
    told = trial_settings(spec, Path("."))
    # The executors hand TrialSettings to every Ray Train worker whole.
    assert (told.sync_period, told.sync_warmup_steps) == (8, 20)
    assert parse_spec(spec.to_yaml_dict()) == spec
    # Each worker's share is measured as one process does: per_example with accumulation
    # is no DDP hook's to refuse.
    parse_spec(
        spec_data(
            resources={"workers_per_trial": 2, "max_micro_batch": 4},
            measure={"method": "per_example"},
        )
    )


@pytest.mark.parametrize(
    ("sections", "field", "text"),
    [
        ({"resources": {"workers_per_trial": 1}}, "sync.period", "workers_per_trial > 1"),
        ({"sync": {"period": 1, "warmup_steps": 5}}, "sync.warmup_steps", "set sync.period > 1"),
        ({"measure": {"curvature_every": 10}}, "measure.curvature_every", "set it to 0"),
        (
            {
                "space": {"batch_size": [2, 64], "lr": [0.1]},
                "adaptive_batch": {"rule": "norm_test", "max_batch_size": 256},
            },
            "space.batch_size",
            "batch size(s) 2 over 2 workers",
        ),
        ({"sync": {"period": 0}}, "sync.period", "greater than or equal to 1"),
        ({"sync": {"warmup_steps": -1}}, "sync.warmup_steps", "greater than or equal to 0"),
        ({"sync": {"every": 4}}, "sync.every", "unknown key"),
    ],
)
def test_the_spec_refuses_what_local_sgd_cannot_do(
    sections: dict[str, Any], field: str, text: str
) -> None:
    lines = spec_problems(spec_data(**sections))
    hits = [line for line in lines if line.startswith(f"{field}: ")]
    assert hits and any(text in line for line in hits), lines


def test_the_adaptive_rule_applies_to_the_share_that_takes_a_step() -> None:
    """N × rule(B/N): the norm test at the share b = B/2 (Lau et al. 2024), B₀ granularity."""
    local = AdaptiveBatch("norm_test", 16, 1024, eta=0.5, shares=2)
    # 2·tr Σ/(η²(|G|² + tr Σ/16)) = 2·100/(0.25·7.25) = 110.3 at B 32: rounded up to 7·16.
    assert local.decide(32, 1.0, 100.0) == grown_batch_size(
        32, 2 * norm_test_expected(100.0, 16, 0.5), 1024, 16
    )
    assert local.decided == 112
    assert AdaptiveBatch("noise_scale", 16, 1024, shares=2).decide(16, 1.0, 40.0) == 80
    with pytest.raises(ValueError, match="shares"):
        AdaptiveBatch("noise_scale", 15, 1024, shares=2)


# --- two gloo workers ---------------------------------------------------------------------


def _init(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = f"file://{tempfile.gettempdir()}/noisetune-test-local-sgd-{port}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)


def _trials_worker(rank: int, world: int, port: int, jobs: list[Any], tmp: str, queue: Any) -> None:
    """Run each (settings, hp, checkpoint directory or None) in turn: every report, and
    where each checkpoint was saved (tensors go through files, not the queue: a tensor
    put on it is shared with a process that may have exited by then)."""
    import torch.distributed as dist

    _init(rank, world, port)
    try:
        out = []
        for i, (told, hp, start) in enumerate(jobs):
            directory = Path(tmp) / f"job{i}-rank{rank}"
            directory.mkdir(parents=True)
            state = None if start is None else load_state(start)
            store = MemoryCheckpoints(directory, start=state)
            reports: list[dict[str, Any]] = []
            run_trial(told, hp, reports.append, world=World(rank, world), checkpoints=store)
            every = sorted(reports + store.reports, key=lambda r: r[keys.STEP])
            saved = [directory / f"checkpoint_{k}" for k in range(len(store.saved))]
            out.append(([comparable(r) for r in every], saved))
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def run_trials(jobs: list[Any], tmp_path: Path) -> list[Any]:
    """Each job's (reports, checkpoint directories) on rank 0, the reports checked equal
    on rank 1 (both workers take every decision alike)."""
    out = dict(run_gloo_workers(_trials_worker, 2, jobs, str(tmp_path)))
    for (rows0, _), (rows1, _) in zip(out[0], out[1], strict=True):
        assert rows0 == rows1
    return list(out[0])


def settings(**overrides: Any) -> TrialSettings:
    base: dict[str, Any] = {
        "workload_args": LINREG,
        "target_value": 0.0,
        "max_steps": 30,
        "eval_every": 6,
        "noise_every": 2,
        "patience_steps": 0,
        "checkpoint_every": 0,
        "workers_per_trial": 2,
    }
    return spec_trial_settings(**{**base, **overrides})


def expected_syncs(step: int, period: int, warmup: int, eval_every: int) -> int:
    """warmup_steps gradient all-reduces, an average at every later multiple of H, and
    one more at every later evaluation between two."""
    later = range(warmup + 1, step + 1)
    averages = sum(s % period == 0 for s in later)
    extra = sum(s % eval_every == 0 and s % period != 0 for s in later)
    return min(step, warmup) + averages + extra


def test_period_1_is_ddp_and_counts_a_sync_every_step(tmp_path: Path) -> None:
    """Period 1 (the default): DDP, one all-reduce a step; the same losses as one process
    on the same global batches; a local-SGD trial's syncs follow the closed form."""
    hp = Hyperparameters(32, 0.1, 0.0, 0)
    ddp, local = settings(), settings(sync_period=4, sync_warmup_steps=3)
    (ddp_rows, _), (local_rows, _) = run_trials([(ddp, hp, None), (local, hp, None)], tmp_path)
    one: list[dict[str, Any]] = []
    run_trial(settings(), hp, one.append)
    assert [r[keys.SYNCS] for r in one] == [0] * len(one)
    assert [r[keys.SYNCS] for r in ddp_rows] == [r[keys.STEP] for r in ddp_rows]
    assert [r[keys.LOSS] for r in ddp_rows] == pytest.approx([r[keys.LOSS] for r in one], rel=1e-4)
    # Warmup 3, H 4, evaluations every 6: 3 + (4, 8, ...) + (6, 18, 30).
    steps = [r[keys.STEP] for r in local_rows]
    assert steps == [0, 6, 12, 18, 24, 30]
    assert [r[keys.SYNCS] for r in local_rows] == [expected_syncs(s, 4, 3, 6) for s in steps]
    assert local_rows[-1][keys.SYNCS] == 3 + 7 + 3 < 30


def test_one_worker_takes_plain_steps_and_local_sgd_needs_two_and_a_period() -> None:
    told = settings(sync_period=4)
    run = TrainingRun(told, Hyperparameters(32, 0.1, 0.0, 0), torch.device("cpu"), World())
    assert isinstance(run.strategy, OneProcess)  # nothing to average
    model = linear_model()
    forward = Forward(model, list(model.parameters()), mse, contextlib.nullcontext)
    with pytest.raises(ValueError, match="local SGD needs period > 1"):
        LocalSGD(forward, World(0, 2), torch.device("cpu"), BATCH, 1, 0, 2)


# --- the closed form of the averages --------------------------------------------------------

BATCH, STEPS, LR = 8, 9, 0.1


def linear_model() -> torch.nn.Linear:
    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.25, 1.0, 0.125]]))
        model.bias.fill_(0.3)
    return model


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    return [
        (torch.randn(BATCH, 4, generator=generator), torch.randn(BATCH, 1, generator=generator))
        for _ in range(STEPS)
    ]


def share(batch: tuple[torch.Tensor, torch.Tensor], rank: int) -> tuple[torch.Tensor, ...]:
    half = BATCH // 2
    return tuple(t[rank * half : (rank + 1) * half] for t in batch)


def mse(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _averaging_worker(
    rank: int, world: int, port: int, period: int, warmup: int, queue: Any
) -> None:
    import torch.distributed as dist

    _init(rank, world, port)
    try:
        model = linear_model()
        params = list(model.parameters())
        forward = Forward(model, params, mse, contextlib.nullcontext)
        strategy = LocalSGD(
            forward, World(rank, world), torch.device("cpu"), BATCH, period, warmup, 2
        )
        optimizer = torch.optim.SGD(params, lr=LR, momentum=0.0)
        rows = []
        for step, batch in enumerate(global_batches(), start=1):
            optimizer.zero_grad(set_to_none=True)
            strategy.backward(share(batch, rank), measure=False)
            optimizer.step()
            synced = strategy.after_step(step, evaluates=False)
            flat = torch.cat([p.detach().reshape(-1) for p in params]).tolist()
            rows.append((synced, strategy.syncs, flat))
        queue.put((rank, rows))
    finally:
        dist.destroy_process_group()


def sgd_step(w: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One plain SGD step on the mean squared error from the flat (weight, bias) `w`."""
    return w - LR * mse_grad(w, batch)


def mse_grad(w: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """∇ mean((xᵀa + c − y)²) = 2/n Σ r·(x, 1), r the residuals, w = (a, c)."""
    x, y = batch
    residual = x @ w[:4] + w[4] - y.squeeze(1)
    return 2 * torch.cat([x.T @ residual, residual.sum().reshape(1)]) / len(y)


@pytest.mark.parametrize(("period", "warmup"), [(3, 0), (4, 2)])
def test_every_average_is_the_mean_of_the_workers_independent_local_steps(
    period: int, warmup: int
) -> None:
    """Plain SGD on a linear model: the warmup steps are SGD on the global batch (the
    gradients' mean), then each worker steps on its own half alone, and at every
    multiple of H both hold the mean of their independent local runs, bit for bit alike."""
    out = dict(run_gloo_workers(_averaging_worker, 2, period, warmup))
    model = linear_model()
    w = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()]).double()
    local = [w.clone(), w.clone()]
    batches = global_batches()
    for step, batch in enumerate(batches, start=1):
        shares = [tuple(t.double() for t in share(batch, r)) for r in (0, 1)]
        if step <= warmup:
            grad = (mse_grad(local[0], shares[0]) + mse_grad(local[0], shares[1])) / 2
            local = [local[0] - LR * grad] * 2
        else:
            local = [sgd_step(local[r], shares[r]) for r in (0, 1)]
        synced = step <= warmup or step % period == 0
        if synced and step > warmup:
            local = [(local[0] + local[1]) / 2] * 2
        rows = [out[r][step - 1] for r in (0, 1)]
        for rank in (0, 1):
            assert rows[rank][0] == synced
            got = torch.tensor(rows[rank][2], dtype=torch.float64)
            torch.testing.assert_close(got, local[rank], rtol=1e-6, atol=1e-6)
        if synced:
            assert rows[0][2] == rows[1][2]  # float32 values, bit for bit
        else:
            assert all(abs(a - b) > 1e-6 for a, b in zip(rows[0][2], rows[1][2], strict=True))
        assert rows[0][1] == rows[1][1] == expected_syncs(step, period, warmup, 10**9)


# --- resume ----------------------------------------------------------------------------------


def test_a_resumed_local_sgd_trial_continues_as_if_never_stopped(tmp_path: Path) -> None:
    """Momentum 0.9: each worker's momentum is its own between averages. A checkpoint
    holds every worker's, each worker continues from its own, and the trial reports as
    the uninterrupted one; an old checkpoint (rank 0's state only) still loads."""
    told = settings(sync_period=4, checkpoint_every=1, max_steps=36)
    hp = Hyperparameters(32, 0.05, 0.9, 0)
    [(uninterrupted, saved)] = run_trials([(told, hp, None)], tmp_path / "first")
    # Step 18, not a multiple of 4: the evaluation averaged the weights, not the momenta.
    checkpoint = next(d for d in saved if load_state(d)["step"] == 18)
    start = load_state(checkpoint)
    momenta = [own["state"][0]["momentum_buffer"] for own in start["worker_optimizers"]]
    assert len(momenta) == 2 and not torch.equal(momenta[0], momenta[1])
    assert start["syncs"] == expected_syncs(18, 4, 0, 6)
    old = tmp_path / "old"
    old.mkdir()
    save_state({k: v for k, v in start.items() if k != "worker_optimizers"}, old)
    [(resumed, _), (from_old, _)] = run_trials(
        [(told, hp, checkpoint), (told, hp, old)], tmp_path / "again"
    )
    assert resumed == [r for r in uninterrupted if r[keys.STEP] > 18]
    assert [r[keys.STEP] for r in from_old] == [r[keys.STEP] for r in resumed]
    assert from_old != resumed  # rank 1 continued from rank 0's momentum


# --- the adaptive local batch ---------------------------------------------------------------

B0, MAX, PERIOD = 16, 1024, 4


def _adaptive_worker(rank: int, world: int, port: int, queue: Any) -> None:
    """The loop of run_trial, driven step by step: the batch size decided after each."""
    import torch.distributed as dist

    _init(rank, world, port)
    try:
        told = adaptive_settings()
        run = TrainingRun(
            told, Hyperparameters(B0, 0.1, 0.0, 0), torch.device("cpu"), World(rank, 2)
        )
        reports, decided = [comparable(run.start())], []
        for step in range(1, run.max_steps + 1):
            run.train_step(step)
            assert run.adaptive is not None
            decided.append(run.adaptive.decided)
            if run.evaluates_at(step):
                reports.append(comparable(run.evaluate(step)))
        queue.put((rank, reports, decided))
    finally:
        dist.destroy_process_group()


def adaptive_settings() -> TrialSettings:
    return settings(
        max_steps=120,
        eval_every=8,
        noise_every=3,
        sync_period=PERIOD,
        adaptive_rule="norm_test",
        adaptive_eta=0.5,
        adaptive_max_batch_size=MAX,
        adaptive_min_measurements=0,
    )


def test_two_workers_decide_the_local_batch_alike_at_synchronisations_only() -> None:
    """Measured every 3 steps, averaged every 4, evaluated every 8: the size changes only
    after an average, the same on both workers, and at an evaluation it is 2 × the norm
    test at the share B/2 on the merged averages that evaluation reports."""
    out = {
        rank: (reports, decided) for rank, reports, decided in run_gloo_workers(_adaptive_worker, 2)
    }
    assert out[0] == out[1]
    reports, decided = out[0]
    sizes = [B0, *decided]
    changed = [step for step in range(1, len(sizes)) if sizes[step] != sizes[step - 1]]
    assert len(changed) >= 2 and all(step % PERIOD == 0 for step in changed)
    assert any(step % 8 for step in changed)  # decided at an average between evaluations
    for report in reports[1:]:
        step, size = report[keys.STEP], report[keys.BATCH_SIZE_NOW]
        assert size == sizes[step - 1]  # the size its step took
        local = norm_test_batch(report[keys.TRACE_SIGMA], report[keys.G2], size // 2, 0.5)
        allowed = {grown_batch_size(size, 2 * local * (1 + d), MAX, B0) for d in (-1e-9, 1e-9)}
        assert sizes[step] in allowed
    assert all(r[keys.EXAMPLES] % B0 == 0 for r in reports)


# --- steps to the target --------------------------------------------------------------------


def test_local_sgd_reaches_the_target_in_comparable_steps_with_fewer_syncs(
    tmp_path: Path,
) -> None:
    """Linear regression, B 32, lr 0.2, evaluated every 8 steps, 2 workers, seed 0. By
    hand (bench/local_sgd.py, seeds 0–2): H = 4 took 0.9996–1.002 times the steps of H = 1
    (DDP) to loss 0.2, with a quarter of its synchronisations."""
    told = settings(target_value=0.2, max_steps=400, eval_every=8)
    hp = Hyperparameters(32, 0.2, 0.0, 0)
    ddp, local = (
        rows[-1]
        for rows, _ in run_trials(
            [(told, hp, None), (dataclasses.replace(told, sync_period=4), hp, None)],
            tmp_path,
        )
    )
    for last in (ddp, local):
        assert last[keys.TRIAL_STATUS] == keys.REACHED
    assert local[keys.STEPS_TO_TARGET_INTERP] <= 1.5 * ddp[keys.STEPS_TO_TARGET_INTERP]
    assert local[keys.SYNCS] == local[keys.STEP] // 4
    assert local[keys.SYNCS] <= 0.3 * ddp[keys.SYNCS]


# --- under Ray Train: a worker dies ----------------------------------------------------------


@pytest.mark.ray
def test_a_dead_local_sgd_worker_restarts_the_trial_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-worker local-SGD trial (H = 5) under Ray Train, whose rank 0 dies at step 120:
    Train restarts both workers from the checkpoint at step 100 (every worker's optimiser
    state in it), and the trial's reports, syncs included, are those of the same trial
    run uninterrupted on two gloo workers here."""
    run_dir, trials, runs = crash_sweep(
        tmp_path, 1, {"workers_per_trial": 2, "cpus_per_worker": 1}, sync={"period": 5}
    )
    assert [len(r) for r in runs.values()] == [1]  # Train restarted the workers, not Tune
    monkeypatch.syspath_prepend(str(tmp_path))  # the spec names the crashing workload
    told = dataclasses.replace(
        trial_settings(runner.load_run_spec(run_dir), run_dir),
        workload="linear_regression",
        workload_args=FT_LINREG,
    )
    assert told.sync_period == 5
    ((uninterrupted, _),) = run_trials([(told, Hyperparameters(16, 0.1, 0.0, 0), None)], tmp_path)
    (row,) = (r for _, r in trials.iterrows())
    assert row["steps"] == uninterrupted[-1][keys.STEP]
    assert row["final_loss"] == pytest.approx(uninterrupted[-1][keys.LOSS], rel=1e-6)
    curves = pd.read_parquet(run_dir / "results" / "curves.parquet")
    by_step = {r[keys.STEP]: r for r in uninterrupted}
    assert [by_step[s][keys.SYNCS] for s in curves[keys.STEP]] == curves[keys.SYNCS].tolist()
    assert curves[keys.SYNCS].tolist() == [s // 5 for s in curves[keys.STEP]]  # eval every 10
    assert curves[keys.LOSS].tolist() == pytest.approx(
        [by_step[s][keys.LOSS] for s in curves[keys.STEP]], rel=1e-6
    )
